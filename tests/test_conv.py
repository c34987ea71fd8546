"""conv2d and conv_transpose2d: forward against loop references, float64 gradient
checks, the adjoint identity, input validation, and an optional PyTorch cross-check."""
import functools

import numpy as np
import pytest

import reference as R
from minifcn import functional as F
from minifcn.backend import get_backend, to_numpy
from minifcn.gradcheck import check_backward

# (x shape, weight shape, stride, padding, dilation, bias)
CONV_CASES = [
    ((1, 2, 5, 6), (3, 2, 3, 3), 1, 1, 1, True),                 # odd sizes, same padding
    ((2, 3, 7, 5), (2, 3, 3, 2), 2, (1, 2), (1, 2), True),       # asymmetric everything
    ((1, 2, 4, 3), (3, 2, 1, 1), 1, 0, 1, False),                # 1x1, no bias
    ((1, 2, 5, 4), (2, 2, 5, 4), 1, 0, 1, True),                 # kernel = whole input
    ((1, 1, 6, 7), (2, 1, 2, 3), (3, 2), (0, 1), 1, False),      # stride > kernel
    ((1, 2, 8, 7), (1, 2, 3, 3), 3, 0, 2, True),                 # dilation 2, stride 3
    ((1, 1, 1, 1), (2, 1, 3, 3), 1, 1, 1, True),                 # 1x1 input, padding 1
    ((1, 1, 3, 2), (1, 1, 2, 2), 1, 3, 1, False),                # padding > kernel
]

# (x shape, weight shape (C_in, C_out, KH, KW), stride, padding, dilation, bias)
CONVT_CASES = [
    ((1, 2, 3, 4), (2, 3, 4, 4), 2, 1, 1, False),                # FCN-style 2x upsampling
    ((2, 1, 3, 2), (1, 2, 3, 3), 2, 0, 1, True),                 # kernel not divisible by stride
    ((1, 2, 2, 3), (2, 1, 5, 3), (3, 2), (1, 0), 1, True),       # asymmetric stride and padding
    ((1, 1, 3, 3), (1, 2, 2, 3), 1, 0, (2, 1), False),           # dilation
    ((1, 2, 1, 1), (2, 2, 4, 4), 2, 1, 1, True),                 # 1x1 input
    ((1, 2, 3, 2), (2, 3, 1, 1), 1, 0, 1, False),                # 1x1 kernel
    ((1, 1, 2, 2), (1, 1, 2, 2), 3, 0, 1, True),                 # stride > kernel leaves gaps
]


def _ids(cases):
    return [f"x{c[0]}-w{c[1]}-s{c[2]}-p{c[3]}-d{c[4]}-{'bias' if c[5] else 'nobias'}" for c in cases]


def _inputs(backend, case, transpose, seed=0):
    """NumPy x, weight, bias for ``case`` and the same arrays on ``backend``."""
    x_shape, w_shape, *_, bias = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[1] if transpose else w_shape[0]) if bias else None
    return x, w, b, backend.asarray(x), backend.asarray(w), (backend.asarray(b) if bias else None)


# ----------------------------------------------------------------------------- forward
@pytest.mark.parametrize("case", CONV_CASES, ids=_ids(CONV_CASES))
def test_conv2d_matches_loop_reference(backend, case):
    x, w, b, xb, wb, bb = _inputs(backend, case, transpose=False)
    _, _, s, p, d, _ = case
    y, _ = F.conv2d(xb, wb, bb, s, p, d)
    R.assert_close(y, R.conv2d(x, w, b, s, p, d))


@pytest.mark.parametrize("case", CONVT_CASES, ids=_ids(CONVT_CASES))
def test_conv_transpose2d_matches_scatter_reference(backend, case):
    x, w, b, xb, wb, bb = _inputs(backend, case, transpose=True)
    _, _, s, p, d, _ = case
    y, _ = F.conv_transpose2d(xb, wb, bb, s, p, d)
    R.assert_close(y, R.conv_transpose2d(x, w, b, s, p, d))


