"""softmax_cross_entropy: loss and gradient against a pixel-by-pixel reference, gradient
checks, ignored pixels, all-ignored images, stability, validation, PyTorch cross-check."""
import functools

import numpy as np
import pytest

import reference as R
from minifcn import functional as F
from minifcn.backend import to_numpy
from minifcn.gradcheck import check_backward


def _problem(seed=0, shape=(2, 4, 3, 5), ignore_frac=0.3, scale=1.0):
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    logits = rng.standard_normal(shape) * scale
    labels = rng.integers(0, c, (n, h, w))
    labels[rng.random((n, h, w)) < ignore_frac] = 255
    return logits, labels


def _backward(dloss, cache):
    return F.softmax_cross_entropy_backward(cache, dloss)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_gradient_match_reference(backend, normalize, weighted):
    logits, labels = _problem()
    weight = np.array([0.5, 2.0, 1.0, 3.0]) if weighted else None
    loss, cache = F.softmax_cross_entropy(backend.asarray(logits), backend.asarray(labels), normalize=normalize,
                                          weight=None if weight is None else backend.asarray(weight))
    ref_loss, ref_grad = R.softmax_cross_entropy(logits, labels, normalize=normalize, weight=weight)
    assert tuple(loss.shape) == ()
    assert abs(float(loss) - ref_loss) <= 1e-12 * abs(ref_loss)
    R.assert_close(F.softmax_cross_entropy_backward(cache), ref_grad)
    R.assert_close(F.softmax_cross_entropy_backward(cache, 2.5), 2.5 * ref_grad)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_gradcheck(backend, normalize, weighted):
    logits, labels = _problem(seed=1)
    weight = backend.asarray(np.array([0.5, 2.0, 1.0, 3.0])) if weighted else None
    fwd = functools.partial(F.softmax_cross_entropy, labels=backend.asarray(labels), normalize=normalize,
                            weight=weight)
    r = check_backward(fwd, _backward, [backend.asarray(logits)])
    assert r.ok, str(r)


def test_loss_gradcheck_random_directions(backend):
    logits, labels = _problem(seed=2, shape=(2, 21, 16, 12), scale=3.0)
    fwd = functools.partial(F.softmax_cross_entropy, labels=backend.asarray(labels))
    r = check_backward(fwd, _backward, [backend.asarray(logits)], directions=3)
    assert r.ok, str(r)


def test_ignored_pixels_get_exactly_zero_gradient(backend):
    logits, labels = _problem(seed=3, ignore_frac=0.5)
    labels[1] = 255                                      # one whole image ignored
    loss, cache = F.softmax_cross_entropy(backend.asarray(logits), backend.asarray(labels))
    g = to_numpy(F.softmax_cross_entropy_backward(cache))
    ignored = np.broadcast_to((labels == 255)[:, None], g.shape)
    assert np.all(g[ignored] == 0.0)
    assert np.all(np.any(g != 0, axis=1)[labels != 255])
    # the ignored image does not change the loss of the other one
    solo, _ = F.softmax_cross_entropy(backend.asarray(logits[:1]), backend.asarray(labels[:1]))
    assert abs(float(loss) - float(solo)) <= 1e-14 * abs(float(solo))


@pytest.mark.parametrize("normalize", [True, False])
def test_all_ignored_batch_gives_zero_loss_and_zero_gradient(backend, normalize):
    logits, _ = _problem(seed=4)
    labels = np.full((2, 3, 5), 255)
    loss, cache = F.softmax_cross_entropy(backend.asarray(logits), backend.asarray(labels), normalize=normalize)
    assert float(loss) == 0.0
    g = to_numpy(F.softmax_cross_entropy_backward(cache))
    assert np.all(g == 0.0) and not np.any(np.isnan(g))


def test_custom_ignore_index(backend):
    logits, labels = _problem(seed=5)
    labels[labels == 255] = -1
    loss, _ = F.softmax_cross_entropy(backend.asarray(logits), backend.asarray(labels), ignore_index=-1)
    ref, _ = R.softmax_cross_entropy(logits, labels, ignore_index=-1)
    assert abs(float(loss) - ref) <= 1e-12 * ref


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_loss_is_stable_for_huge_logits(backend, dtype):
    logits, labels = _problem(seed=6, scale=1e4)
    loss, cache = F.softmax_cross_entropy(backend.asarray(logits, dtype=dtype), backend.asarray(labels))
    g = to_numpy(F.softmax_cross_entropy_backward(cache))
    ref_loss, ref_grad = R.softmax_cross_entropy(logits, labels)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(g))
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert abs(float(loss) - ref_loss) <= tol * abs(ref_loss)
    np.testing.assert_allclose(g, ref_grad, atol=tol)


