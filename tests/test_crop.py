"""crop and its backward: loop reference, gradient check, validation."""
import functools

import numpy as np
import pytest

import reference as R
from minifcn import functional as F
from minifcn.backend import to_numpy
from minifcn.gradcheck import check_backward

CROP_CASES = [((1, 2, 5, 7), (1, 2), (3, 4)), ((2, 1, 4, 4), 0, 4), ((1, 3, 6, 3), (5, 0), (1, 3)),
              ((1, 1, 9, 8), (2, 3), 5)]


@pytest.mark.parametrize("shape,offset,size", CROP_CASES)
def test_crop_matches_loop_reference(backend, shape, offset, size):
    x = np.random.default_rng(0).standard_normal(shape)
    y, _ = F.crop(backend.asarray(x), offset, size)
    R.assert_close(y, R.crop(x, offset, size), atol=0, rtol=0)


@pytest.mark.parametrize("shape,offset,size", CROP_CASES)
def test_crop_gradcheck(backend, shape, offset, size):
    x = backend.asarray(np.random.default_rng(1).standard_normal(shape))
    r = check_backward(functools.partial(F.crop, offset=offset, size=size), F.crop_backward, [x])
    assert r.ok, str(r)


def test_crop_backward_is_zero_outside_the_window(backend):
    x = backend.asarray(np.ones((1, 1, 5, 6)))
    y, cache = F.crop(x, (1, 2), (3, 2))
    dx = to_numpy(F.crop_backward(backend.asarray(np.full((1, 1, 3, 2), 7.0)), cache))
    expected = np.zeros((1, 1, 5, 6))
    expected[:, :, 1:4, 2:4] = 7.0
    np.testing.assert_array_equal(dx, expected)
    assert dx.dtype == np.float64


def test_crop_rejects_bad_input(backend):
    x = backend.asarray(np.ones((1, 2, 5, 6)))
    with pytest.raises(ValueError, match=r"crop input x must be 4-D \(N, C, H, W\), got shape \(2, 5, 6\)"):
        F.crop(backend.asarray(np.ones((2, 5, 6))), 0, 2)
    with pytest.raises(ValueError, match=r"offset \(3, 0\) size \(3, 6\) does not fit .* spatial size \(5, 6\)"):
        F.crop(x, (3, 0), (3, 6))
    with pytest.raises(ValueError, match=r"offset \(-1, 0\)"):
        F.crop(x, (-1, 0), 2)
    with pytest.raises(ValueError, match=r"size \(0, 2\)"):
        F.crop(x, 0, (0, 2))
    with pytest.raises(ValueError, match=r"offset must be an int or a pair of ints, got \(1, 2, 3\)"):
        F.crop(x, (1, 2, 3), 2)


def test_crop_agrees_with_torch_slicing():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).standard_normal((2, 3, 7, 5))
    tx = torch.tensor(x, requires_grad=True)
    ty = tx[:, :, 2:6, 1:4]
    y, cache = F.crop(x, (2, 1), (4, 3))
    R.assert_close(y, ty.detach().numpy())
    dy = np.random.default_rng(3).standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    R.assert_close(F.crop_backward(dy, cache), tx.grad.numpy())


def test_crop_gradcheck_random_directions(backend):
    x = backend.asarray(np.random.default_rng(4).standard_normal((2, 8, 40, 37)))
    r = check_backward(functools.partial(F.crop, offset=(19, 5), size=(17, 30)), F.crop_backward, [x], directions=3)
    assert r.ok, str(r)


def test_non_integer_offsets_are_refused():
    with pytest.raises(ValueError, match=r"offset must be an int or a pair of ints, got \(1.5, 0\)"):
        F.crop(np.zeros((1, 1, 5, 5)), (1.5, 0), (2, 2))
