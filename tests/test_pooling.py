"""max_pool2d: output sizes and values against a loop reference (ceil mode, padding,
overlapping windows), gradient checks, ties, input validation, PyTorch cross-check."""
import functools

import numpy as np
import pytest

import reference as R
from minifcn import functional as F
from minifcn.backend import to_numpy
from minifcn.gradcheck import check_backward

# (x shape, kernel, stride, padding, ceil_mode)
POOL_CASES = [
    ((2, 2, 5, 7), 2, 2, 0, True),            # FCN pools: odd sizes, last window hangs over the edge
    ((1, 2, 5, 7), 2, 2, 0, False),           # the same in floor mode drops the last row/column
    ((1, 2, 6, 5), 3, 2, 1, True),            # padding + ceil mode
    ((1, 1, 7, 6), 3, 1, 1, False),           # stride < kernel: overlapping windows
    ((1, 2, 7, 8), (3, 2), (2, 3), (1, 0), True),  # asymmetric
    ((1, 1, 4, 4), 2, 3, 0, True),            # stride > kernel
    ((1, 1, 1, 1), 2, 2, 1, True),            # 1x1 input with padding
    ((1, 1, 3, 3), 3, 3, 0, False),           # one window covering everything
]


def _ids(cases):
    return [f"x{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}-{'ceil' if c[4] else 'floor'}" for c in cases]


def distinct(shape, seed=0):
    """Values spaced 0.01 apart in random order: no ties, so finite differences are exact."""
    rng = np.random.default_rng(seed)
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01 - 1.0


@pytest.mark.parametrize("case", POOL_CASES, ids=_ids(POOL_CASES))
def test_max_pool2d_matches_loop_reference(backend, case):
    shape, k, s, p, ceil = case
    x = np.random.default_rng(1).standard_normal(shape)
    y, cache = F.max_pool2d(backend.asarray(x), k, s, p, ceil)
    y_ref, winners = R.max_pool2d(x, k, s, p, ceil)
    R.assert_close(y, y_ref)
    dy = np.random.default_rng(2).standard_normal(y_ref.shape)
    R.assert_close(F.max_pool2d_backward(backend.asarray(dy), cache), R.max_pool2d_backward(dy, shape, winners))


@pytest.mark.parametrize("case", POOL_CASES, ids=_ids(POOL_CASES))
def test_max_pool2d_gradcheck(backend, case):
    shape, k, s, p, ceil = case
    fwd = functools.partial(F.max_pool2d, kernel_size=k, stride=s, padding=p, ceil_mode=ceil)
    r = check_backward(fwd, F.max_pool2d_backward, [backend.asarray(distinct(shape))], eps=1e-4)
    assert r.ok, str(r)


def test_max_pool2d_gradcheck_random_directions(backend):
    fwd = functools.partial(F.max_pool2d, kernel_size=3, stride=2, padding=1, ceil_mode=True)
    r = check_backward(fwd, F.max_pool2d_backward, [backend.asarray(distinct((2, 4, 15, 12), seed=3))],
                       eps=1e-4, directions=3)
    assert r.ok, str(r)


def test_fcn_pool_sizes_round_up(backend):
    """VGG's 2x2/2 ceil-mode pools map 500 -> 250 -> 125 -> 63 -> 32 -> 16 (FCN's geometry)."""
    sizes = [500]
    for _ in range(5):
        sizes.append(F.pool_output_size(sizes[-1], 2, 2, 0, ceil_mode=True))
    assert sizes == [500, 250, 125, 63, 32, 16]
    y, _ = F.max_pool2d(backend.asarray(np.zeros((1, 1, 125, 63))), 2, 2, ceil_mode=True)
    assert tuple(y.shape) == (1, 1, 63, 32)