def test_float32_logits_stay_float32_with_float64_class_weights(backend):
    logits, labels = _problem(seed=8)
    loss, cache = F.softmax_cross_entropy(backend.asarray(logits, dtype="float32"), backend.asarray(labels),
                                          weight=backend.asarray(np.array([0.5, 2.0, 1.0, 3.0])))
    assert loss.dtype == backend.xp.float32
    assert F.softmax_cross_entropy_backward(cache).dtype == backend.xp.float32


@pytest.mark.parametrize("dtype", ["uint8", "int32", "int64"])
def test_labels_of_any_integer_dtype(backend, dtype):
    logits, labels = _problem(seed=9)
    loss, _ = F.softmax_cross_entropy(backend.asarray(logits), backend.asarray(labels.astype(dtype)))
    ref, _ = R.softmax_cross_entropy(logits, labels)
    assert abs(float(loss) - ref) <= 1e-12 * ref


def test_minus_inf_logits_of_other_classes_and_of_ignored_pixels(backend):
    logits = np.zeros((1, 3, 1, 3))
    logits[0, 2, 0, :] = -np.inf                      # class 2 impossible everywhere
    labels = np.array([[[0, 1, 255]]])
    loss, cache = F.softmax_cross_entropy(backend.asarray(logits), backend.asarray(labels))
    assert abs(float(loss) - np.log(2.0)) < 1e-15
    g = to_numpy(F.softmax_cross_entropy_backward(cache))
    expected = np.array([[-0.25, 0.25, 0.0], [0.25, -0.25, 0.0], [0.0, 0.0, 0.0]]).reshape(1, 3, 1, 3)
    np.testing.assert_array_equal(g, expected)


def test_confident_right_and_wrong_predictions():
    logits = np.array([1e4, -1e4]).reshape(1, 2, 1, 1)
    right, _ = F.softmax_cross_entropy(logits, np.zeros((1, 1, 1), dtype=np.int64))
    wrong, _ = F.softmax_cross_entropy(logits, np.ones((1, 1, 1), dtype=np.int64))
    assert float(right) == 0.0 and float(wrong) == 2e4


def test_normalize_false_is_sum_over_pixels_divided_by_batch():
    logits, labels = _problem(seed=7, ignore_frac=0.0)
    mean, _ = F.softmax_cross_entropy(logits, labels, normalize=True)
    unnorm, _ = F.softmax_cross_entropy(logits, labels, normalize=False)
    n, _, h, w = logits.shape
    assert abs(float(unnorm) - float(mean) * h * w) <= 1e-12 * float(unnorm)


def test_loss_rejects_bad_input(backend):
    logits = backend.asarray(np.zeros((2, 4, 3, 5)))

    def lab(values):
        return backend.asarray(np.asarray(values))
    good = np.zeros((2, 3, 5), dtype=np.int64)
    with pytest.raises(ValueError, match=r"logits must be 4-D \(N, C, H, W\), got shape \(4, 3, 5\)"):
        F.softmax_cross_entropy(backend.asarray(np.zeros((4, 3, 5))), lab(good))
    with pytest.raises(ValueError, match=r"labels must be 3-D \(N, H, W\), got shape \(2, 1, 3, 5\)"):
        F.softmax_cross_entropy(logits, lab(good[:, None]))
    with pytest.raises(ValueError, match=r"labels shape \(2, 5, 3\) does not match logits shape \(2, 4, 3, 5\): "
                                         r"expected labels of shape \(N, H, W\) = \(2, 3, 5\)"):
        F.softmax_cross_entropy(logits, lab(np.zeros((2, 5, 3), dtype=np.int64)))
    bad = good.copy()
    bad[0, 0, :3] = [4, -1, 254]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\) or equal ignore_index=255; found \[-1, 4, 254\]"):
        F.softmax_cross_entropy(logits, lab(bad))
    with pytest.raises(ValueError, match=r"labels must be an integer array, got dtype .*float64"):
        F.softmax_cross_entropy(logits, lab(good.astype(float)))
    with pytest.raises(ValueError, match=r"logits must be a floating-point array"):
        F.softmax_cross_entropy(backend.asarray(np.zeros((2, 4, 3, 5), dtype=np.int64)), lab(good))
    with pytest.raises(ValueError, match=r"class weight must have shape \(4,\), got \(3,\)"):
        F.softmax_cross_entropy(logits, lab(good), weight=backend.asarray(np.ones(3)))


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_loss_agrees_with_torch(normalize, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 4)), int(rng.integers(2, 6)), int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    logits, labels = _problem(seed=seed, shape=shape, scale=float(rng.choice([1.0, 50.0])))
    weight = rng.uniform(0.1, 2.0, shape[1]) if seed % 2 else None
    if (labels != 255).sum() == 0:
        labels[0, 0, 0] = 0
    tx = torch.tensor(logits, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tx, torch.tensor(labels), None if weight is None else torch.tensor(weight),
                                           ignore_index=255, reduction="mean" if normalize else "sum")
    if not normalize:
        tl = tl / shape[0]
    tl.backward()
    loss, cache = F.softmax_cross_entropy(logits, labels, normalize=normalize, weight=weight)
    assert abs(float(loss) - tl.item()) <= 1e-12 * abs(tl.item())
    R.assert_close(F.softmax_cross_entropy_backward(cache), tx.grad.numpy(), atol=1e-14)


