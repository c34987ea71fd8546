"""Initialisers: the bilinear kernel really interpolates; He-normal has the right scale."""
import math

import numpy as np
import pytest

from minifcn import functional as F
from minifcn import init
from minifcn.backend import to_numpy


def test_bilinear_filter_known_values():
    np.testing.assert_allclose(init.bilinear_filter(3)[1], [0.5, 1.0, 0.5])
    np.testing.assert_allclose(init.bilinear_filter(4)[0], 0.25 * np.array([0.25, 0.75, 0.75, 0.25]))
    np.testing.assert_allclose(init.bilinear_filter(4)[1], 0.75 * np.array([0.25, 0.75, 0.75, 0.25]))
    np.testing.assert_allclose(init.bilinear_filter(1), [[1.0]])
    for k in range(1, 9):
        f = init.bilinear_filter(k)
        np.testing.assert_allclose(f, f.T)                       # separable and symmetric
        np.testing.assert_allclose(f, f[::-1, ::-1])
        s = math.ceil(k / 2)
        assert abs(f.sum() - s * s) < 1e-12                      # upsampling by s preserves the mean
    with pytest.raises(ValueError, match="bilinear kernel size must be >= 1, got 0"):
        init.bilinear_filter(0)


def _interior(n_in, k, f):
    """Output positions t of a stride-f, unpadded transposed conv whose every
    contributing input i (0 <= t - i f < k) exists."""
    return [t for t in range((n_in - 1) * f + k) if -(-(t - k + 1) // f) >= 0 and t // f <= n_in - 1]


@pytest.mark.parametrize("k", [3, 4, 5, 6, 7, 8, 16])
def test_bilinear_kernel_upsamples_a_ramp(backend, k):
    """Upsampling a * i + b * j + c by f = ceil(k / 2) gives the same plane, sampled at
    input coordinates (t - centre) / f, everywhere away from the borders."""
    f = math.ceil(k / 2)
    centre = f - 1 if k % 2 else f - 0.5
    h, w = 5, 6
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ramp = 0.7 * i - 1.3 * j + 2.0
    x = np.stack([ramp, np.zeros_like(ramp), 3.0 - ramp])[None]              # (1, 3, H, W)
    weight = backend.asarray(init.bilinear_kernel(3, 3, k, dtype=np.float64))
    y, _ = F.conv_transpose2d(backend.asarray(x), weight, stride=f)
    y = to_numpy(y)
    assert y.shape == (1, 3, (h - 1) * f + k, (w - 1) * f + k)
    rows, cols = _interior(h, k, f), _interior(w, k, f)
    assert len(rows) >= (h - 2) * f and len(cols) >= (w - 2) * f
    u = (np.array(rows)[:, None] - centre) / f
    v = (np.array(cols)[None, :] - centre) / f
    expected = 0.7 * u - 1.3 * v + 2.0
    sub = np.ix_(rows, cols)
    np.testing.assert_allclose(y[0, 0][sub], expected, atol=1e-12)
    np.testing.assert_allclose(y[0, 2][sub], 3.0 - expected, atol=1e-12)
    assert np.all(y[0, 1] == 0.0)                                              # channels do not mix


def test_bilinear_kernel_is_diagonal():
    w = init.bilinear_kernel(3, 5, 4)
    assert w.shape == (3, 5, 4, 4) and w.dtype == np.float32
    for a in range(3):
        for b in range(5):
            if a == b:
                np.testing.assert_array_equal(w[a, b], init.bilinear_filter(4).astype(np.float32))
            else:
                assert not np.any(w[a, b])


@pytest.mark.parametrize("factor", [2, 4])
def test_bilinear_kernel_matches_torch_interpolate(factor):
    """With kernel 2f and padding f/2 the output is f*H and equals bilinear resizing
    (align_corners=False) away from the borders."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 7))
    y, _ = F.conv_transpose2d(x, init.bilinear_kernel(2, 2, 2 * factor, np.float64), stride=factor,
                              padding=factor // 2)
    ref = torch.nn.functional.interpolate(torch.tensor(x), scale_factor=factor, mode="bilinear",
                                          align_corners=False).numpy()
    assert y.shape == ref.shape == (1, 2, 6 * factor, 7 * factor)
    inner = (slice(None), slice(None), slice(factor, -factor), slice(factor, -factor))
    np.testing.assert_allclose(y[inner], ref[inner], atol=1e-12)


def test_he_normal_scale_shape_and_seed():
    w = init.he_normal((64, 32, 3, 3), rng=0)
    assert w.shape == (64, 32, 3, 3) and w.dtype == np.float32
    expected_std = math.sqrt(2.0 / (32 * 9))
    assert abs(w.std() / expected_std - 1) < 0.03 and abs(w.mean()) < 0.05 * expected_std
    np.testing.assert_array_equal(w, init.he_normal((64, 32, 3, 3), rng=0))
    assert not np.array_equal(w, init.he_normal((64, 32, 3, 3), rng=1))
    w = init.he_normal((16, 8, 4, 4), rng=np.random.default_rng(3), fan_in=100, dtype=np.float64)
    assert w.dtype == np.float64 and abs(w.std() / math.sqrt(2.0 / 100) - 1) < 0.05


def test_zeros():
    z = init.zeros((2, 3))
    assert z.dtype == np.float32 and z.shape == (2, 3) and not np.any(z)