def test_float32_stays_float32(backend):
    x = backend.asarray(np.ones((1, 2, 4, 4)), dtype="float32")
    w = backend.asarray(np.ones((3, 2, 3, 3)), dtype="float32")
    y, cache = F.conv2d(x, w, None, padding=1)
    assert y.dtype == backend.xp.float32
    dx, dw, _ = F.conv2d_backward(y, cache)
    assert dx.dtype == dw.dtype == backend.xp.float32
    assert float(y[0, 0, 1, 1]) == 18.0  # 2 channels x 9 ones
    wt = backend.asarray(np.ones((2, 3, 4, 4)), dtype="float32")
    b = backend.asarray(np.ones(3), dtype="float32")
    y, cache = F.conv_transpose2d(x, wt, b, stride=2, padding=1)
    assert y.dtype == backend.xp.float32
    assert all(g.dtype == backend.xp.float32 for g in F.conv_transpose2d_backward(y, cache))


# ----------------------------------------------------------------------- gradient checks
def _grad_inputs(backend, case, transpose):
    _, _, _, xb, wb, bb = _inputs(backend, case, transpose, seed=1)
    return [xb, wb, bb]


@pytest.mark.parametrize("case", CONV_CASES, ids=_ids(CONV_CASES))
def test_conv2d_gradcheck_elementwise(backend, case):
    _, _, s, p, d, _ = case
    fwd = functools.partial(F.conv2d, stride=s, padding=p, dilation=d)
    inputs = _grad_inputs(backend, case, transpose=False)
    r = check_backward(fwd, F.conv2d_backward, inputs)
    assert r.ok, str(r)
    assert r.checked == sum(int(np.prod(a.shape)) for a in inputs if a is not None)


@pytest.mark.parametrize("case", CONVT_CASES, ids=_ids(CONVT_CASES))
def test_conv_transpose2d_gradcheck_elementwise(backend, case):
    _, _, s, p, d, _ = case
    fwd = functools.partial(F.conv_transpose2d, stride=s, padding=p, dilation=d)
    r = check_backward(fwd, F.conv_transpose2d_backward, _grad_inputs(backend, case, transpose=True))
    assert r.ok, str(r)


def test_conv2d_gradcheck_random_directions_realistic_shape(backend):
    rng = np.random.default_rng(2)
    inputs = [backend.asarray(rng.standard_normal(s)) for s in [(2, 8, 17, 13), (6, 8, 3, 3), (6,)]]
    fwd = functools.partial(F.conv2d, stride=2, padding=(2, 1), dilation=(2, 1))
    r = check_backward(fwd, F.conv2d_backward, inputs, directions=3)
    assert r.ok, str(r)


def test_conv_transpose2d_gradcheck_random_directions_realistic_shape(backend):
    rng = np.random.default_rng(3)
    inputs = [backend.asarray(rng.standard_normal(s)) for s in [(2, 6, 7, 9), (6, 4, 4, 4), (4,)]]
    fwd = functools.partial(F.conv_transpose2d, stride=2, padding=1)
    r = check_backward(fwd, F.conv_transpose2d_backward, inputs, directions=3)
    assert r.ok, str(r)


def test_backward_skips_unneeded_gradients(backend):
    rng = np.random.default_rng(4)
    x = backend.asarray(rng.standard_normal((1, 2, 5, 5)))
    w = backend.asarray(rng.standard_normal((3, 2, 3, 3)))
    y, cache = F.conv2d(x, w)
    dy = backend.asarray(rng.standard_normal(tuple(y.shape)))
    full = F.conv2d_backward(dy, cache)
    dx, dw, db = F.conv2d_backward(dy, cache, need_dweight=False)
    assert dw is None and db is None
    R.assert_close(dx, to_numpy(full[0]))
    dx, dw, _ = F.conv2d_backward(dy, cache, need_dx=False)
    assert dx is None
    R.assert_close(dw, to_numpy(full[1]))
    wt = backend.asarray(rng.standard_normal((2, 3, 3, 3)))
    y, cache = F.conv_transpose2d(x, wt, stride=2)
    dy = backend.asarray(rng.standard_normal(tuple(y.shape)))
    dx, dw, db = F.conv_transpose2d_backward(dy, cache, need_dweight=False)
    assert dw is None and db is None and tuple(dx.shape) == (1, 2, 5, 5)


