"""im2col / col2im and the output-size arithmetic of convolution and pooling.

Notation: input (N, C, H, W); kernel KH x KW; stride S = (SH, SW); padding
P = (PH, PW); dilation D = (DH, DW); output OH x OW.

    OH = floor((H + 2*PH - DH*(KH - 1) - 1) / SH) + 1                (convolution)
    OH = (H - 1)*SH - 2*PH + DH*(KH - 1) + 1                        (transposed)

im2col writes one strided slice of the whole batch per kernel offset (ky, kx), so
the Python loop runs KH*KW times whatever the image size; col2im runs the same
loop with ``+=``, which sums the overlapping windows without any scatter.
"""
from __future__ import annotations

from ..backend import device, namespace


def pair(v, name="value"):
    """``v`` as a pair of ints: ``3 -> (3, 3)``, ``(2, 1) -> (2, 1)``."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def conv_output_size(size, kernel, stride=1, padding=0, dilation=1):
    """Output length of a convolution along one axis (see the module docstring)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(size, kernel, stride=1, padding=0, dilation=1):
    """Output length of a transposed convolution along one axis."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1


def pad2d(x, padding, value=0.0):
    """Pad the last two axes of (N, C, H, W) ``x`` by P = (PH, PW) on every side with ``value``."""
    ph, pw = pair(padding, "padding")
    if ph == 0 and pw == 0:
        return x
    xp = namespace(x)
    n, c, h, w = x.shape
    out = xp.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype, device=device(x))
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def _window(start, count, step):
    """The slice start, start+step, ..., start+(count-1)*step (stop never past the end)."""
    return slice(start, start + step * (count - 1) + 1, step)


def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """Unfold the sliding windows of ``x`` into columns.

    x: (N, C, H, W) -> cols: (N, C*KH*KW, OH*OW), where column ``oy*OW + ox`` holds
    the receptive field of output pixel (oy, ox) in the order (c, ky, kx) -- the
    order of a (C_out, C, KH, KW) weight flattened to (C_out, C*KH*KW). Padding is
    zeros. Returns ``(cols, (OH, OW))``.
    """
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = pair(stride, "stride")
    dh, dw = pair(dilation, "dilation")
    n, c, h, w = x.shape
    ph, pw = pair(padding, "padding")
    oh = conv_output_size(h, kh, sh, ph, dh)
    ow = conv_output_size(w, kw, sw, pw, dw)
    xp = namespace(x)
    xpad = pad2d(x, (ph, pw))
    cols = xp.empty((n, c, kh, kw, oh, ow), dtype=x.dtype, device=device(x))
    for ky in range(kh):
        rows = _window(ky * dh, oh, sh)
        for kx in range(kw):
            cols[:, :, ky, kx, :, :] = xpad[:, :, rows, _window(kx * dw, ow, sw)]
    return xp.reshape(cols, (n, c * kh * kw, oh * ow)), (oh, ow)


def col2im(cols, x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """Fold columns back into an image, summing where windows overlap (adjoint of im2col).

    cols: (N, C*KH*KW, OH*OW) -> x: (N, C, H, W) with ``x_shape = (N, C, H, W)``.
    OH, OW are those of :func:`im2col` on an input of ``x_shape``.
    """
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = pair(stride, "stride")
    dh, dw = pair(dilation, "dilation")
    ph, pw = pair(padding, "padding")
    n, c, h, w = x_shape
    oh = conv_output_size(h, kh, sh, ph, dh)
    ow = conv_output_size(w, kw, sw, pw, dw)
    xp = namespace(cols)
    cols = xp.reshape(cols, (n, c, kh, kw, oh, ow))
    out = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype, device=device(cols))
    for ky in range(kh):
        rows = _window(ky * dh, oh, sh)
        for kx in range(kw):
            out[:, :, rows, _window(kx * dw, ow, sw)] += cols[:, :, ky, kx, :, :]
    if ph or pw:
        out = out[:, :, ph:ph + h, pw:pw + w]
    return out
