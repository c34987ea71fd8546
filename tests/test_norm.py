"""batch_norm2d: loop references (forward and backward, training and eval), float64
gradient checks on every backend, the running-statistics update PyTorch makes,
PyTorch cross-checks, input validation."""
import itertools
import math

import numpy as np
import pytest

import reference as R
from minifcn import functional as F
from minifcn.backend import to_numpy
from minifcn.gradcheck import check_backward


def bn_loop(x, weight, bias, mean=None, var=None, eps=1e-5):
    """Forward, channel by channel with Python floats. Without mean/var: the batch's
    mean and biased variance. Returns (y, mean, var) as used."""
    n, c, h, w = x.shape
    y = np.zeros(x.shape)
    means, variances = [], []
    for ch in range(c):
        vals = [float(x[b, ch, i, j]) for b, i, j in itertools.product(range(n), range(h), range(w))]
        mu = sum(vals) / len(vals) if mean is None else float(mean[ch])
        v = sum((t - mu) ** 2 for t in vals) / len(vals) if var is None else float(var[ch])
        means.append(mu)
        variances.append(v)
        g = 1.0 if weight is None else float(weight[ch])
        beta = 0.0 if bias is None else float(bias[ch])
        for b, i, j in itertools.product(range(n), range(h), range(w)):
            y[b, ch, i, j] = g * (x[b, ch, i, j] - mu) / math.sqrt(v + eps) + beta
    return y, np.array(means), np.array(variances)


def bn_backward_loop(dy, x, weight, training, mean=None, var=None, eps=1e-5):
    """dx from the Jacobian written out entry by entry (training):
    d xhat_j / d x_i = (delta_ij - 1/M - xhat_i xhat_j / M) / sigma, one channel at a time.
    Eval: d xhat_j / d x_i = delta_ij / sigma. Returns (dx, dweight, dbias)."""
    n, c, h, w = x.shape
    dx = np.zeros(x.shape)
    dweight, dbias = np.zeros(c), np.zeros(c)
    for ch in range(c):
        pos = list(itertools.product(range(n), range(h), range(w)))
        m = len(pos)
        vals = np.array([x[(b, ch, i, j)] for b, i, j in pos])
        mu = vals.mean() if training else mean[ch]
        sigma = math.sqrt((((vals - mu) ** 2).mean() if training else var[ch]) + eps)
        xhat = (vals - mu) / sigma
        g = 1.0 if weight is None else weight[ch]
        dys = np.array([dy[(b, ch, i, j)] for b, i, j in pos])
        dbias[ch] = dys.sum()
        dweight[ch] = (dys * xhat).sum()
        for a, (b, i, j) in enumerate(pos):
            total = 0.0
            for k in range(m):
                jac = ((a == k) - 1.0 / m - xhat[a] * xhat[k] / m) / sigma if training else (a == k) / sigma
                total += g * dys[k] * jac
            dx[b, ch, i, j] = total
    return dx, dweight, dbias


SHAPES = [(2, 3, 4, 5), (3, 2, 1, 7), (1, 4, 3, 3), (5, 1, 1, 1)]


def _params(c, seed=0, affine=True):
    rng = np.random.default_rng(seed)
    if not affine:
        return None, None
    return rng.uniform(0.5, 2.0, c), rng.standard_normal(c)


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batch_norm2d_matches_loop_reference(backend, shape, training, affine):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape) * 3 + 1
    c = shape[1]
    weight, bias = _params(c, affine=affine)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 3.0, c)
    b = backend.asarray
    opt = (lambda a: None if a is None else b(a))
    y, cache = F.batch_norm2d(b(x), opt(weight), opt(bias), b(rm), b(rv), training=training, eps=1e-3)
    y_ref, mu, var = bn_loop(x, weight, bias, None if training else rm, None if training else rv, eps=1e-3)
    R.assert_close(y, y_ref, atol=1e-12, rtol=1e-10)
    R.assert_close(cache.mean, mu, atol=1e-13, rtol=1e-12)
    R.assert_close(cache.var, var, atol=1e-13, rtol=1e-12)
    assert cache.count == shape[0] * shape[2] * shape[3]
    dy = rng.standard_normal(shape)
    dx, dw, db = F.batch_norm2d_backward(b(dy), cache)
    dx_ref, dw_ref, db_ref = bn_backward_loop(dy, x, weight, training, rm, rv, eps=1e-3)
    R.assert_close(dx, dx_ref, atol=1e-11, rtol=1e-9)
    if affine:
        R.assert_close(dw, dw_ref, atol=1e-11, rtol=1e-10)
        R.assert_close(db, db_ref, atol=1e-11, rtol=1e-10)
    else:
        assert dw is None and db is None


