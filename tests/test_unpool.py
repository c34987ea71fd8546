"""max_unpool2d: loop reference (forward scatter, backward gather), repeated indices
summed, the adjoint relation, equality with max-pool's backward, float64 gradient
checks on every backend, the portable scatter, PyTorch cross-checks, input validation."""
import functools
import itertools

import numpy as np
import pytest

import reference as R
from minifcn import functional as F
from minifcn.backend import to_numpy
from minifcn.backend import scatter_add_rows_portable
from minifcn.gradcheck import check_backward


def unpool_loop(x, indices, out_size):
    """y[n, c, k // W, k % W] += x[n, c, i, j] for k = indices[n, c, i, j]."""
    n, c, h, w = x.shape
    oh, ow = out_size
    y = np.zeros((n, c, oh, ow))
    for b, ch, i, j in itertools.product(range(n), range(c), range(h), range(w)):
        k = int(indices[b, ch, i, j])
        y[b, ch, k // ow, k % ow] += x[b, ch, i, j]
    return y


def unpool_backward_loop(dy, indices):
    n, c, h, w = indices.shape
    ow = dy.shape[3]
    dx = np.zeros(indices.shape)
    for b, ch, i, j in itertools.product(range(n), range(c), range(h), range(w)):
        k = int(indices[b, ch, i, j])
        dx[b, ch, i, j] = dy[b, ch, k // ow, k % ow]
    return dx


def pool_indices_loop(x, kernel, stride, padding, ceil_mode):
    """Max pool with the loop reference; indices = row * W + col of each window's winner."""
    y, winners = R.max_pool2d(x, kernel, stride, padding, ceil_mode)
    w = x.shape[3]
    idx = np.zeros(y.shape, dtype=np.int64)
    for key, (r, s) in winners.items():
        idx[key] = r * w + s
    return y, idx, winners


def distinct(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01 - 1.0


# (pooled input shape, kernel, stride, padding, ceil_mode)
POOL_CASES = [
    ((2, 3, 5, 7), 2, 2, 0, True),        # SegNet's pools on odd sizes: the last window is cut
    ((1, 2, 6, 4), 2, 2, 0, False),       # even sizes, floor mode
    ((2, 2, 7, 6), 3, 2, 1, True),        # overlapping windows: positions can repeat
    ((1, 1, 6, 5), 3, 1, 1, False),       # stride 1: many repeats
    ((1, 2, 1, 1), 2, 2, 0, True),        # a 1x1 plane
    ((3, 1, 9, 2), (3, 2), (2, 3), (1, 0), True),
]
IDS = [f"{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}-{'ceil' if c[4] else 'floor'}" for c in POOL_CASES]


@pytest.mark.parametrize("case", POOL_CASES, ids=IDS)
def test_max_unpool2d_matches_loop_reference(backend, case):
    shape, k, s, p, ceil = case
    x = distinct(shape, seed=1)
    pooled, idx, _ = pool_indices_loop(x, k, s, p, ceil)
    v = np.random.default_rng(2).standard_normal(pooled.shape)
    y, cache = F.max_unpool2d(backend.asarray(v), backend.asarray(idx), shape[2:])
    R.assert_close(y, unpool_loop(v, idx, shape[2:]))
    dy = np.random.default_rng(3).standard_normal(shape)
    R.assert_close(F.max_unpool2d_backward(backend.asarray(dy), cache), unpool_backward_loop(dy, idx))


@pytest.mark.parametrize("case", POOL_CASES, ids=IDS)
def test_max_unpool2d_is_max_pool_backward(backend, case):
    """Unpooling dy with the pool's indices is max-pool's gradient: repeats are summed."""
    shape, k, s, p, ceil = case
    x = distinct(shape, seed=4)
    pooled, idx, winners = pool_indices_loop(x, k, s, p, ceil)
    dy = np.random.default_rng(5).standard_normal(pooled.shape)
    y, _ = F.max_unpool2d(backend.asarray(dy), backend.asarray(idx), shape[2:])
    R.assert_close(y, R.max_pool2d_backward(dy, shape, winners))
    _, pool_cache = F.max_pool2d(backend.asarray(x), k, s, p, ceil)
    R.assert_close(y, to_numpy(F.max_pool2d_backward(backend.asarray(dy), pool_cache)), atol=1e-14)


@pytest.mark.parametrize("case", POOL_CASES, ids=IDS)
def test_round_trip_with_max_pool2d_with_indices(backend, case):
    """The pool's indices are the loop reference's; unpool(pool(x)) keeps each window's maximum
    in place (zeros elsewhere); unpooling dy equals max_pool2d_backward of the same cache."""
    shape, k, s, p, ceil = case
    x = distinct(shape, seed=14)
    y, idx, cache = F.max_pool2d_with_indices(backend.asarray(x), k, s, p, ceil)
    y_ref, idx_ref, winners = pool_indices_loop(x, k, s, p, ceil)
    assert idx.dtype == backend.xp.int64
    np.testing.assert_array_equal(to_numpy(idx), idx_ref)
    up, _ = F.max_unpool2d(y, idx, shape[2:])
    kept = np.zeros(shape)
    for key, (r, c) in winners.items():
        kept[key[0], key[1], r, c] = x[key[0], key[1], r, c]
    np.testing.assert_array_equal(to_numpy(up) != 0, kept != 0)
    if k == s:                         # non-overlapping windows: each winner appears once
        R.assert_close(up, kept)
    dy = np.random.default_rng(15).standard_normal(y_ref.shape)
    back, _ = F.max_unpool2d(backend.asarray(dy), idx, shape[2:])
    R.assert_close(back, to_numpy(F.max_pool2d_backward(backend.asarray(dy), cache)), atol=1e-14)


def test_repeated_indices_are_summed(backend):
    x = np.array([[[[1.0, 2.0], [4.0, 8.0]]]])
    idx = np.array([[[[5, 5], [0, 5]]]], dtype=np.int64)
    y, _ = F.max_unpool2d(backend.asarray(x), backend.asarray(idx), (2, 3))
    R.assert_close(y, np.array([[[[4.0, 0, 0], [0, 0, 11.0]]]]))


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (4, 9)])
def test_random_indices_with_repeats(backend, size):
    """Indices that no pool would make (any order, any repeats) still scatter-add."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 3, 4))
    idx = rng.integers(0, size[0] * size[1], x.shape)
    y, cache = F.max_unpool2d(backend.asarray(x), backend.asarray(idx), size)
    R.assert_close(y, unpool_loop(x, idx, size), atol=1e-14)
    dy = rng.standard_normal((2, 3) + size)
    R.assert_close(F.max_unpool2d_backward(backend.asarray(dy), cache), unpool_backward_loop(dy, idx))


def test_adjoint(backend):
    """<unpool(x), dy> == <x, unpool_backward(dy)>: the gather is the scatter's transpose."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 5, 3))
    idx = rng.integers(0, 9 * 7, x.shape)
    dy = rng.standard_normal((2, 4, 9, 7))
    y, cache = F.max_unpool2d(backend.asarray(x), backend.asarray(idx), (9, 7))
    dx = F.max_unpool2d_backward(backend.asarray(dy), cache)
    xp = backend.xp
    lhs = float(xp.sum(y * backend.asarray(dy)))
    rhs = float(xp.sum(backend.asarray(x) * dx))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


@pytest.mark.parametrize("case", POOL_CASES[:4], ids=IDS[:4])
def test_max_unpool2d_gradcheck(backend, case):
    shape, k, s, p, ceil = case
    pooled, idx, _ = pool_indices_loop(distinct(shape), k, s, p, ceil)
    x = np.random.default_rng(8).standard_normal(pooled.shape)
    fwd = functools.partial(F.max_unpool2d, output_size=shape[2:])
    r = check_backward(fwd, F.max_unpool2d_backward, [backend.asarray(x), backend.asarray(idx)])
    assert r.ok, str(r)
    assert r.checked == x.size


def test_max_unpool2d_gradcheck_random_directions(backend):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 5, 8, 6))
    idx = rng.integers(0, 15 * 12, x.shape)
    fwd = functools.partial(F.max_unpool2d, output_size=(15, 12))
    r = check_backward(fwd, F.max_unpool2d_backward, [backend.asarray(x), backend.asarray(idx)], directions=4)
    assert r.ok, str(r)


