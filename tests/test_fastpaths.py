"""The performance paths give the same numbers as the plain ones, on every backend.

* conv2d works in bands of output rows (``minifcn.backend.row_bands``) so that on a CPU
  its im2col columns stay in cache; forcing one-row bands everywhere must change
  nothing but rounding, and the banded backward must pass a float64 gradient check.
* conv_transpose2d splits its kernel into stride phases (one matmul, then a
  pixel-shuffle); it must agree with the plain col2im definition, and so must its
  channel-by-channel form for weights that are zero off the channel diagonal.
* max_pool2d finds its winners in backward by comparing slices with the output;
  ties still go to the first kernel offset.

tests/test_reference.py pins every fast path to minifcn.functional.reference.
"""
import numpy as np
import pytest

import reference as R
from minifcn import backend as B
from minifcn import functional as F
from minifcn.backend import to_numpy
from minifcn.functional.fast import bands, frame
from minifcn.functional.im2col import col2im, pair
from minifcn.gradcheck import check_backward


@pytest.fixture(autouse=True)
def fast_path():
    """These tests compare the fast paths with the reference: run F.* on the fast paths
    even under MINIFCN_REFERENCE=1 (the reference side is called explicitly)."""
    with F.use_reference(False):
        yield

# (x shape, weight shape, stride, padding, dilation): FCN shapes in miniature
CONV_CASES = [
    ((1, 3, 6, 5), (4, 3, 3, 3), 1, 3, 1),       # conv1_1-like: padding beyond the kernel's reach
    ((1, 2, 4, 3), (3, 2, 3, 2), 1, (5, 1), (2, 1)),  # ... with dilation, in one direction only
    ((2, 2, 7, 6), (3, 2, 3, 3), 1, 1, 1),       # 3x3 same-padding, batch 2
    ((1, 4, 9, 9), (5, 4, 7, 7), 1, 0, 1),       # fc6-like: 7x7 valid
    ((1, 2, 8, 7), (2, 2, 3, 2), 2, (1, 0), 2),  # stride and dilation
]


