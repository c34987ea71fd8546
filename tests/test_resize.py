"""interpolate_bilinear and its backward: per-pixel loop reference, gradient checks, PyTorch, validation."""
import functools
import math

import numpy as np
import pytest

from minifcn import functional as F
from minifcn.backend import to_numpy
from minifcn.gradcheck import check_backward


def loop_source(dst, in_size, out_size, align_corners):
    """PyTorch's source coordinate of output index ``dst`` (area_pixel_compute_source_index)."""
    if align_corners:
        return dst * (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    return max((dst + 0.5) * in_size / out_size - 0.5, 0.0)


def loop_bilinear(x, size, align_corners):
    """Naive reference: one output pixel at a time, four taps, weights (1-ty)(1-tx) ... ty*tx."""
    n, c, h, w = x.shape
    oh, ow = size
    y = np.zeros((n, c, oh, ow), dtype=x.dtype)
    for i in range(oh):
        sy = loop_source(i, h, oh, align_corners)
        y0 = int(math.floor(sy))
        y1, ty = min(y0 + 1, h - 1), sy - y0
        for j in range(ow):
            sx = loop_source(j, w, ow, align_corners)
            x0 = int(math.floor(sx))
            x1, tx = min(x0 + 1, w - 1), sx - x0
            y[:, :, i, j] = ((1 - ty) * (1 - tx) * x[:, :, y0, x0] + (1 - ty) * tx * x[:, :, y0, x1]
                             + ty * (1 - tx) * x[:, :, y1, x0] + ty * tx * x[:, :, y1, x1])
    return y


# (N, C, H, W), (OH, OW): up, down, mixed, odd, 1-pixel inputs and outputs, identity
CASES = [((1, 2, 5, 7), (11, 3)), ((2, 1, 1, 1), (4, 6)), ((1, 3, 8, 8), (3, 3)), ((1, 1, 3, 9), (1, 1)),
         ((1, 2, 4, 4), (4, 4)), ((2, 2, 2, 3), (17, 13)), ((1, 1, 16, 9), (5, 31)), ((1, 1, 1, 6), (3, 1))]


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape,size", CASES)
def test_interpolate_matches_loop_reference(backend, shape, size, align_corners):
    x = np.random.default_rng(0).standard_normal(shape)
    y, _ = F.interpolate_bilinear(backend.asarray(x), size, align_corners=align_corners)
    assert tuple(y.shape) == shape[:2] + size
    np.testing.assert_allclose(to_numpy(y), loop_bilinear(x, size, align_corners), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("align_corners", [False, True])
def test_interpolate_keeps_float32(backend, align_corners):
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 5)).astype(np.float32)
    y, cache = F.interpolate_bilinear(backend.asarray(x), (9, 4), align_corners)
    assert y.dtype == backend.xp.float32 and y.device == backend.device
    dx = F.interpolate_bilinear_backward(y, cache)
    assert dx.dtype == backend.xp.float32 and tuple(dx.shape) == x.shape
    np.testing.assert_allclose(to_numpy(y), loop_bilinear(x.astype(np.float64), (9, 4), align_corners),
                               rtol=1e-5, atol=1e-5)


def test_same_size_is_the_identity_and_align_corners_keeps_the_corners(backend):
    x = np.random.default_rng(2).standard_normal((1, 2, 5, 7))
    for ac in (False, True):
        y, _ = F.interpolate_bilinear(backend.asarray(x), (5, 7), ac)
        np.testing.assert_array_equal(to_numpy(y), x)
    y = to_numpy(F.interpolate_bilinear(backend.asarray(x), (13, 19), True)[0])
    np.testing.assert_allclose(y[:, :, ::-12, ::-18], x[:, :, ::-4, ::-6], rtol=0, atol=1e-14)


def test_cache_is_typed_and_matrices_rows_sum_to_one(backend):
    x = backend.asarray(np.ones((1, 1, 4, 7)))
    y, cache = F.interpolate_bilinear(x, (9, 3), False)
    assert isinstance(cache, F.resize.InterpolateCache) and cache._fields == ("a_h", "a_w")
    assert tuple(cache.a_h.shape) == (9, 4) and tuple(cache.a_w.shape) == (3, 7)
    for a in cache:
        np.testing.assert_allclose(to_numpy(a).sum(axis=1), 1.0, rtol=0, atol=1e-15)
        assert (to_numpy(a) >= 0).all() and ((to_numpy(a) != 0).sum(axis=1) <= 2).all()
    np.testing.assert_allclose(to_numpy(y), 1.0, rtol=0, atol=1e-15)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape,size", [((1, 2, 3, 4), (5, 7)), ((2, 1, 5, 6), (2, 3)), ((1, 1, 1, 3), (4, 2)),
                                        ((1, 1, 4, 2), (1, 5))])