@pytest.mark.parametrize("bad", [[1.0, -0.5, 1.0], [1.0, float("nan"), 1.0], [float("inf"), 1.0, 1.0]])
def test_class_weights_must_be_finite_and_non_negative(backend, bad):
    logits = backend.asarray(np.zeros((1, 3, 2, 2)))
    labels = backend.asarray(np.zeros((1, 2, 2), np.int64))
    with pytest.raises(ValueError, match=r"class weights must be finite and >= 0"):
        F.softmax_cross_entropy(logits, labels, weight=backend.asarray(np.array(bad)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("weighted", [False, True])
def test_banded_plan_is_identical_to_the_reference(monkeypatch, dtype, weighted):
    """On NumPy the loss runs band by band of pixel rows (minifcn.functional.fast.softmax):
    loss, softmax and gradient bit-identical to the reference path, with many tiny bands
    (one row each) and with one, ignored pixels and a batch of 2 included."""
    from minifcn import backend as B
    rng = np.random.default_rng(11)
    logits = (4 * rng.standard_normal((2, 5, 7, 6))).astype(dtype)
    labels = rng.integers(0, 5, (2, 7, 6))
    labels[0, :2, :3] = 255
    weight = np.array([0.5, 1.0, 2.0, 0.0, 1.5], dtype) if weighted else None
    with F.use_reference():
        loss_ref, cache_ref = F.softmax_cross_entropy(logits, labels, weight=weight)
        grad_ref = F.softmax_cross_entropy_backward(cache_ref, 0.7)
    for elements in (1, 10**12):
        monkeypatch.setattr(B, "BAND_ELEMENTS", elements)
        with F.use_reference(False):
            loss, cache = F.softmax_cross_entropy(logits, labels, weight=weight)
            grad = F.softmax_cross_entropy_backward(cache, 0.7)
        np.testing.assert_array_equal(cache.prob, cache_ref.prob)
        np.testing.assert_array_equal(grad, grad_ref)
        np.testing.assert_allclose(loss, loss_ref, rtol=1e-6 if dtype == "float32" else 1e-14)


def test_banded_softmax_equals_reference_on_every_backend(backend, monkeypatch):
    """fast.softmax itself (the loss takes it on NumPy) is array-API code: bit-identical to
    reference.softmax_logp / softmax_grad on every backend, with one-row bands."""
    from minifcn import backend as B
    from minifcn.functional import reference
    from minifcn.functional.fast import softmax
    monkeypatch.setattr(B, "BAND_ELEMENTS", 1)
    rng = np.random.default_rng(12)
    logits = backend.asarray(3 * rng.standard_normal((2, 4, 5, 3)))
    target = backend.asarray(rng.integers(0, 4, (2, 1, 5, 3)))
    scale = backend.asarray(rng.random((2, 1, 5, 3)))
    for got, expected in zip(softmax.softmax_logp(logits, target), reference.softmax_logp(logits, target)):
        np.testing.assert_array_equal(to_numpy(got), to_numpy(expected))
    prob = reference.softmax_logp(logits, target)[0]
    np.testing.assert_array_equal(to_numpy(softmax.softmax_grad(prob, target, scale)),
                                  to_numpy(reference.softmax_grad(prob, target, scale)))