def _conv_all(backend, case, bias=True):
    x_shape, w_shape, s, p, d = case
    rng = np.random.default_rng(3)
    x, w = backend.asarray(rng.standard_normal(x_shape)), backend.asarray(rng.standard_normal(w_shape))
    b = backend.asarray(rng.standard_normal(w_shape[0])) if bias else None
    y, cache = F.conv2d(x, w, b, s, p, d)
    dy = backend.asarray(rng.standard_normal(tuple(y.shape)))
    return (y,) + F.conv2d_backward(dy, cache)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_banded_equals_one_band(backend, case, monkeypatch):
    monkeypatch.setattr(B, "BAND_ELEMENTS", 10**12)
    whole = _conv_all(backend, case)
    monkeypatch.setattr(B, "BAND_ELEMENTS", 1)       # as few output rows per band as allowed
    monkeypatch.setattr(bands, "MIN_BAND_COLUMNS", 1)
    banded = _conv_all(backend, case)
    for a, b in zip(banded, whole):
        R.assert_close(a, to_numpy(b), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("case", [((1, 3, 6, 5), (4, 3, 3, 3), 1, 1, 1),     # 3x3 same padding
                                  ((2, 2, 7, 6), (3, 2, 3, 2), 1, (0, 1), (2, 1)),   # dilation, valid rows
                                  ((1, 4, 5, 5), (4, 4, 1, 1), 1, 0, 1)])    # 1x1
def test_conv2d_dx_as_convolution_equals_col2im(backend, case, monkeypatch):
    x_shape, w_shape, s, p, d = case
    assert bands.dx_by_convolution(w_shape, (s, s), pair(p), pair(d))
    by_conv = _conv_all(backend, case)
    monkeypatch.setattr(bands, "dx_by_convolution", lambda *args: False)
    by_fold = _conv_all(backend, case)
    for a, b in zip(by_conv, by_fold):
        R.assert_close(a, to_numpy(b), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES[:2])
def test_conv2d_bias_borders_match_the_loop_reference(backend, case):
    """Outputs whose window sees only padding are filled with the bias, not computed."""
    x_shape, w_shape, s, p, d = case
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    y, _ = F.conv2d(backend.asarray(x), backend.asarray(w), backend.asarray(b), s, p, d)
    R.assert_close(y, R.conv2d(x, w, b, s, p, d))


def test_row_bands_cover_the_rows_once(monkeypatch):
    like = np.zeros(1, np.float32)
    monkeypatch.setattr(B, "CPU_BAND_ELEMENTS", 100)
    bands = B.row_bands(23, 30, like)
    assert bands[0][0] == 0 and bands[-1][1] == 23
    assert all(a[1] == b[0] for a, b in zip(bands, bands[1:]))
    assert [r1 - r0 for r0, r1 in bands] == [3] * 7 + [2]
    assert B.row_bands(23, 30, like, min_rows=10) == [(0, 10), (10, 20), (20, 23)]
    monkeypatch.setattr(B, "BAND_ELEMENTS", 1)
    assert B.row_bands(5, 30, like, min_rows=2) == [(0, 2), (2, 4), (4, 5)]    # min_rows always holds
    monkeypatch.setattr(B, "BAND_ELEMENTS", None)
    strict = pytest.importorskip("array_api_strict")
    assert B.row_bands(23, 30, strict.zeros(1)) == [(0, 23)]    # non-CPU-NumPy: one band


@pytest.mark.parametrize("case", [((1, 2, 3, 4), (2, 2, 3, 3), 1, 2, 1), ((2, 1, 5, 3), (2, 1, 3, 2), 2, 1, 1),
                                  ((1, 2, 2, 3), (2, 2, 3, 3), 1, (4, 3), 1),   # padding beyond the kernel's reach
                                  ((1, 2, 2, 2), (3, 2, 1, 1), 1, 2, 1)])       # 1x1 with padding: bias borders
def test_conv2d_banded_gradcheck(backend, case, monkeypatch):
    monkeypatch.setattr(B, "BAND_ELEMENTS", 1)
    monkeypatch.setattr(bands, "MIN_BAND_COLUMNS", 1)
    x_shape, w_shape, s, p, d = case
    rng = np.random.default_rng(5)
    x, w, b = (backend.asarray(rng.standard_normal(sh)) for sh in (x_shape, w_shape, (w_shape[0],)))

    def forward(x, w, b):
        return F.conv2d(x, w, b, s, p, d)

    report = check_backward(forward, F.conv2d_backward, [x, w, b], seed=1)
    assert report.ok, report


@pytest.mark.parametrize("case", [((1, 2, 6, 8), 2, 2, 0, True),    # windows tile the input exactly
                                  ((2, 1, 5, 7), 2, 2, 0, True),    # ceil mode pads with -inf
                                  ((1, 1, 6, 6), 3, 2, 1, False)])  # overlapping windows
def test_max_pool2d_ties_go_to_the_first_offset(backend, case):
    shape, k, s, p, ceil = case
    rng = np.random.default_rng(2)
    x = rng.integers(0, 3, shape).astype(np.float64)                 # many ties
    y, cache = F.max_pool2d(backend.asarray(x), k, s, p, ceil)
    y_ref, winners = R.max_pool2d(x, k, s, p, ceil)
    R.assert_close(y, y_ref)
    dy = rng.standard_normal(y_ref.shape)
    R.assert_close(F.max_pool2d_backward(backend.asarray(dy), cache), R.max_pool2d_backward(dy, shape, winners))


# (x shape, weight shape (C_in, C_out, KH, KW), stride, padding, dilation)
CONVT_CASES = [
    ((1, 3, 4, 5), (3, 3, 16, 16), 8, 0, 1),      # FCN upscore8
    ((2, 2, 3, 3), (2, 3, 4, 4), 2, 1, 1),        # upscore2 with padding
    ((1, 2, 3, 2), (2, 1, 5, 3), (3, 2), (1, 0), (1, 2)),   # kernel not a multiple of the stride, dilation
    ((1, 1, 2, 3), (1, 2, 2, 2), 3, 0, 1),        # stride > kernel leaves gaps
]


@pytest.mark.parametrize("case", CONVT_CASES)
def test_conv_transpose2d_phases_equal_col2im(backend, case):
    """y = col2im(W^T x) and, by adjointness, dx = W im2col(dy), dW = x im2col(dy)^T."""
    x_shape, w_shape, s, p, d = case
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    n, c_in, h, wd = x_shape
    _, c_out, kh, kw = w_shape
    y, cache = F.conv_transpose2d(backend.asarray(x), backend.asarray(w), None, s, p, d)
    oh, ow = y.shape[2:]
    cols = np.swapaxes(w.reshape(c_in, -1), 0, 1) @ x.reshape(n, c_in, h * wd)
    R.assert_close(y, to_numpy(col2im(cols, (n, c_out, oh, ow), (kh, kw), s, p, d)))
    dy = rng.standard_normal((n, c_out, oh, ow))
    dx, dw, _ = F.conv_transpose2d_backward(backend.asarray(dy), cache)
    dcols, _ = F.im2col(dy, (kh, kw), s, p, d)
    R.assert_close(dx, (w.reshape(c_in, -1) @ dcols).reshape(x_shape))
    R.assert_close(dw, np.sum(x.reshape(n, c_in, -1) @ np.swapaxes(dcols, 1, 2), axis=0).reshape(w_shape))


# (channels, kernel, stride, padding, dilation, output_padding, input H, W)
DIAGONAL_CASES = [
    (3, 16, 8, 0, 1, 0, 4, 5),          # FCN upscore8
    (2, 4, 2, 1, 1, 0, 3, 3),           # upscore2 with padding
    (2, (5, 3), (3, 2), (1, 0), (1, 2), (2, 1), 3, 2),   # kernel not a multiple of the stride, dilation
    (1, 2, 3, 0, 1, 2, 2, 3),           # one channel; stride > kernel leaves gaps
    (3, 3, 1, 1, 1, 0, 4, 4),           # stride 1
]


def _diagonal_weight(rng, c, k):
    kh, kw = pair(k)
    w = np.zeros((c, c, kh, kw))
    for i in range(c):
        w[i, i] = rng.standard_normal((kh, kw))
    return w


@pytest.mark.parametrize("case", DIAGONAL_CASES)
def test_conv_transpose2d_diagonal_weight_equals_reference(backend, case):
    """A weight that is zero off the channel diagonal (bilinear upsampling) runs channel by
    channel and gives the reference's output and gradients, for every need_dx/need_dweight."""
    from minifcn.functional import reference
    from minifcn.functional.fast.diagonal import DiagonalCache
    c, k, s, p, d, op, h, w = case
    rng = np.random.default_rng(8)
    x, wt, b = rng.standard_normal((2, c, h, w)), _diagonal_weight(rng, c, k), rng.standard_normal(c)
    y, cache = F.conv_transpose2d(backend.asarray(x), backend.asarray(wt), backend.asarray(b), s, p, d, op)
    assert isinstance(cache.conv, DiagonalCache)
    y_ref, cache_ref = reference.conv_transpose2d(x, wt, b, s, p, d, op)
    R.assert_close(y, y_ref)
    dy = rng.standard_normal(tuple(y.shape))
    want = reference.conv_transpose2d_backward(dy, cache_ref)
    assert np.abs(want[1][0, 1 % c]).max() > 0 or c == 1      # off-diagonal gradients are not zero
    for need_dx, need_dweight in ((True, True), (True, False), (False, True)):
        got = F.conv_transpose2d_backward(backend.asarray(dy), cache, need_dx, need_dweight)
        for g, ref, needed in zip(got, want, (need_dx, need_dweight, True)):
            if needed:
                R.assert_close(g, ref)
            else:
                assert g is None


def test_conv_transpose2d_diagonal_weight_gradcheck(backend):
    rng = np.random.default_rng(9)
    x, wt = backend.asarray(rng.standard_normal((1, 2, 3, 2))), backend.asarray(_diagonal_weight(rng, 2, 4))

    def forward(x, w):
        return F.conv_transpose2d(x, w, None, 2, 1)

    report = check_backward(forward, F.conv_transpose2d_backward, [x, wt], seed=2)
    assert report.ok, report


def test_channel_diagonal_only_for_zero_off_diagonal_weights(backend):
    from minifcn.functional.fast.diagonal import channel_diagonal
    rng = np.random.default_rng(10)
    w = _diagonal_weight(rng, 3, 4)
    assert channel_diagonal(backend.asarray(w))
    assert channel_diagonal(backend.asarray(w[:1, :1]))
    assert not channel_diagonal(backend.asarray(np.ones((2, 3, 4, 4))))     # not square in the channels
    for bad in (1e-300, np.nan, np.inf):
        w2 = w.copy()
        w2[2, 0, 3, 1] = bad
        assert not channel_diagonal(backend.asarray(w2))


def test_parallel_for_returns_results_in_order_and_raises(monkeypatch):
    monkeypatch.setattr(B, "THREADS", 3)
    like = np.zeros(1)
    out = np.zeros(50)

    def square(i):
        out[i] = i * i
        return i * i

    assert B.parallel_for(square, [(i,) for i in range(50)], like) == [i * i for i in range(50)]
    np.testing.assert_array_equal(out, np.arange(50) ** 2)
    nested = B.parallel_for(lambda i: sum(B.parallel_for(square, [(j,) for j in range(i)], like)),
                            [(i,) for i in range(8)], like)
    assert nested == [sum(j * j for j in range(i)) for i in range(8)]

    def fail(i):
        if i == 7:
            raise ValueError("band 7 failed")
        return i

    with pytest.raises(ValueError, match="band 7 failed"):
        B.parallel_for(fail, [(i,) for i in range(20)], like)
    assert B.parallel_for(square, [(2,), (3,)], like) == [4, 9]       # the pool still works


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_parallel_for_leaves_the_callers_blas_threads_as_they_were(monkeypatch, threads):
    """Bands call BLAS with one thread; afterwards the caller's BLAS has its thread count back
    (NumPy's OpenBLAS applies the per-thread setting process-wide), also after an error,
    so a user's own matrix products do not stay on one core after a minifcn call."""
    before = B.blas_threads()
    if before is None or B.threads._openblas_set_local() is None:
        pytest.skip("NumPy's OpenBLAS thread count cannot be read or set here")
    monkeypatch.setattr(B, "THREADS", threads)
    B.threads._POOL.executor, B.threads._POOL.size = None, 0          # fresh helper threads
    like = np.zeros(1)
    for _ in range(20):                                                 # helpers start at different times
        B.parallel_for(lambda i: np.ones((8, 8)) @ np.ones((8, 8)), [(i,) for i in range(6)], like)
        assert B.blas_threads() == before
    with pytest.raises(ZeroDivisionError):
        B.parallel_for(lambda i: 1 / 0, [(0,), (1,)], like)
    assert B.blas_threads() == before
    x, w = np.ones((1, 4, 40, 40), np.float32), np.ones((4, 4, 3, 3), np.float32)
    F.conv2d_backward(np.ones((1, 4, 40, 40), np.float32), F.conv2d(x, w, None, 1, 1)[1])
    assert B.blas_threads() == before


def test_one_blas_thread_holds_blas_at_one_thread_and_gives_it_back():
    """A training step runs inside one_blas_thread: BLAS on one thread (band loops inside
    keep it there), the caller's thread count back afterwards, also after an error."""
    before = B.blas_threads()
    if before is None or B.threads._openblas_set_local() is None:
        pytest.skip("NumPy's OpenBLAS thread count cannot be read or set here")
    x, w = np.ones((1, 4, 40, 40), np.float32), np.ones((4, 4, 3, 3), np.float32)
    with B.one_blas_thread():
        assert B.blas_threads() == 1
        F.conv2d_backward(np.ones((1, 4, 40, 40), np.float32), F.conv2d(x, w, None, 1, 1)[1])
        assert B.blas_threads() == 1
    assert B.blas_threads() == before
    with pytest.raises(ZeroDivisionError):
        with B.one_blas_thread():
            1 / 0
    assert B.blas_threads() == before


def test_interpolation_in_channel_groups_equals_one_group(monkeypatch):
    """Bilinear resizing runs in groups of channels on the cores (no multi-threaded BLAS
    call in a step): many groups give the same numbers as one, forward and backward, and
    both equal A_h @ x @ A_w^T."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 21, 9, 11)).astype(np.float32)
    dy = rng.standard_normal((2, 21, 40, 30)).astype(np.float32)
    results = []
    for elements in (40 * 30, 10**12):                              # about one channel per group; one group
        monkeypatch.setattr(B, "BAND_ELEMENTS", elements)
        y, cache = F.interpolate_bilinear(x, (40, 30))
        results.append((y, F.interpolate_bilinear_backward(dy, cache)))
    for a, e in zip(*results):
        np.testing.assert_array_equal(a, e)
    a_h, a_w = (a.astype(np.float64) for a in cache)
    np.testing.assert_allclose(results[0][0], np.einsum("ih,nchw,jw->ncij", a_h, x, a_w), rtol=1e-5, atol=1e-5)


def test_parallel_for_thread_counts_give_identical_conv_gradients(monkeypatch):
    """Partial weight gradients are summed in band order, so the thread count changes nothing."""
    monkeypatch.setattr(bands, "MIN_BAND_COLUMNS", 1)
    monkeypatch.setattr(B, "BAND_ELEMENTS", 50)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 3, 17, 9)).astype(np.float32), rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    _assert_same_for_thread_counts(monkeypatch, x, w, (1, 2, 4))


def _assert_same_for_thread_counts(monkeypatch, x, w, thread_counts):
    """conv2d's output, dx and dweight are bit-identical for every thread count."""
    results = []
    for threads in thread_counts:
        monkeypatch.setattr(B, "THREADS", threads)
        y, cache = F.conv2d(x, w, None, 1, 1)
        results.append((y,) + F.conv2d_backward(np.ones_like(y), cache)[:2])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_band_boundaries_do_not_depend_on_the_core_count(monkeypatch):
    """Same numbers on a 1-, 2- or 16-core machine: band sizes come from the data sizes only
    (a conv5-like layer, where splitting among the cores used to pick the band height)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 72, 30, 30)).astype(np.float32)
    w = rng.standard_normal((4, 72, 3, 3)).astype(np.float32)
    _assert_same_for_thread_counts(monkeypatch, x, w, (1, 2, 16))


@pytest.mark.parametrize("dilation", [1, 2, 12])
def test_small_outputs_split_the_weight_gradient_among_the_cores(monkeypatch, dilation):
    """A 32x32 output (DeepLab's conv5 and fc6) gets MIN_BANDS weight-gradient bands, as its
    forward does, instead of one band on one core; the gradient still equals the reference."""
    from minifcn.functional import reference
    seen = []
    inner = bands.parallel_for

    def recording(fn, items, like):
        seen.append(list(items))
        return inner(fn, items, like)

    monkeypatch.setattr(bands, "parallel_for", recording)
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((1, 64, 32, 32)), rng.standard_normal((4, 64, 3, 3))
    _, cache = bands.conv2d(x, w, None, (1, 1), (dilation, dilation), (dilation, dilation))
    dy = rng.standard_normal((1, 4, 32, 32))
    seen.clear()
    _, dw, _ = bands.conv2d_backward(dy, cache, need_dx=False)
    assert sum(task[0] == "dw" for task in seen[0]) == bands.MIN_BANDS
    _, ref_cache = reference.conv2d(x, w, None, 1, dilation, dilation)
    R.assert_close(dw, reference.conv2d_backward(dy, ref_cache, need_dx=False)[1])


@pytest.mark.parametrize("case", [((1, 6, 9, 9), (40, 6, 7, 7), 0, 1),     # fc6-like: 7x7 valid on 9x9
                                  ((2, 5, 4, 4), (80, 5, 1, 1), 0, 1),     # fc7-like 1x1, batch 2
                                  ((1, 3, 6, 5), (70, 3, 3, 3), 2, 2)])    # padding and dilation
def test_wide_short_convolutions_split_by_channels_equal_reference(case, monkeypatch):
    """When the weight outweighs the columns (fc6, fc7: 1024 channels on 9x9), the GEMMs are
    shared among the cores by output channels; output, dx and dweight still equal the
    reference, and are bit-identical for any thread count."""
    from minifcn.functional import reference
    x_shape, w_shape, p, d = case
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    y_ref, ref_cache = reference.conv2d(x, w, b, (1, 1), (p, p), (d, d))
    assert bands.split_by_channels(x_shape[0], w_shape[0], y_ref.shape[2] * y_ref.shape[3], x)
    dy = rng.standard_normal(y_ref.shape)
    chunks = []
    inner = bands.channel_chunks
    monkeypatch.setattr(bands, "channel_chunks", lambda c: chunks.append(c) or inner(c))
    y, cache = bands.conv2d(x, w, b, (1, 1), (p, p), (d, d))
    got = (y,) + bands.conv2d_backward(dy, cache)
    assert chunks, "the channel split was not taken"
    for a, e in zip(got, (y_ref,) + reference.conv2d_backward(dy, ref_cache)):
        R.assert_close(a, e, atol=1e-10, rtol=1e-10)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    results = []
    for threads in (1, 2, 5):
        monkeypatch.setattr(B, "THREADS", threads)
        y32, c32 = bands.conv2d(x32, w32, None, (1, 1), (p, p), (d, d))
        results.append((y32,) + bands.conv2d_backward(np.ones_like(y32), c32)[:2])
    for other in results[1:]:
        for a, e in zip(results[0], other):
            np.testing.assert_array_equal(a, e)


def test_channel_split_gradcheck(backend):
    """float64 gradient check of a wide, short convolution: through the channel split on
    NumPy, through the row bands it replaces on the other backends."""
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((12, 2, 3, 3)), rng.standard_normal(12)
    inputs = [backend.asarray(a) for a in (x, w, b)]
    assert bands.split_by_channels(1, 12, 4, inputs[0]) == (backend.name == "numpy")

    def forward(x, w, b):
        return bands.conv2d(x, w, b, (1, 1), (0, 0), (1, 1))

    report = check_backward(forward, bands.conv2d_backward, inputs, seed=2)
    assert report.ok, report


def test_channel_split_only_for_weights_bigger_than_columns(backend):
    x = backend.asarray(np.zeros((1, 1, 1, 1)))
    assert bands.split_by_channels(1, 1024, 81, x) == (backend.name == "numpy")
    assert not bands.split_by_channels(1, 21, 81, np.zeros(1))          # score layer
    assert not bands.split_by_channels(1, 256, 32 * 32, np.zeros(1))    # DeepLab's fc6 at width 1/4
    assert [c for c in bands.channel_chunks(1000)] == [(o, min(o + 125, 1000)) for o in range(0, 1000, 125)]


def _framed(shape, box, seed=0, ring=(0, 0)):
    """x with one random value per (n, c) plane outside ``box`` = (r0, r1, c0, c1), random
    inside it and in an outer ring of ``ring = (a, b)`` rows/columns (top/left, bottom/right)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    (a, b), (h, w) = ring, shape[2:]
    x[:, :, a:h - b, a:w - b] = rng.standard_normal(shape[:2] + (1, 1))
    r0, r1, c0, c1 = box
    x[:, :, r0:r1, c0:c1] = rng.standard_normal(shape[:2] + (r1 - r0, c1 - c0))
    return x


FRAME_CASES = [((1, 2, 14, 13), (5, 8, 4, 9), (3, 2, 3, 3), 1, 1),       # 3x3 same padding
               ((2, 3, 16, 15), (6, 9, 6, 10), (2, 3, 3, 3), 1, (0, 2)),  # batch 2, padding on one side
               ((1, 2, 15, 14), (6, 8, 5, 8), (2, 2, 3, 2), 1, 0, (2, 1)),  # dilation, no padding
               ((1, 2, 18, 17), (7, 10, 7, 9), (3, 2, 3, 3), 1, 1, 1, (2, 1)),  # an outer ring (after training)
               ((2, 2, 16, 16), (6, 9, 7, 10), (2, 2, 3, 3), 1, 0, 1, (1, 3))]  # ring, no padding


@pytest.mark.parametrize("case", FRAME_CASES)
def test_conv2d_constant_frame_computed_once_equals_plain(case, monkeypatch):
    x_shape, box, w_shape, s, p, *rest = case
    d, ring = (rest + [1, (0, 0)][len(rest):])[:2]
    monkeypatch.setattr(B, "FRAME_MIN_PIXELS", 1)
    x = _framed(x_shape, box, ring=ring)
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    assert B.constant_frame(x) == (box, ring)
    assert frame.frame_plan(x, (1, 1), pair(p), pair(d), w_shape[2:]) is not None
    y, cache = F.conv2d(x, w, b, s, p, d)
    R.assert_close(y, R.conv2d(x, w, b, s, p, d))
    dy = rng.standard_normal(y.shape)
    framed = F.conv2d_backward(dy, cache)
    monkeypatch.setattr(frame, "frame_plan", lambda *args: None)
    plain = F.conv2d_backward(dy, F.conv2d(x, w, b, s, p, d)[1])
    for a, e in zip(framed, plain):
        R.assert_close(a, e, atol=1e-12, rtol=1e-12)


def test_conv2d_constant_frame_gradcheck(monkeypatch):
    monkeypatch.setattr(B, "FRAME_MIN_PIXELS", 1)
    x = _framed((1, 2, 16, 15), (6, 9, 6, 9), seed=2, ring=(1, 1))
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((2, 2, 3, 3)), rng.standard_normal(2)
    assert isinstance(F.conv2d(x, w, b, 1, 1)[1], frame.ConvCache)

    def forward(w, b):              # w.r.t. the weights (x keeps its frame)
        return F.conv2d(x, w, b, 1, 1)

    def backward(dy, cache):
        return F.conv2d_backward(dy, cache, need_dx=False)[1:]

    report = check_backward(forward, backward, [w, b], seed=4)
    assert report.ok, report


def test_constant_frame_is_found_only_on_numpy(backend):
    x = _framed((1, 2, 70, 66), (20, 40, 10, 50), ring=(3, 2))
    expected = ((20, 40, 10, 50), (3, 2)) if backend.name == "numpy" else None
    assert B.constant_frame(backend.asarray(x)) == expected
    assert B.constant_frame(np.ones((1, 2, 70, 66))) is None               # all constant: nothing to gain


def test_sgd_in_row_bands_equals_one_band_and_updates_in_place(backend, monkeypatch):
    """SGD updates each parameter in cache-sized row bands on all cores, in place."""
    from minifcn.layers import Parameter
    from minifcn.optim import SGD

    rng = np.random.default_rng(4)
    shapes = [(5, 3, 3, 3), (5,), ()]

    def run(band_elements):
        monkeypatch.setattr(B, "BAND_ELEMENTS", band_elements)
        params = [Parameter(backend.asarray(rng.standard_normal(s)), decay_mult=float(len(s) > 1)) for s in shapes]
        opt = SGD([(str(i), p) for i, p in enumerate(params)], lr=0.1, momentum=0.9, weight_decay=0.01)
        data, before = [p.data for p in params], [to_numpy(p.data).copy() for p in params]
        for step in range(3):
            for p in params:
                p.grad = backend.asarray(rng.standard_normal(p.shape))
            opt.step(lr=0.1 / (step + 1))
        assert all(p.data is d for p, d in zip(params, data))       # modified, not replaced
        assert not any(np.array_equal(to_numpy(p.data), b) for p, b in zip(params, before))
        return [to_numpy(p.data) for p in params] + [to_numpy(v) for v in opt.state_dict().values()]

    state = rng.bit_generator.state
    banded = run(1)                                                   # one row per band
    rng.bit_generator.state = state
    whole = run(10**12)
    for a, b in zip(banded, whole):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("case", [((1, 6, 8, 8), (20, 6, 7, 7), 6, 2),      # front-end fc6-like: C_out > 2 C_in, dilated
                                  ((2, 3, 7, 6), (4, 3, 3, 3), 1, 1)])      # batch 2, folded (dx_by_convolution off)
def test_short_outputs_fold_the_input_gradient_by_channels(backend, case, monkeypatch):
    """An output too short for MIN_BANDS input-gradient bands folds its input gradient
    by chunks of input channels on NumPy (the row bands elsewhere): equal to the reference,
    bit-identical for any thread count, and it passes a float64 gradient check."""
    from minifcn.functional import reference
    x_shape, w_shape, p, d = case
    monkeypatch.setattr(bands, "dx_by_convolution", lambda *args: False)
    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    folds = []
    inner = bands._fold_channels
    monkeypatch.setattr(bands, "_fold_channels", lambda *a: folds.append(a[1].shape) or inner(*a))
    y_ref, ref_cache = reference.conv2d(x, w, b, (1, 1), (p, p), (d, d))
    dy = rng.standard_normal(y_ref.shape)
    args = [backend.asarray(a) for a in (x, w, b)]
    y, cache = bands.conv2d(*args, (1, 1), (p, p), (d, d))
    got = (y,) + bands.conv2d_backward(backend.asarray(dy), cache)
    assert bool(folds) == (backend.name == "numpy")
    for a, e in zip(got, (y_ref,) + reference.conv2d_backward(dy, ref_cache)):
        R.assert_close(a, e, atol=1e-10, rtol=1e-10)
    if backend.name == "numpy":
        x32, w32 = x.astype(np.float32), w.astype(np.float32)
        results = []
        for threads in (1, 2, 5):
            monkeypatch.setattr(B, "THREADS", threads)
            y32, c32 = bands.conv2d(x32, w32, None, (1, 1), (p, p), (d, d))
            results.append(bands.conv2d_backward(np.ones_like(y32), c32)[:2])
        for other in results[1:]:
            for a, e in zip(results[0], other):
                np.testing.assert_array_equal(a, e)
    small = [backend.asarray(a) for a in (x[:, :2, :5, :5], w[:, :2, :3, :3], b)]

    def forward(x, w, b):
        return bands.conv2d(x, w, b, (1, 1), (1, 1), (d, d))

    report = check_backward(forward, bands.conv2d_backward, small, seed=3)
    assert report.ok, report


@pytest.mark.parametrize("case", [((1, 6, 8, 8), (64, 6, 3, 3), 2, 2),      # front-end fc6-like: weight outweighs a band
                                  ((2, 5, 6, 6), (80, 5, 3, 3), 1, 1)])     # batch 2
def test_big_weights_get_their_gradient_by_input_channels(backend, case, monkeypatch):
    """A weight of at least BIG_WEIGHT elements that outweighs a band's columns gets its
    gradient by chunks of input channels on NumPy (band shares elsewhere): equal to the
    reference, bit-identical for any thread count, and it passes a float64 gradient check."""
    from minifcn.functional import reference
    x_shape, w_shape, p, d = case
    monkeypatch.setattr(bands, "BIG_WEIGHT", 64)
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    taken = []
    inner = bands._dweight_by_channels
    monkeypatch.setattr(bands, "_dweight_by_channels", lambda *a: taken.append(a[2]) or inner(*a))
    y_ref, ref_cache = reference.conv2d(x, w, b, (1, 1), (p, p), (d, d))
    dy = rng.standard_normal(y_ref.shape)
    args = [backend.asarray(a) for a in (x, w, b)]
    y, cache = bands.conv2d(*args, (1, 1), (p, p), (d, d))
    got = (y,) + bands.conv2d_backward(backend.asarray(dy), cache)
    assert bool(taken) == (backend.name == "numpy")
    for a, e in zip(got, (y_ref,) + reference.conv2d_backward(dy, ref_cache)):
        R.assert_close(a, e, atol=1e-10, rtol=1e-10)
    if backend.name == "numpy":
        x32, w32 = x.astype(np.float32), w.astype(np.float32)
        results = []
        for threads in (1, 2, 5):
            monkeypatch.setattr(B, "THREADS", threads)
            y32, c32 = bands.conv2d(x32, w32, None, (1, 1), (p, p), (d, d))
            results.append(bands.conv2d_backward(np.ones_like(y32), c32)[:2])
        for other in results[1:]:
            for a, e in zip(results[0], other):
                np.testing.assert_array_equal(a, e)
    small = [backend.asarray(a) for a in (x[:, :2, :5, :5], w[:, :2, :3, :3], b)]

    def forward(x, w, b):
        return bands.conv2d(x, w, b, (1, 1), (1, 1), (d, d))

    report = check_backward(forward, bands.conv2d_backward, small, seed=3)
    assert report.ok, report