def test_interpolate_gradcheck(backend, shape, size, align_corners):
    x = backend.asarray(np.random.default_rng(3).standard_normal(shape))
    r = check_backward(functools.partial(F.interpolate_bilinear, size=size, align_corners=align_corners),
                       F.interpolate_bilinear_backward, [x])
    assert r.ok, str(r)
    assert r.max_error < 1e-8, str(r)


@pytest.mark.parametrize("align_corners", [False, True])
def test_interpolate_gradcheck_random_directions(backend, align_corners):
    x = backend.asarray(np.random.default_rng(4).standard_normal((2, 3, 17, 12)))
    r = check_backward(functools.partial(F.interpolate_bilinear, size=(61, 41), align_corners=align_corners),
                       F.interpolate_bilinear_backward, [x], directions=3)
    assert r.ok, str(r)


def test_backward_is_the_adjoint(backend):
    """<A x, dy> == <x, A^T dy>: the backward is the transposed linear map."""
    rng = np.random.default_rng(5)
    x, dy = rng.standard_normal((2, 2, 6, 9)), rng.standard_normal((2, 2, 10, 4))
    y, cache = F.interpolate_bilinear(backend.asarray(x), (10, 4), False)
    dx = to_numpy(F.interpolate_bilinear_backward(backend.asarray(dy), cache))
    assert abs(float((to_numpy(y) * dy).sum()) - float((x * dx).sum())) < 1e-12


def _torch_case(torch, x, size, align_corners, dy):
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.interpolate(tx, size=size, mode="bilinear", align_corners=align_corners)
    ty.backward(torch.tensor(dy))
    return ty.detach().numpy(), tx.grad.numpy()


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_interpolate_agrees_with_torch(dtype, tol, align_corners):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    sizes = [((7, 5), (21, 15)), ((33, 31), (8, 9)), ((9, 13), (13, 9)), ((1, 4), (5, 1)), ((32, 32), (256, 256)),
             ((64, 48), (64, 48)), ((3, 3), (2, 2))]
    # and a few random up/down pairs the fixed list does not cover
    sizes += [((int(a), int(b)), (int(c), int(d))) for a, b, c, d in rng.integers(1, 40, size=(6, 4))]
    for (h, w), size in sizes:
        x = rng.standard_normal((2, 3, h, w)).astype(dtype)
        y, cache = F.interpolate_bilinear(x, size, align_corners)
        dy = rng.standard_normal(y.shape).astype(dtype)
        ty, tdx = _torch_case(torch, x, size, align_corners, dy)
        scale = max(1.0, h * w / (size[0] * size[1]))        # dx sums up to ~H*W/(OH*OW) terms
        np.testing.assert_allclose(y, ty, rtol=tol, atol=tol, err_msg=f"forward {(h, w)} -> {size}")
        np.testing.assert_allclose(F.interpolate_bilinear_backward(dy, cache), tdx, rtol=tol,
                                   atol=tol * scale, err_msg=f"backward {(h, w)} -> {size}")


def test_interpolate_int_size_means_square():
    x = np.random.default_rng(7).standard_normal((1, 1, 3, 5))
    np.testing.assert_array_equal(F.interpolate_bilinear(x, 4)[0], F.interpolate_bilinear(x, (4, 4))[0])


def test_interpolate_rejects_bad_input(backend):
    x = backend.asarray(np.ones((1, 2, 5, 6)))
    for size in [(0, 3), (3, -1), 0, (2.5, 3), (2, 3, 4), "7", (True, 3), None, ()]:
        with pytest.raises(ValueError, match=r"size must be a positive int or a pair of positive ints "
                                             r"\(OH, OW\), got " + __import__("re").escape(repr(size))):
            F.interpolate_bilinear(x, size)
    for ac in [1, "yes", None]:
        with pytest.raises(ValueError, match=r"align_corners must be a bool \(True or False\), got " + repr(ac)):
            F.interpolate_bilinear(x, (3, 3), ac)
    with pytest.raises(ValueError, match=r"input x must be 4-D \(N, C, H, W\), got shape \(2, 5, 6\)"):
        F.interpolate_bilinear(backend.asarray(np.ones((2, 5, 6))), (3, 3))
    with pytest.raises(ValueError, match=r"input x must be a floating-point array .* got dtype .*int64"):
        F.interpolate_bilinear(backend.asarray(np.ones((1, 1, 2, 2), dtype=np.int64)), (3, 3))
    with pytest.raises(ValueError, match=r"spatial size >= 1x1, got shape \(1, 2, 0, 6\)"):
        F.interpolate_bilinear(backend.asarray(np.ones((1, 2, 0, 6))), (3, 3))
    _, cache = F.interpolate_bilinear(x, (3, 4))
    with pytest.raises(ValueError, match=r"dy must have shape \(N, C, 3, 4\) and dtype .*float64, "
                                         r"got shape \(1, 2, 4, 3\)"):
        F.interpolate_bilinear_backward(backend.asarray(np.ones((1, 2, 4, 3))), cache)