def test_training_output_is_normalised_per_channel(backend):
    x = np.random.default_rng(2).standard_normal((3, 4, 5, 6)) * 5 - 2
    y, _ = F.batch_norm2d(backend.asarray(x), None, None, eps=1e-12)
    y = to_numpy(y)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-9)


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm2d_gradcheck(backend, training, affine):
    rng = np.random.default_rng(3)
    shape = (2, 3, 3, 2)
    weight, bias = _params(3, affine=affine)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    b = backend.asarray
    inputs = [b(rng.standard_normal(shape))] + ([b(weight), b(bias)] if affine else [None, None])

    def fwd(x, w, bb):
        return F.batch_norm2d(x, w, bb, b(rm), b(rv), training=training)

    r = check_backward(fwd, F.batch_norm2d_backward, inputs, eps=1e-5, atol=1e-8, rtol=1e-6)
    assert r.ok, str(r)
    assert r.checked == 36 + (6 if affine else 0)


def test_batch_norm2d_gradcheck_random_directions(backend):
    rng = np.random.default_rng(4)
    shape = (3, 5, 9, 7)
    w, bb = _params(5)
    r = check_backward(F.batch_norm2d, F.batch_norm2d_backward,
                       [backend.asarray(rng.standard_normal(shape) * 2 + 3), backend.asarray(w), backend.asarray(bb)],
                       eps=1e-5, atol=1e-8, rtol=1e-6, directions=4)
    assert r.ok, str(r)


def test_one_value_per_channel_gives_the_bias_and_zero_gradient(backend):
    """M = N*H*W = 1: xhat = 0, so y = bias and dx = 0 (PyTorch refuses this case)."""
    x = backend.asarray(np.array([[[[2.0]], [[-3.0]]]]))
    w, bb = backend.asarray(np.array([1.5, 2.0])), backend.asarray(np.array([0.25, -1.0]))
    y, cache = F.batch_norm2d(x, w, bb)
    R.assert_close(y, np.array([[[[0.25]], [[-1.0]]]]))
    dx, dw, db = F.batch_norm2d_backward(backend.asarray(np.ones((1, 2, 1, 1))), cache)
    R.assert_close(dx, np.zeros((1, 2, 1, 1)))
    R.assert_close(dw, np.zeros(2))
    R.assert_close(db, np.ones(2))


def test_float32_stays_float32(backend):
    xp = backend.xp
    x = backend.asarray(np.random.default_rng(5).standard_normal((2, 3, 4, 4)), dtype="float32")
    w = backend.asarray(np.ones(3), dtype="float32")
    y, cache = F.batch_norm2d(x, w, w)
    dx, dw, db = F.batch_norm2d_backward(y, cache)
    assert y.dtype == dx.dtype == dw.dtype == db.dtype == xp.float32


def _torch():
    return pytest.importorskip("torch")


