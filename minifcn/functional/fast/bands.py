"""Convolution band by band of output rows: equals :func:`..reference.conv2d` and its backward.

Why faster: im2col of a whole image is C*KH*KW times bigger than the image (119 MB for
conv1_2 of FCN-8s at width 1/4 and 256x256 input). Done a band of output rows at a
time, the columns of a band fit in a CPU core's cache, live in a reused buffer, and
the bands run on all cores (:func:`minifcn.backend.parallel_for`), each calling BLAS
with one thread. The input is kept for backward instead of the columns. On a GPU a
band is the whole image (:func:`minifcn.backend.row_bands`): one im2col kernel and one
cuBLAS GEMM, as in the reference.

For stride 1 the input gradient is computed as a convolution of dy
(:func:`dx_by_convolution`) rather than col2im of weight^T @ dy, which copies less.
"""
from __future__ import annotations

from ...backend import device, is_numpy, matmul, namespace, parallel_for, row_bands, scratch
from .. import reference
from ..im2col import fold_rows_add, pad2d, unfold_rows

MIN_BAND_COLUMNS = 1024        # fewer columns per band leave the GEMMs too thin
# Small outputs are still split into this many bands so that the cores share them. It is a
# constant, not the machine's core count: band boundaries change how BLAS rounds, and the
# same run must give the same numbers on any machine.
MIN_BANDS = 2
MIN_CHUNKS = 8                 # output-channel chunks of a convolution split by channels
SMALL_WEIGHT = 1 << 18         # weights up to this many elements get their gradient transposed
BIG_WEIGHT = 1 << 22           # weights from this many elements up get their gradient by input channels


class ConvCache(reference.ConvCache):
    """The banded plan keeps the input (columns are rebuilt band by band in backward):
    the reference cache's fields, its own type so that backward runs this plan."""

    __slots__ = ()


def split_by_channels(n, c_out, pixels, like):
    """Whether a convolution splits its GEMMs among the cores by output channels (rows of
    the weight) instead of by bands of output rows: when its weight is bigger than its
    columns, on NumPy (fc6 and fc7 of FCN: 1024 channels, 9x9 outputs). Row bands would
    each stream the whole weight through one core, and their weight-gradient shares
    would each be a weight-sized array to add up; channel chunks read the weight once
    and build the (small) columns once."""
    return is_numpy(like) and c_out > MIN_BANDS * n * pixels