def test_portable_scatter_equals_native():
    """The gather-only scatter (used by namespaces without a native one) on NumPy arrays."""
    rng = np.random.default_rng(10)
    for p, k, size in [(3, 7, 5), (2, 12, 3), (4, 1, 1), (1, 6, 40), (5, 0, 4)]:
        values = rng.standard_normal((p, k))
        index = rng.integers(0, size, (p, k))
        expected = np.zeros((p, size))
        for row, col in itertools.product(range(p), range(k)):
            expected[row, index[row, col]] += values[row, col]
        got = scatter_add_rows_portable(values, index, size)
        np.testing.assert_allclose(got, expected, atol=1e-14)
        assert got.shape == (p, size)


def test_full_output_size_and_float32(backend):
    xp = backend.xp
    x = backend.asarray(np.ones((1, 2, 2, 2)), dtype="float32")
    idx = backend.asarray(np.array([0, 3, 12, 15] * 2).reshape(1, 2, 2, 2), dtype="int32")
    y, cache = F.max_unpool2d(x, idx, (1, 2, 4, 4))
    assert tuple(y.shape) == (1, 2, 4, 4) and y.dtype == xp.float32
    assert float(xp.sum(y)) == 8.0
    dx = F.max_unpool2d_backward(y, cache)
    assert dx.dtype == xp.float32 and tuple(dx.shape) == (1, 2, 2, 2)


