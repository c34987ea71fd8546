"""im2col / col2im and the output-size arithmetic of convolution and pooling.

Notation: input (N, C, H, W); kernel KH x KW; stride S = (SH, SW); padding
P = (PH, PW); dilation D = (DH, DW); output OH x OW.

    OH = floor((H + 2*PH - DH*(KH - 1) - 1) / SH) + 1                (convolution)
    OH = (H - 1)*SH - 2*PH + DH*(KH - 1) + 1                        (transposed)
    OH = floor((H + 2*PH - KH) / SH) + 1                             (pooling; ceil mode:
         ceil instead of floor, minus 1 if the last window would start in the padding)

im2col writes one strided slice of the whole batch per kernel offset (ky, kx), so
the Python loop runs KH*KW times whatever the image size (on NumPy and CuPy the
KH*KW slices are one strided view, copied at once); col2im runs the same loop with
``+=``, which sums the overlapping windows without any scatter. Both work on a band
of output rows at a time, which is how conv2d keeps them in the CPU cache.
"""
from __future__ import annotations

import math
import numbers

from ..backend import as_strided, device, element_strides, namespace, scratch


def pair(v, name="value"):
    """``v`` as a pair of ints: ``3 -> (3, 3)``, ``(2, 1) -> (2, 1)``.

    Raises ValueError for anything that is not an integer (1.5 is never truncated to 1).
    """
    items = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(items) != 2 or not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in items):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return int(items[0]), int(items[1])


def conv_output_size(size, kernel, stride=1, padding=0, dilation=1):
    """Output length of a convolution along one axis (see the module docstring)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(size, kernel, stride=1, padding=0, dilation=1):
    """Output length of a transposed convolution along one axis."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1


def pool_output_size(size, kernel, stride, padding=0, ceil_mode=False):
    """Output length of max pooling along one axis (Caffe's and PyTorch's rounding).

    In ceil mode a last window that would start at or past ``size + padding`` (wholly in
    the padding) is dropped.
    """
    span = size + 2 * padding - kernel
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pad2d(x, padding, value=0.0, size=None, slot=None):
    """Pad the last two axes of x (N, C, H, W) with ``value``: P = (PH, PW) rows/columns on
    every side, and at the bottom/right as many more as make the result ``size`` = (HP, WP)
    (default (H + 2PH, W + 2PW); ceil-mode pooling needs the extra).

    With ``slot`` the result lives in a reused buffer (:func:`minifcn.backend.scratch`,
    NumPy only; valid until the next call with that slot) and only its border is written,
    so band loops pad without allocating. Returns x itself when nothing is padded.
    """
    ph, pw = pair(padding, "padding")
    n, c, h, w = x.shape
    hp, wp = (h + 2 * ph, w + 2 * pw) if size is None else size
    if (hp, wp) == (h, w):
        return x
    xp = namespace(x)
    if slot is None:
        out = xp.full((n, c, hp, wp), value, dtype=x.dtype, device=device(x))
    else:
        out = scratch((n, c, hp, wp), x.dtype, x, slot)
        fill = xp.full((), value, dtype=x.dtype, device=device(x))
        out[:, :, :ph, :] = fill
        out[:, :, ph + h:, :] = fill
        out[:, :, ph:ph + h, :pw] = fill
        out[:, :, ph:ph + h, pw + w:] = fill
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def window(start, count, step):
    """The slice start, start+step, ..., start+(count-1)*step (stop never past the end)."""
    return slice(start, start + step * (count - 1) + 1, step)


def unfold_rows(xpad, kernel, stride, dilation, rows, ow, out=None):
    """im2col of the output rows ``rows = (r0, r1)`` of an already padded input.

    xpad: (N, C, HP, WP) -> (N, C*KH*KW, (r1 - r0)*OW), one strided slice per kernel
    offset; written into ``out`` (N, C, KH, KW, r1 - r0, OW) when given. On NumPy and
    CuPy the KH*KW slices are one strided view, copied in one go.
    """
    (kh, kw), (sh, sw), (dh, dw), (r0, r1) = kernel, stride, dilation, rows
    xp = namespace(xpad)
    n, c = xpad.shape[:2]
    shape = (n, c, kh, kw, r1 - r0, ow)
    cols = xp.empty(shape, dtype=xpad.dtype, device=device(xpad)) if out is None else out
    es = element_strides(xpad)
    if es is not None:
        cols[...] = as_strided(xpad[:, :, r0 * sh:, :], shape,
                               (es[0], es[1], es[2] * dh, es[3] * dw, es[2] * sh, es[3] * sw))
    else:
        for ky in range(kh):
            rs = window(r0 * sh + ky * dh, r1 - r0, sh)
            for kx in range(kw):
                cols[:, :, ky, kx, :, :] = xpad[:, :, rs, window(kx * dw, ow, sw)]
    return xp.reshape(cols, (n, c * kh * kw, (r1 - r0) * ow))


def fold_rows_add(outpad, cols, kernel, stride, dilation, rows, ow):
    """Adjoint of :func:`unfold_rows`: ``outpad += col2im(cols)`` for output rows ``rows``, in place."""
    (kh, kw), (sh, sw), (dh, dw), (r0, r1) = kernel, stride, dilation, rows
    xp = namespace(cols)
    n, c = outpad.shape[:2]
    cols = xp.reshape(cols, (n, c, kh, kw, r1 - r0, ow))
    for ky in range(kh):
        rs = window(r0 * sh + ky * dh, r1 - r0, sh)
        for kx in range(kw):
            outpad[:, :, rs, window(kx * dw, ow, sw)] += cols[:, :, ky, kx, :, :]


def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """Unfold the sliding windows of ``x`` into columns.

    x: (N, C, H, W) -> cols: (N, C*KH*KW, OH*OW), where column ``oy*OW + ox`` holds
    the receptive field of output pixel (oy, ox) in the order (c, ky, kx) -- the
    order of a (C_out, C, KH, KW) weight flattened to (C_out, C*KH*KW). Padding is
    zeros. Returns ``(cols, (OH, OW))``.
    """
    k, s = pair(kernel_size, "kernel_size"), pair(stride, "stride")
    d, p = pair(dilation, "dilation"), pair(padding, "padding")
    oh = conv_output_size(x.shape[2], k[0], s[0], p[0], d[0])
    ow = conv_output_size(x.shape[3], k[1], s[1], p[1], d[1])
    return unfold_rows(pad2d(x, p), k, s, d, (0, oh), ow), (oh, ow)


def col2im(cols, x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """Fold columns back into an image, summing where windows overlap (adjoint of im2col).

    cols: (N, C*KH*KW, OH*OW) -> x: (N, C, H, W) with ``x_shape = (N, C, H, W)``.
    OH, OW are those of :func:`im2col` on an input of ``x_shape``.
    """
    k, s = pair(kernel_size, "kernel_size"), pair(stride, "stride")
    d, (ph, pw) = pair(dilation, "dilation"), pair(padding, "padding")
    n, c, h, w = x_shape
    oh = conv_output_size(h, k[0], s[0], ph, d[0])
    ow = conv_output_size(w, k[1], s[1], pw, d[1])
    xp = namespace(cols)
    out = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype, device=device(cols))
    fold_rows_add(out, cols, k, s, d, (0, oh), ow)
    if ph or pw:
        out = out[:, :, ph:ph + h, pw:pw + w]
    return out