# ------------------------------------------------------------------------ adjoint identity
# (kernel, stride, padding, dilation, OH): H is chosen so that conv2d maps H -> OH exactly.
ADJOINT_CASES = [(3, 1, 1, 1, 5), (4, 2, 1, 1, 4), (3, 2, 0, 1, 3), (3, 3, 2, 2, 3), ((2, 5), (3, 1), (0, 2), (2, 1), 3)]


@pytest.mark.parametrize("k,s,p,d,o", ADJOINT_CASES)
def test_conv_transpose_is_adjoint_of_conv(backend, k, s, p, d, o):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = [v if isinstance(v, tuple) else (v, v) for v in (k, s, p, d)]
    h = (o - 1) * sh - 2 * ph + dh * (kh - 1) + 1
    w = (o - 1) * sw - 2 * pw + dw * (kw - 1) + 1
    rng = np.random.default_rng(5)
    x = backend.asarray(rng.standard_normal((2, 3, h, w)))
    wt = backend.asarray(rng.standard_normal((4, 3, kh, kw)))
    y = backend.asarray(rng.standard_normal((2, 4, o, o)))
    ax, _ = F.conv2d(x, wt, stride=s, padding=p, dilation=d)
    aty, _ = F.conv_transpose2d(y, wt, stride=s, padding=p, dilation=d)
    assert tuple(ax.shape) == tuple(y.shape) and tuple(aty.shape) == tuple(x.shape)
    xp = backend.xp
    lhs, rhs = float(xp.sum(ax * y)), float(xp.sum(x * aty))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


# ------------------------------------------------------------------------ bad input
def _arr(backend, *shape, dtype="float64"):
    return backend.asarray(np.ones(shape), dtype=dtype)


def test_conv2d_rejects_bad_input(backend):
    a = functools.partial(_arr, backend)
    with pytest.raises(ValueError, match=r"conv2d input x must be 4-D \(N, C, H, W\), got shape \(2, 5, 5\)"):
        F.conv2d(a(2, 5, 5), a(3, 2, 3, 3))
    with pytest.raises(ValueError, match=r"conv2d weight must be 4-D \(C_out, C_in, KH, KW\)"):
        F.conv2d(a(1, 2, 5, 5), a(3, 2, 3))
    with pytest.raises(ValueError, match=r"channel mismatch: input x has C=3 .* weight expects C_in=2"):
        F.conv2d(a(1, 3, 5, 5), a(4, 2, 3, 3))
    with pytest.raises(ValueError, match=r"kernel 5x5 .* larger than the padded input 4x6"):
        F.conv2d(a(1, 2, 2, 4), a(3, 2, 5, 5), padding=1)
    with pytest.raises(ValueError, match=r"kernel 3x3 \(dilation \(2, 2\)\) is larger"):
        F.conv2d(a(1, 2, 4, 4), a(3, 2, 3, 3), dilation=2)
    with pytest.raises(ValueError, match=r"must be a floating-point array .* got dtype .*int64"):
        F.conv2d(a(1, 2, 5, 5, dtype="int64"), a(3, 2, 3, 3, dtype="int64"))
    with pytest.raises(ValueError, match=r"input x has dtype .*float32 but weight has dtype .*float64"):
        F.conv2d(a(1, 2, 5, 5, dtype="float32"), a(3, 2, 3, 3))
    with pytest.raises(ValueError, match=r"conv2d bias must have shape \(3,\), got \(2,\)"):
        F.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3), a(2))
    with pytest.raises(ValueError, match=r"conv2d bias has dtype .*float64 but the input has dtype .*float32"):
        F.conv2d(a(1, 2, 5, 5, dtype="float32"), a(3, 2, 3, 3, dtype="float32"), a(3))
    with pytest.raises(ValueError, match=r"stride and dilation must be >= 1 and padding >= 0.*stride=0"):
        F.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3), stride=0)
    with pytest.raises(ValueError, match=r"padding=-1"):
        F.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3), padding=-1)
    with pytest.raises(ValueError, match=r"stride must be an int or a pair of ints, got \(1, 2, 3\)"):
        F.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3), stride=(1, 2, 3))


