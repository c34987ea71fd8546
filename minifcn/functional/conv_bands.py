"""How conv2d computes on real sizes: band by band of output rows.

im2col of a whole image is C*KH*KW times bigger than the image (119 MB for conv1_2
of FCN-8s at width 1/4 and 256x256 input). Done a band of output rows at a time, the
columns of a band fit in a CPU core's cache, live in a reused buffer, and the bands
run on all cores (:func:`minifcn.backend.parallel_for`). On a GPU a band is the whole
image (:func:`minifcn.backend.row_bands`), one im2col kernel and one cuBLAS GEMM.

Inputs here are already padded; :mod:`.conv` decides what to compute.
"""
from __future__ import annotations

from ..backend import device, matmul, namespace, parallel_for, row_bands, scratch, threads_for
from .im2col import _fold_add, _unfold

MIN_BAND_COLUMNS = 1024        # fewer columns per band leave the GEMMs too thin
SMALL_WEIGHT = 1 << 18         # weights up to this many elements get their gradient transposed


def _min_band_rows(ow):
    return -(-MIN_BAND_COLUMNS // ow)


def padded(x, p, slot):
    """x (N, C, H, W) zero-padded by P in a reusable buffer (see :func:`minifcn.backend.scratch`):
    no fresh allocation per call, and only the border is zeroed."""
    (ph, pw), (n, c, h, w) = p, x.shape
    if ph == 0 and pw == 0:
        return x
    xp = namespace(x)
    out = scratch((n, c, h + 2 * ph, w + 2 * pw), x.dtype, x, slot)
    zero = xp.zeros((), dtype=x.dtype, device=device(x))
    out[:, :, :ph, :] = zero
    out[:, :, ph + h:, :] = zero
    out[:, :, ph:ph + h, :pw] = zero
    out[:, :, ph:ph + h, pw + w:] = zero
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


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
        cols = _unfold(xpad, (kh, kw), s, d, (r0, r1), ow, _scratch_cols(xpad, kh, kw, r1 - r0, ow))
        yb = matmul(w2, cols, scratch((n, c_out, (r1 - r0) * ow), xpad.dtype, xpad, slot=1))
        if b2 is not None:
            yb += b2
        y[:, :, r0:r1, :] = xp.reshape(yb, (n, c_out, r1 - r0, ow))

    min_rows = min(_min_band_rows(ow), -(-oh // threads_for(xpad)))      # a band for every thread
    parallel_for(band, row_bands(oh, n * c_in * kh * kw * ow, xpad, min_rows), xpad)
    return y


def backward_bands(xpad, dy, weight, s, d, dxpad):
    """Band loop of the backward pass: returns dweight as (C_out, C_in*KH*KW) when
    ``xpad`` is given, and folds weight^T @ dy into ``dxpad`` when that is given.

    For small weights the bands compute dweight^T = cols @ dy^T, which OpenBLAS runs
    up to twice as fast as dy @ cols^T when C_out is small; big ones (fc6) are not
    worth the final transpose."""
    xp = namespace(dy, weight)
    n, c_out, oh, ow = dy.shape
    _, c_in, kh, kw = weight.shape
    w2t = xp.matrix_transpose(xp.reshape(weight, (c_out, c_in * kh * kw)))
    small = c_out * c_in * kh * kw <= SMALL_WEIGHT

    def band(part, r0, r1):
        dyb = xp.reshape(dy[:, :, r0:r1, :], (n, c_out, (r1 - r0) * ow))
        if part == "dx":
            dcols = matmul(w2t, dyb, scratch((n, c_in * kh * kw, (r1 - r0) * ow), dy.dtype, dy, slot=1))
            _fold_add(dxpad, dcols, (kh, kw), s, d, (r0, r1), ow)
            return None
        cols = _unfold(xpad, (kh, kw), s, d, (r0, r1), ow, _scratch_cols(xpad, kh, kw, r1 - r0, ow))
        # this band's share of dweight (transposed for small weights), summed over N
        share = cols @ xp.matrix_transpose(dyb) if small else dyb @ xp.matrix_transpose(cols)
        return share[0, ...] if n == 1 else xp.sum(share, axis=0)

    # Weight-gradient bands are independent. Input-gradient bands fold into the input
    # rows they share with their neighbours (the kernel overlap) but not with bands two
    # apart once a band spans (KH - 1)*DH input rows: so the even bands go with the
    # weight gradient, then the odd bands.
    min_rows = max(_min_band_rows(ow), -(-(kh - 1) * d[0] // s[0]))
    bands = row_bands(oh, n * c_in * kh * kw * ow, dy, min_rows)
    tasks = [("dw",) + b for b in bands] if xpad is not None else []
    tasks += [("dx",) + b for b in bands[0::2]] if dxpad is not None else []
    partial = parallel_for(band, tasks, dy)
    if dxpad is not None:
        parallel_for(band, [("dx",) + b for b in bands[1::2]], dy)
    if xpad is None:
        return None
    dw2 = partial[0]
    for part in partial[1:len(bands)]:
        dw2 = dw2 + part
    return xp.matrix_transpose(dw2) if small else dw2