def channel_chunks(c_out):
    """[(o0, o1), ...]: MIN_CHUNKS equal chunks of the output channels (a constant, not the
    core count, so that results do not depend on the machine)."""
    step = -(-c_out // MIN_CHUNKS)
    return [(o, min(o + step, c_out)) for o in range(0, c_out, step)]


def _min_band_rows(ow):
    return -(-MIN_BAND_COLUMNS // ow)


def _scratch_cols(xpad, kh, kw, rows, ow):
    """Reusable buffer for one band of im2col columns (see :func:`minifcn.backend.scratch`)."""
    n, c = xpad.shape[:2]
    return scratch((n, c, kh, kw, rows, ow), xpad.dtype, xpad)


def correlate(xpad, weight, bias, s, d, out_size):
    """y = weight (*) xpad for an already padded input: (N, C_out, OH, OW), band by band."""
    xp = namespace(xpad, weight)
    n = xpad.shape[0]
    c_out, c_in, kh, kw = weight.shape
    oh, ow = out_size
    w2 = xp.reshape(weight, (c_out, c_in * kh * kw))
    b2 = xp.reshape(bias, (c_out, 1)) if bias is not None else None
    y = xp.empty((n, c_out, oh, ow), dtype=xpad.dtype, device=device(xpad))

    def band(r0, r1):
        cols = unfold_rows(xpad, (kh, kw), s, d, (r0, r1), ow, _scratch_cols(xpad, kh, kw, r1 - r0, ow))
        yb = matmul(w2, cols, scratch((n, c_out, (r1 - r0) * ow), xpad.dtype, xpad, slot=1))
        if b2 is not None:
            yb += b2
        y[:, :, r0:r1, :] = xp.reshape(yb, (n, c_out, r1 - r0, ow))

    if split_by_channels(n, c_out, oh * ow, xpad):
        cols = unfold_rows(xpad, (kh, kw), s, d, (0, oh), ow)
        y3 = xp.reshape(y, (n, c_out, oh * ow))

        def chunk(o0, o1):
            yc = w2[o0:o1, :] @ cols
            y3[:, o0:o1, :] = yc + b2[o0:o1, :] if b2 is not None else yc

        parallel_for(chunk, channel_chunks(c_out), xpad)
        return y

    min_rows = min(_min_band_rows(ow), -(-oh // MIN_BANDS))
    parallel_for(band, row_bands(oh, n * c_in * kh * kw * ow, xpad, min_rows), xpad)
    return y


def backward_bands(xpad, dy, weight, s, d, dxpad):
    """Band loop of the backward pass: returns dweight as (C_out, C_in*KH*KW) when
    ``xpad`` is given, and folds weight^T @ dy into ``dxpad`` when that is given.

    For small weights the bands compute dweight^T = cols @ dy^T, which OpenBLAS runs
    up to twice as fast as dy @ cols^T when C_out is small; big ones (fc6) are not
    worth the final transpose. The band shares are summed in band order, so the result
    does not depend on which thread finished first."""
    xp = namespace(dy, weight)
    n, c_out, oh, ow = dy.shape
    _, c_in, kh, kw = weight.shape
    w2t = xp.matrix_transpose(xp.reshape(weight, (c_out, c_in * kh * kw)))
    small = c_out * c_in * kh * kw <= SMALL_WEIGHT

    def band(part, r0, r1):
        dyb = xp.reshape(dy[:, :, r0:r1, :], (n, c_out, (r1 - r0) * ow))
        if part == "dx":
            dcols = matmul(w2t, dyb, scratch((n, c_in * kh * kw, (r1 - r0) * ow), dy.dtype, dy, slot=1))
            fold_rows_add(dxpad, dcols, (kh, kw), s, d, (r0, r1), ow)
            return None
        cols = unfold_rows(xpad, (kh, kw), s, d, (r0, r1), ow, _scratch_cols(xpad, kh, kw, r1 - r0, ow))
        # this band's share of dweight (transposed for small weights), summed over N
        share = cols @ xp.matrix_transpose(dyb) if small else dyb @ xp.matrix_transpose(cols)
        return share[0, ...] if n == 1 else xp.sum(share, axis=0)

    # Weight-gradient bands are independent, and small outputs still get MIN_BANDS of
    # them, as in the forward. Input-gradient bands fold into the input rows they share
    # with their neighbours (the kernel overlap) but not with bands two apart once a band
    # spans (KH - 1)*DH input rows: so the even ones go with the weight gradient, then
    # the odd ones. When that leaves fewer than MIN_BANDS of them on NumPy (a short output,
    # the dilation front end's fc6: 32 rows, one band), the input gradient is shared by
    # input channels instead (:func:`_fold_channels`).
    if split_by_channels(n, c_out, oh * ow, dy):
        return _backward_by_channels(xpad, dy, weight, s, d, dxpad)
    per_row = n * c_in * kh * kw * ow
    dw_bands = row_bands(oh, per_row, dy, min(_min_band_rows(ow), -(-oh // MIN_BANDS))) if xpad is not None else []
    dw_by_channels = dw_bands and dweight_by_channels(weight.shape, n * (dw_bands[0][1] - dw_bands[0][0]) * ow, dy)
    if dw_by_channels:
        dw_bands = []
    dx_bands = row_bands(oh, per_row, dy, max(_min_band_rows(ow), -(-(kh - 1) * d[0] // s[0])))
    tasks = [("dw",) + b for b in dw_bands]
    by_channels = dxpad is not None and is_numpy(dy) and len(dx_bands) < MIN_BANDS
    if by_channels:
        fold = _fold_channels(dy, weight, s, d, dxpad)
        tasks += [("dxc",) + c for c in channel_chunks(c_in)]
    elif dxpad is not None:
        tasks += [("dx",) + b for b in dx_bands[0::2]]
    partial = parallel_for(lambda part, a, b: fold(a, b) if part == "dxc" else band(part, a, b), tasks, dy)
    if dxpad is not None and not by_channels:
        parallel_for(band, [("dx",) + b for b in dx_bands[1::2]], dy)
    if xpad is None:
        return None
    if dw_by_channels:
        return _dweight_by_channels(xpad, dy, weight.shape, s, d)
    dw2 = partial[0]
    for part in partial[1:len(dw_bands)]:
        dw2 += part         # in place: each share is a fresh array; the order is the band order
    return xp.matrix_transpose(dw2) if small else dw2


def dweight_by_channels(w_shape, band_pixels, like):
    """Whether the weight gradient is computed by chunks of input channels rather than
    summed from band shares: on NumPy, for a weight of at least BIG_WEIGHT elements that
    outweighs a band's columns (the dilation front end's fc6: 6.4 M elements, 16 x 32
    pixels a band). Each band share would be another weight-sized array (26 MB there);
    a chunk of input channels needs only its own columns."""
    c_out, c_in, kh, kw = w_shape
    return is_numpy(like) and c_out * c_in * kh * kw >= BIG_WEIGHT and c_out >= band_pixels


def _dweight_by_channels(xpad, dy, w_shape, s, d):
    """dweight (C_out, C_in*KH*KW), chunk by chunk of input channels: the chunk's columns
    in a reused buffer, then dy @ columns^T, a whole sum over the pixels per element."""
    xp = namespace(dy)
    n, c_out, oh, ow = dy.shape
    _, c_in, kh, kw = w_shape
    dy3 = xp.reshape(dy, (n, c_out, oh * ow))
    dw2 = xp.empty((c_out, c_in * kh * kw), dtype=dy.dtype, device=device(dy))

    def chunk(c0, c1):
        part = xpad[:, c0:c1, :, :]
        cols = unfold_rows(part, (kh, kw), s, d, (0, oh), ow, _scratch_cols(part, kh, kw, oh, ow))
        share = dy3 @ xp.matrix_transpose(cols)
        dw2[:, c0 * kh * kw:c1 * kh * kw] = share[0, ...] if n == 1 else xp.sum(share, axis=0)

    parallel_for(chunk, channel_chunks(c_in), dy)
    return dw2


def _fold_channels(dy, weight, s, d, dxpad):
    """fold(c0, c1): the input channels c0:c1 of the input gradient, folded into
    ``dxpad[:, c0:c1]``: weight[:, c0:c1]^T @ dy (their rows of the columns' gradient,
    in a reused buffer), then col2im. Chunks of input channels write disjoint parts of
    dxpad, so they run on all cores whatever the output's height."""
    xp = namespace(dy, weight)
    n, c_out, oh, ow = dy.shape
    _, c_in, kh, kw = weight.shape
    dy3 = xp.reshape(dy, (n, c_out, oh * ow))
    w2t = xp.matrix_transpose(xp.reshape(weight, (c_out, c_in * kh * kw)))

    def fold(c0, c1):
        rows = scratch((n, (c1 - c0) * kh * kw, oh * ow), dy.dtype, dy, slot=1)
        dcols = matmul(w2t[c0 * kh * kw:c1 * kh * kw, :], dy3, rows)
        fold_rows_add(dxpad[:, c0:c1], dcols, (kh, kw), s, d, (0, oh), ow)

    return fold


def _backward_by_channels(xpad, dy, weight, s, d, dxpad):
    """:func:`backward_bands` for a convolution :func:`split_by_channels`: the columns are
    built once, dweight is computed in chunks of output channels (each a whole sum over
    the pixels), weight^T @ dy in chunks of its rows, and then folded once."""
    xp = namespace(dy, weight)
    n, c_out, oh, ow = dy.shape
    _, c_in, kh, kw = weight.shape
    k = c_in * kh * kw
    dy3 = xp.reshape(dy, (n, c_out, oh * ow))
    dw2 = None
    if xpad is not None:
        cols_t = xp.matrix_transpose(unfold_rows(xpad, (kh, kw), s, d, (0, oh), ow))    # (N, OH OW, K)
        dw2 = xp.empty((c_out, k), dtype=dy.dtype, device=device(dy))

        def dw_chunk(o0, o1):
            share = dy3[:, o0:o1, :] @ cols_t
            dw2[o0:o1, :] = share[0, ...] if n == 1 else xp.sum(share, axis=0)

        parallel_for(dw_chunk, channel_chunks(c_out), dy)
    if dxpad is not None:
        parallel_for(_fold_channels(dy, weight, s, d, dxpad), channel_chunks(c_in), dy)
    return dw2


def dx_by_convolution(w_shape, s, p, d):
    """Whether dx of a conv is cheaper as a convolution of dy than as col2im(weight^T @ dy).

    For stride 1, dx[c, i, j] = sum_{o, ky, kx} weight[o, c, ky, kx] dy[o, i + P - ky D, j + P - kx D]:
    a stride-1 convolution of dy, padded by D(K - 1) - P (>= 0 needed), with the kernel
    flipped and its channel axes swapped. Its im2col copies C_out*KH*KW rows where col2im
    adds C_in*KH*KW rows into overlapping windows, so it pays unless C_out >> C_in.
    """
    c_out, c_in, kh, kw = w_shape
    return (s == (1, 1) and p[0] <= d[0] * (kh - 1) and p[1] <= d[1] * (kw - 1)
            and c_out <= 2 * c_in)


def flipped_kernel(weight):
    """weight (C_out, C_in, KH, KW) -> (C_in, C_out, KH, KW) flipped in both spatial axes:
    the kernel whose stride-1 convolution of dy is dx (:func:`dx_by_convolution`)."""
    xp = namespace(weight)
    return xp.permute_dims(xp.flip(weight, axis=(2, 3)), (1, 0, 2, 3))


def input_gradient(dy, weight, s, p, d, x_size, dxpad=None):
    """dx (N, C_in, H, W) of a convolution: as a convolution of dy where
    :func:`dx_by_convolution` says so, else from ``dxpad`` (already folded by
    :func:`backward_bands`) or by folding now."""
    (h, w), (kh, kw) = x_size, weight.shape[2:]
    if dx_by_convolution(weight.shape, s, p, d):   # a full convolution with the flipped, transposed kernel
        flipped = flipped_kernel(weight)
        dypad = pad2d(dy, (d[0] * (kh - 1) - p[0], d[1] * (kw - 1) - p[1]), slot=3)
        return correlate(dypad, flipped, None, (1, 1), d, (h, w))
    if dxpad is None:
        dxpad = zeros_padded(dy, weight.shape[1], x_size, p)
        backward_bands(None, dy, weight, s, d, dxpad)
    return dxpad[:, :, p[0]:p[0] + h, p[1]:p[1] + w]


def zeros_padded(dy, channels, x_size, p):
    """A zero (N, channels, H + 2PH, W + 2PW) array beside dy, for folding the input gradient into."""
    xp = namespace(dy)
    return xp.zeros((dy.shape[0], channels, x_size[0] + 2 * p[0], x_size[1] + 2 * p[1]),
                    dtype=dy.dtype, device=device(dy))


def conv2d(x, weight, bias, s, p, d):
    """The banded plan for validated arguments (pairs s, p, d): ``(y, ConvCache)``."""
    (h, w), (kh, kw) = x.shape[2:], weight.shape[2:]
    out = ((h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1, (w + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1)
    y = correlate(pad2d(x, p, slot=2), weight, bias, s, d, out)
    return y, ConvCache(x, weight, bias is not None, s, p, d)


def conv2d_backward(dy, cache, need_dx=True, need_dweight=True):
    """Gradients of the banded plan; equals :func:`..reference.conv2d_backward`.
    When dx is folded too, one band loop computes both gradients."""
    x, weight, has_bias, s, p, d = cache
    xp = namespace(dy, weight)
    dbias = xp.sum(dy, axis=(0, 2, 3)) if has_bias else None
    fold = need_dx and not dx_by_convolution(weight.shape, s, p, d)
    dxpad = zeros_padded(dy, weight.shape[1], x.shape[2:], p) if fold else None
    dweight = None
    if need_dweight or fold:
        dw2 = backward_bands(pad2d(x, p, slot=2) if need_dweight else None, dy, weight, s, d, dxpad)
        dweight = xp.reshape(dw2, weight.shape) if need_dweight else None
    dx = input_gradient(dy, weight, s, p, d, x.shape[2:], dxpad) if need_dx else None
    return dx, dweight, dbias