def test_ceil_mode_never_starts_a_window_in_the_padding():
    # 5 + 2*1 - 2 = 5, ceil(5/2) + 1 = 4 windows would start at -1, 1, 3, 5; the last lies
    # entirely in the bottom padding and is dropped.
    assert F.pool_output_size(5, 2, 2, 1, ceil_mode=True) == 3
    assert R.pool_windows(5, 2, 2, 1, True) == [-1, 1, 3]
    for size in range(1, 12):
        for k in range(1, 5):
            for s in range(1, 5):
                for p in range(0, k // 2 + 1):
                    for ceil in (False, True):
                        if size + 2 * p >= k:
                            assert F.pool_output_size(size, k, s, p, ceil) == len(R.pool_windows(size, k, s, p, ceil))


def test_ties_send_the_gradient_to_exactly_one_element(backend):
    # All-equal input with overlapping windows: every window is a tie.
    x = backend.asarray(np.zeros((1, 2, 5, 5)))
    y, cache = F.max_pool2d(x, 3, 1, 1)
    dy = np.ones(tuple(y.shape))
    dx = to_numpy(F.max_pool2d_backward(backend.asarray(dy), cache))
    assert dx.sum() == dy.sum()                      # nothing lost, nothing duplicated
    # each window's unit gradient landed on one pixel: entries are whole numbers
    assert np.array_equal(dx, np.round(dx))
    # the first maximum in row-major order wins, as in PyTorch and the loop reference
    _, winners = R.max_pool2d(np.zeros((1, 2, 5, 5)), 3, 1, 1)
    np.testing.assert_array_equal(dx, R.max_pool2d_backward(dy, (1, 2, 5, 5), winners))
    # non-overlapping tied windows: one 1 per window
    y, cache = F.max_pool2d(backend.asarray(np.full((1, 1, 4, 6), 3.0)), 2, 2)
    dx = to_numpy(F.max_pool2d_backward(backend.asarray(np.ones((1, 1, 2, 3))), cache))
    windows = dx.reshape(2, 2, 3, 2).transpose(0, 2, 1, 3).reshape(6, 4)
    assert np.array_equal(windows.sum(axis=1), np.ones(6)) and np.array_equal(windows.max(axis=1), np.ones(6))


def test_float32_stays_float32(backend):
    x = backend.asarray(distinct((1, 2, 5, 5)), dtype="float32")
    y, cache = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    assert y.dtype == backend.xp.float32
    assert F.max_pool2d_backward(y, cache).dtype == backend.xp.float32


def test_padding_never_wins(backend):
    x = backend.asarray(np.full((1, 1, 3, 3), -5.0))
    y, cache = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    assert np.all(to_numpy(y) == -5.0)
    dx = F.max_pool2d_backward(backend.asarray(np.ones(tuple(y.shape))), cache)
    assert float(backend.xp.sum(dx)) == float(np.prod(y.shape))


def test_max_pool2d_rejects_bad_input(backend):
    def a(*shape, dtype="float64"):
        return backend.asarray(np.ones(shape), dtype=dtype)
    with pytest.raises(ValueError, match=r"max_pool2d input x must be 4-D \(N, C, H, W\), got shape \(3, 4\)"):
        F.max_pool2d(a(3, 4), 2)
    with pytest.raises(ValueError, match=r"floating-point array .* got dtype .*int64"):
        F.max_pool2d(a(1, 1, 4, 4, dtype="int64"), 2)
    with pytest.raises(ValueError, match=r"padding \(2, 2\) must be at most half the kernel size \(3, 3\)"):
        F.max_pool2d(a(1, 1, 4, 4), 3, padding=2)
    with pytest.raises(ValueError, match=r"kernel 4x4 is larger than the padded input 3x5"):
        F.max_pool2d(a(1, 1, 3, 5), 4, 1)
    with pytest.raises(ValueError, match=r"stride >= 1 .* stride=0"):
        F.max_pool2d(a(1, 1, 4, 4), 2, 0)


# ------------------------------------------------------------------ PyTorch cross-check
TORCH_POOL_CASES = POOL_CASES + [
    ((1, 2, 9, 4), 3, 2, 1, True),            # H != W, ceil + padding
    ((1, 1, 2, 2), 3, 2, 0, True),            # kernel larger than input, ceil keeps one window
    ((2, 1, 10, 7), 2, 4, 1, True),           # stride > kernel with padding
    ((1, 1, 6, 6), (1, 3), (3, 1), (0, 1), False),
]


@pytest.mark.parametrize("case", TORCH_POOL_CASES, ids=_ids(TORCH_POOL_CASES))
def test_max_pool2d_agrees_with_torch(case):
    torch = pytest.importorskip("torch")
    shape, k, s, p, ceil = case
    x = np.random.default_rng(4).standard_normal(shape)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, k, s, p, 1, ceil)
    y, cache = F.max_pool2d(x, k, s, p, ceil)
    R.assert_close(y, ty.detach().numpy(), atol=0, rtol=0)
    dy = np.random.default_rng(5).standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    R.assert_close(F.max_pool2d_backward(dy, cache), tx.grad.numpy())


def test_max_pool2d_agrees_with_torch_on_random_shapes_and_ties():
    """400 random geometries on inputs with many ties; sizes, values, gradients and
    the set of invalid geometries must all agree."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    for _ in range(400):
        h, w = rng.integers(1, 10, 2)
        kh, kw = rng.integers(1, 5, 2)
        s, p, ceil = tuple(rng.integers(1, 5, 2)), tuple(rng.integers(0, 3, 2)), bool(rng.integers(2))
        x = rng.integers(0, 3, (2, 2, h, w)).astype(float)   # small integers: ties everywhere
        where = f"x{x.shape} k{(kh, kw)} s{s} p{p} ceil={ceil}"
        tx = torch.tensor(x, requires_grad=True)
        try:
            ty = torch.nn.functional.max_pool2d(tx, (kh, kw), s, p, 1, ceil)
        except RuntimeError:
            with pytest.raises(ValueError):
                F.max_pool2d(x, (kh, kw), s, p, ceil)
            continue
        y, cache = F.max_pool2d(x, (kh, kw), s, p, ceil)
        assert y.shape == tuple(ty.shape), where
        np.testing.assert_array_equal(y, ty.detach().numpy(), err_msg=where)
        dy = rng.standard_normal(y.shape)
        ty.backward(torch.tensor(dy))
        np.testing.assert_allclose(F.max_pool2d_backward(dy, cache), tx.grad.numpy(), atol=1e-12, err_msg=where)
