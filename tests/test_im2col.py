"""im2col / col2im and the output-size arithmetic."""
import itertools

import numpy as np
import pytest

import reference as R
from minifcn import functional as F
from minifcn.backend import to_numpy
from minifcn.functional.im2col import pair

# (x shape, kernel, stride, padding, dilation)
CASES = [((2, 3, 5, 6), 3, 1, 1, 1), ((1, 2, 7, 5), (3, 2), (2, 1), (1, 2), (1, 2)),
         ((1, 1, 4, 4), 1, 2, 0, 1), ((1, 2, 8, 9), 3, 3, 0, 2), ((1, 1, 1, 1), 3, 1, 1, 1)]


def test_pair():
    assert pair(3) == (3, 3) and pair((2, 1)) == (2, 1) and pair([4, 5]) == (4, 5)
    with pytest.raises(ValueError, match=r"kernel_size must be an int or a pair of ints, got \(1, 2, 3\)"):
        pair((1, 2, 3), "kernel_size")


def test_output_sizes_count_the_windows():
    """conv_output_size is the number of dilated windows that fit in the padded input;
    conv_transpose_output_size is the inverse map when it is exact."""
    for size, k, s, p, d in itertools.product(range(1, 10), range(1, 5), range(1, 4), range(0, 3), range(1, 3)):
        span = d * (k - 1) + 1
        fits = sum(1 for start in range(0, size + 2 * p, s) if start + span <= size + 2 * p)
        if fits:
            assert F.conv_output_size(size, k, s, p, d) == fits
            out = F.conv_transpose_output_size(fits, k, s, p, d)
            assert size - s < out <= size                 # the rows conv reads, at most s - 1 short
            assert F.conv_output_size(out, k, s, p, d) == fits


@pytest.mark.parametrize("shape,k,s,p,d", CASES)
def test_im2col_columns_are_receptive_fields(backend, shape, k, s, p, d):
    x = np.random.default_rng(0).standard_normal(shape)
    cols, (oh, ow) = F.im2col(backend.asarray(x), k, s, p, d)
    cols = to_numpy(cols)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(pair, (k, s, p, d))
    n, c, h, w = shape
    assert cols.shape == (n, c * kh * kw, oh * ow)
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    for i, j in itertools.product(range(oh), range(ow)):
        field = xpad[:, :, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw]
        np.testing.assert_array_equal(cols[:, :, i * ow + j], field.reshape(n, -1))


@pytest.mark.parametrize("shape,k,s,p,d", CASES)
def test_col2im_is_the_adjoint_of_im2col(backend, shape, k, s, p, d):
    rng = np.random.default_rng(1)
    x = backend.asarray(rng.standard_normal(shape))
    cols, _ = F.im2col(x, k, s, p, d)
    c = backend.asarray(rng.standard_normal(tuple(cols.shape)))
    back = F.col2im(c, shape, k, s, p, d)
    assert tuple(back.shape) == shape
    xp = backend.xp
    lhs, rhs = float(xp.sum(cols * c)), float(xp.sum(x * back))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


def test_col2im_counts_window_overlaps(backend):
    """Folding columns of ones counts how many windows cover each pixel."""
    shape, k, s, p = (1, 1, 5, 5), 3, 1, 1
    cols, _ = F.im2col(backend.asarray(np.zeros(shape)), k, s, p)
    counts = to_numpy(F.col2im(backend.xp.ones_like(cols), shape, k, s, p))
    edge = np.array([2, 3, 3, 3, 2])
    np.testing.assert_array_equal(counts[0, 0], np.outer(edge, edge))


def test_pad2d(backend):
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    y = to_numpy(F.pad2d(backend.asarray(x), (1, 2), value=-1.0))
    np.testing.assert_array_equal(y, np.pad(x, ((0, 0), (0, 0), (1, 1), (2, 2)), constant_values=-1.0))
    R.assert_close(F.pad2d(backend.asarray(x), 0), x, atol=0, rtol=0)


@pytest.mark.parametrize("shape,k,s,p,d", CASES)
def test_im2col_and_col2im_agree_with_torch_unfold_and_fold(shape, k, s, p, d):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).standard_normal(shape)
    cols, _ = F.im2col(x, k, s, p, d)
    ref = torch.nn.functional.unfold(torch.tensor(x), k, dilation=d, padding=p, stride=s).numpy()
    R.assert_close(cols, ref, atol=0, rtol=0)
    c = np.random.default_rng(3).standard_normal(cols.shape)
    folded = torch.nn.functional.fold(torch.tensor(c), shape[2:], k, dilation=d, padding=p, stride=s).numpy()
    R.assert_close(F.col2im(c, shape, k, s, p, d), folded)