def test_conv_transpose2d_rejects_bad_input(backend):
    a = functools.partial(_arr, backend)
    with pytest.raises(ValueError, match=r"conv_transpose2d input x must be 4-D"):
        F.conv_transpose2d(a(2, 3, 3), a(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"conv_transpose2d weight must be 4-D \(C_in, C_out, KH, KW\)"):
        F.conv_transpose2d(a(1, 2, 3, 3), a(2, 3, 4))
    with pytest.raises(ValueError, match=r"channel mismatch: input x has C=3 .* weight expects C_in=2"):
        F.conv_transpose2d(a(1, 3, 3, 3), a(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"output would be -2x-2: padding \(2, 2\) is too large"):
        F.conv_transpose2d(a(1, 2, 1, 1), a(2, 3, 2, 2), padding=2)
    with pytest.raises(ValueError, match=r"floating-point array .* got dtype .*int32"):
        F.conv_transpose2d(a(1, 2, 3, 3, dtype="int32"), a(2, 3, 4, 4, dtype="int32"))
    with pytest.raises(ValueError, match=r"conv_transpose2d bias must have shape \(3,\)"):
        F.conv_transpose2d(a(1, 2, 3, 3), a(2, 3, 4, 4), a(2))
    with pytest.raises(ValueError, match=r"conv_transpose2d bias has dtype .*float32 but the input has dtype .*float64"):
        F.conv_transpose2d(a(1, 2, 3, 3), a(2, 3, 4, 4), a(3, dtype="float32"))


# ------------------------------------------------------------------ PyTorch cross-check
TORCH_CONV_CASES = CONV_CASES + [
    ((1, 3, 9, 4), (2, 3, 3, 1), (1, 3), (4, 0), (1, 1), True),  # H != W, padding > kernel on one axis
    ((2, 1, 1, 1), (1, 1, 1, 1), 2, 2, 3, True),                   # 1x1 input, 1x1 kernel, big padding
    ((1, 2, 10, 11), (2, 2, 3, 3), 3, 1, 2, False),                # dilation 2 with stride 3
]
TORCH_CONVT_CASES = CONVT_CASES + [
    ((1, 2, 4, 3), (2, 2, 3, 3), 3, 1, 2, True),                   # dilation 2 with stride 3
    ((2, 3, 5, 2), (3, 1, 16, 16), 8, 4, 1, False),                # FCN-8s final upsampling shape
    ((1, 1, 1, 1), (1, 1, 64, 64), 32, 0, 1, False),               # FCN-32s upsampling of one pixel
]


def _torch_vs_minifcn(torch, op, top, case, transpose):
    _, _, s, p, d, _ = case
    x, w, b, *_ = _inputs(get_backend("numpy"), case, transpose, seed=6)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if b is not None else None
    ty = top(tx, tw, tb, s, p, d)
    y, cache = op[0](x, w, b, s, p, d)
    R.assert_close(y, ty.detach().numpy(), atol=1e-12, rtol=1e-12)
    dy = np.random.default_rng(7).standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    dx, dw, db = op[1](dy, cache)
    R.assert_close(dx, tx.grad.numpy())
    R.assert_close(dw, tw.grad.numpy(), atol=1e-11)
    if b is not None:
        R.assert_close(db, tb.grad.numpy())


@pytest.mark.parametrize("case", TORCH_CONV_CASES, ids=_ids(TORCH_CONV_CASES))
def test_conv2d_agrees_with_torch(case):
    torch = pytest.importorskip("torch")
    _torch_vs_minifcn(torch, (F.conv2d, F.conv2d_backward), torch.nn.functional.conv2d, case, transpose=False)


@pytest.mark.parametrize("case", TORCH_CONVT_CASES, ids=_ids(TORCH_CONVT_CASES))
def test_conv_transpose2d_agrees_with_torch(case):
    torch = pytest.importorskip("torch")

    def top(x, w, b, s, p, d):
        return torch.nn.functional.conv_transpose2d(x, w, b, s, p, 0, 1, d)
    _torch_vs_minifcn(torch, (F.conv_transpose2d, F.conv_transpose2d_backward), top, case, transpose=True)


def test_conv_ops_agree_with_torch_on_random_shapes():
    """300 random geometries; both libraries must agree on the values and on which are invalid."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    tf = torch.nn.functional
    for _ in range(300):
        transpose = bool(rng.integers(2))
        c, co = rng.integers(1, 4, 2)
        h, w = rng.integers(1, 9, 2)
        kh, kw = rng.integers(1, 6, 2)
        s, p, d = tuple(rng.integers(1, 4, 2)), tuple(rng.integers(0, 4, 2)), tuple(rng.integers(1, 3, 2))
        x = rng.standard_normal((2, c, h, w))
        wt = rng.standard_normal((c, co, kh, kw) if transpose else (co, c, kh, kw))
        b = rng.standard_normal(co)
        where = f"{'conv_transpose2d' if transpose else 'conv2d'} x{x.shape} w{wt.shape} s{s} p{p} d{d}"
        try:
            ty = (tf.conv_transpose2d(torch.tensor(x), torch.tensor(wt), torch.tensor(b), s, p, 0, 1, d)
                  if transpose else tf.conv2d(torch.tensor(x), torch.tensor(wt), torch.tensor(b), s, p, d))
        except RuntimeError:
            with pytest.raises(ValueError):
                (F.conv_transpose2d if transpose else F.conv2d)(x, wt, b, s, p, d)
            continue
        y, cache = (F.conv_transpose2d if transpose else F.conv2d)(x, wt, b, s, p, d)
        assert y.shape == tuple(ty.shape), where
        np.testing.assert_allclose(y, ty.numpy(), atol=1e-12, rtol=1e-12, err_msg=where)


@pytest.mark.parametrize("kwargs,name", [({"stride": 1.5}, "stride"), ({"padding": 2.9}, "padding"),
                                         ({"dilation": (1, 1.9)}, "dilation"), ({"stride": True}, "stride")])
def test_non_integer_hyper_parameters_are_refused_not_truncated(kwargs, name):
    x, w = np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3))
    with pytest.raises(ValueError, match=rf"{name} must be an int or a pair of ints, got"):
        F.conv2d(x, w, **kwargs)
    with pytest.raises(ValueError, match=rf"{name} must be an int or a pair of ints, got"):
        F.conv_transpose2d(x, np.zeros((2, 3, 3, 3)), **kwargs)


@pytest.mark.parametrize("shape", [(1, 2, 0, 5), (1, 2, 5, 0), (0, 2, 5, 5)])
def test_empty_inputs_are_refused(shape):
    with pytest.raises(ValueError, match=r"needs non-empty arrays, got input x of shape"):
        F.conv2d(np.zeros(shape), np.zeros((3, 2, 1, 1)))
    with pytest.raises(ValueError, match=r"needs non-empty arrays, got input x of shape"):
        F.conv_transpose2d(np.zeros(shape), np.zeros((2, 3, 2, 2)), stride=2)
    with pytest.raises(ValueError, match=r"needs a non-empty input, got shape"):
        F.max_pool2d(np.zeros(shape), 1)


def test_output_padding_must_stay_below_the_stride():
    with pytest.raises(ValueError, match=r"output_padding \(2, 2\) must be >= 0 and smaller than the stride \(2, 2\)"):
        F.conv_transpose2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 4, 4)), stride=2, output_padding=2)