TORCH_CASES = [((2, 3, 5, 7), 1e-5), ((3, 4, 1, 6), 1e-3), ((2, 1, 9, 2), 1e-5), ((4, 2, 3, 1), 0.1)]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape,eps", TORCH_CASES, ids=[str(c[0]) for c in TORCH_CASES])
def test_batch_norm2d_matches_torch(shape, eps, training):
    torch = _torch()
    rng = np.random.default_rng(6)
    c = shape[1]
    x = rng.standard_normal(shape) * 4 - 1
    w, bb = _params(c, seed=7)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 3.0, c)
    dy = rng.standard_normal(shape)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, bb))
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    ty = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training=training, momentum=0.1, eps=eps)
    ty.backward(torch.tensor(dy))
    y, cache = F.batch_norm2d(x, w, bb, rm, rv, training=training, eps=eps)
    dx, dw, db = F.batch_norm2d_backward(dy, cache)
    np.testing.assert_allclose(y, ty.detach().numpy(), atol=1e-12, rtol=1e-10)
    np.testing.assert_allclose(dx, tx.grad.numpy(), atol=1e-12, rtol=1e-9)
    np.testing.assert_allclose(dw, tw.grad.numpy(), atol=1e-12, rtol=1e-10)
    np.testing.assert_allclose(db, tb.grad.numpy(), atol=1e-12, rtol=1e-10)
    if training:
        # the update a layer makes from the cache is PyTorch's: momentum 0.1, unbiased variance
        m = cache.count
        np.testing.assert_allclose(0.9 * rm + 0.1 * cache.mean, trm.numpy(), atol=1e-14, rtol=1e-12)
        np.testing.assert_allclose(0.9 * rv + 0.1 * cache.var * m / (m - 1), trv.numpy(), atol=1e-14, rtol=1e-12)


def test_batch_norm2d_no_affine_matches_torch():
    torch = _torch()
    rng = np.random.default_rng(8)
    x, dy = rng.standard_normal((2, 3, 4, 3)), rng.standard_normal((2, 3, 4, 3))
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.batch_norm(tx, None, None, None, None, training=True)
    ty.backward(torch.tensor(dy))
    y, cache = F.batch_norm2d(x, None, None)
    dx, dw, db = F.batch_norm2d_backward(dy, cache)
    np.testing.assert_allclose(y, ty.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), atol=1e-12)
    assert dw is None and db is None


def test_bad_inputs(backend):
    b = backend.asarray
    x = b(np.zeros((2, 3, 4, 4)))
    three = b(np.ones(3))
    with pytest.raises(ValueError, match=r"weight must have shape \(C,\) = \(3,\).*got \(4,\)"):
        F.batch_norm2d(x, b(np.ones(4)), three)
    with pytest.raises(ValueError, match=r"bias must have shape \(C,\) = \(3,\).*got \(3, 1\)"):
        F.batch_norm2d(x, three, b(np.ones((3, 1))))
    with pytest.raises(ValueError, match=r"running_var must have shape \(C,\) = \(3,\).*got \(2,\)"):
        F.batch_norm2d(x, three, three, three, b(np.ones(2)), training=False)
    with pytest.raises(ValueError, match=r"training=False.*running_mean and running_var is None"):
        F.batch_norm2d(x, three, three, training=False)
    with pytest.raises(ValueError, match=r"training=False.*running_var is None"):
        F.batch_norm2d(x, three, three, three, None, training=False)
    with pytest.raises(ValueError, match=r"4-D \(N, C, H, W\), got shape \(3, 4, 4\)"):
        F.batch_norm2d(b(np.zeros((3, 4, 4))), three, three)
    with pytest.raises(ValueError, match=r"floating-point.*int64"):
        F.batch_norm2d(b(np.zeros((2, 3, 4, 4), dtype=np.int64)), three, three)
    with pytest.raises(ValueError, match=r"weight has dtype float32 but the input x has dtype float64"):
        F.batch_norm2d(x, b(np.ones(3), dtype="float32"), three)
    with pytest.raises(ValueError, match=r"eps must be > 0, got 0"):
        F.batch_norm2d(x, three, three, eps=0)
    _, cache = F.batch_norm2d(x, three, three)
    with pytest.raises(ValueError, match=r"dy must have the output's shape \(2, 3, 4, 4\), got \(2, 3, 4, 5\)"):
        F.batch_norm2d_backward(b(np.zeros((2, 3, 4, 5))), cache)