def test_no_channels_give_empty_arrays_both_ways(backend):
    """N*C = 0: forward and backward return empty arrays of the right shapes (no gather)."""
    x = backend.asarray(np.zeros((2, 0, 2, 3)), dtype="float32")
    idx = backend.asarray(np.zeros((2, 0, 2, 3)), dtype="int64")
    y, cache = F.max_unpool2d(x, idx, (4, 6))
    assert tuple(y.shape) == (2, 0, 4, 6)
    dx = F.max_unpool2d_backward(y, cache)
    assert tuple(dx.shape) == (2, 0, 2, 3) and dx.dtype == y.dtype


def _torch():
    return pytest.importorskip("torch")


TORCH_CASES = [((2, 3, 7, 5), 2, 2, 0, True), ((3, 2, 8, 6), 2, 2, 0, False), ((2, 2, 9, 11), (3, 2), (3, 2), 0, True),
               ((2, 1, 1, 3), 2, 2, 0, True)]


@pytest.mark.parametrize("case", TORCH_CASES, ids=[str(c[0]) for c in TORCH_CASES])
def test_max_unpool2d_matches_torch(case):
    """Indices from PyTorch's own pool (non-overlapping windows, ceil mode) unpool as PyTorch's."""
    torch = _torch()
    shape, k, s, p, ceil = case
    x = torch.tensor(distinct(shape, seed=11))
    pooled, idx = torch.nn.functional.max_pool2d(x, k, s, p, ceil_mode=ceil, return_indices=True)
    v = torch.tensor(np.random.default_rng(12).standard_normal(pooled.shape), requires_grad=True)
    ty = torch.nn.functional.max_unpool2d(v, idx, k, s, p, output_size=shape[2:])
    dy = np.random.default_rng(13).standard_normal(shape)
    ty.backward(torch.tensor(dy))
    assert idx.dtype == torch.int64
    y, cache = F.max_unpool2d(v.detach().numpy(), idx.numpy(), shape[2:])
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(F.max_unpool2d_backward(dy, cache), v.grad.numpy())


def test_bad_inputs(backend):
    b = backend.asarray
    x = b(np.ones((1, 2, 2, 2)))
    good = b(np.array([0, 3, 12, 15] * 2, dtype=np.int64).reshape(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"indices must have the input's shape \(N, C, h, w\) = \(1, 2, 2, 2\), "
                                         r"got \(1, 2, 2, 1\)"):
        F.max_unpool2d(x, b(np.zeros((1, 2, 2, 1), dtype=np.int64)), (4, 4))
    with pytest.raises(ValueError, match=r"indices must be an integer array.*got dtype \S*float64"):
        F.max_unpool2d(x, b(np.zeros((1, 2, 2, 2))), (4, 4))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, H\*W\) = \[0, 9\) for output_size \(3, 3\), "
                                         r"got index 15 .*output_size too small"):
        F.max_unpool2d(x, good, (3, 3))
    bad = b(np.array([0, 3, -2, 15] * 2, dtype=np.int64).reshape(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"got index -2 \(indices range from -2 to 15\)"):
        F.max_unpool2d(x, bad, (4, 4))
    with pytest.raises(ValueError, match=r"output_size must be two positive ints \(H, W\), got \(0, 4\)"):
        F.max_unpool2d(x, good, (0, 4))
    with pytest.raises(ValueError, match=r"output_size must be two positive ints \(H, W\), got \(4,\)"):
        F.max_unpool2d(x, good, (4,))
    with pytest.raises(ValueError, match=r"output_size must be two ints \(H, W\), got \(4.0, 4\)"):
        F.max_unpool2d(x, good, (4.0, 4))
    with pytest.raises(ValueError, match=r"output_size \(1, 3, 4, 4\) does not match the input's \(N, C\) = \(1, 2\)"):
        F.max_unpool2d(x, good, (1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"4-D \(N, C, h, w\), got shape \(2, 2, 2\)"):
        F.max_unpool2d(b(np.ones((2, 2, 2))), good, (4, 4))
    _, cache = F.max_unpool2d(x, good, (4, 4))
    with pytest.raises(ValueError, match=r"dy must have the output's shape \(1, 2, 4, 4\), got \(1, 2, 4, 3\)"):
        F.max_unpool2d_backward(b(np.ones((1, 2, 4, 3))), cache)


def test_exported():
    assert {"max_unpool2d", "max_unpool2d_backward"} <= set(F.__all__)