def test_exported():
    assert {"batch_norm2d", "batch_norm2d_backward"} <= set(F.__all__)
    assert isinstance(F.batch_norm2d(np.ones((2, 1, 1, 1)), None, None)[1], F.norm.BatchNormCache)


AFFINE_PARTS = [(True, True), (True, False), (False, True), (False, False)]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("has_weight,has_bias", AFFINE_PARTS, ids=["wb", "w", "b", "none"])
def test_fewer_pass_plan_equals_the_reference_on_every_backend(backend, training, has_weight, has_bias):
    """fast.norm (batch_norm2d takes it on NumPy) is array-API code: forward, statistics and
    all three gradients equal reference.batch_norm2d(_backward) to float64 rounding."""
    from minifcn.functional import reference
    from minifcn.functional.fast import norm as fast_norm
    rng = np.random.default_rng(21)
    b = backend.asarray
    x, dy = b(rng.standard_normal((2, 3, 5, 4)) * 2 + 1), b(rng.standard_normal((2, 3, 5, 4)))
    weight = b(rng.uniform(0.5, 2.0, 3)) if has_weight else None
    bias = b(rng.standard_normal(3)) if has_bias else None
    stats = (None, None) if training else (b(rng.standard_normal(3)), b(rng.uniform(0.5, 2.0, 3)))
    got, expected = (plan.batch_norm2d(x, weight, bias, *stats, 1e-5) for plan in (fast_norm, reference))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(to_numpy(g), to_numpy(e), rtol=1e-12, atol=1e-12)
    grads = [plan.batch_norm2d_backward(dy, out[1], out[2], weight, has_bias, training)
             for plan, out in ((fast_norm, got), (reference, expected))]
    for g, e in zip(*grads):
        assert (g is None) == (e is None)
        if e is not None:
            np.testing.assert_allclose(to_numpy(g), to_numpy(e), rtol=1e-12, atol=1e-12)


def test_fewer_pass_plan_in_float32_is_close_to_the_reference(monkeypatch):
    """On NumPy in float32 the plans round differently (a BLAS dot against pairwise sums):
    a SegNet-sized activation stays within 1e-5 of the output scale."""
    rng = np.random.default_rng(22)
    x = (rng.standard_normal((1, 16, 64, 64)) * 3 + 2).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w, bb = (rng.standard_normal(16).astype(np.float32) for _ in range(2))
    out = {}
    for ref in (True, False):
        with F.use_reference(ref):
            y, cache = F.batch_norm2d(x, w, bb)
            out[ref] = (y,) + F.batch_norm2d_backward(dy, cache)
    for fast, plain in zip(out[False], out[True]):
        assert fast.dtype == np.float32
        assert np.abs(fast - plain).max() <= 1e-5 * np.abs(plain).max()


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_fewer_pass_plan_gradcheck(backend, training):
    """The fast plan's own backward against central differences, on every backend."""
    from minifcn.functional.fast import norm as fast_norm
    rng = np.random.default_rng(23)
    b = backend.asarray
    rm, rv = b(rng.standard_normal(3)), b(rng.uniform(0.5, 2.0, 3))
    inputs = [b(rng.standard_normal((2, 3, 3, 2)) * 2 + 1), b(rng.uniform(0.5, 2.0, 3)), b(rng.standard_normal(3))]

    def fwd(x, w, bb):
        y, xhat, inv_std, _, _ = fast_norm.batch_norm2d(x, w, bb, *((None, None) if training else (rm, rv)), 1e-5)
        return y, (xhat, inv_std, w)

    def bwd(dy, cache):
        xhat, inv_std, w = cache
        return fast_norm.batch_norm2d_backward(dy, xhat, inv_std, w, True, training)

    r = check_backward(fwd, bwd, inputs, eps=1e-5, atol=1e-8, rtol=1e-6)
    assert r.ok, str(r)
    assert r.checked == 36 + 6
