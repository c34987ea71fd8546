"""Convolution and transposed convolution, each the other's backward.

conv2d:            x (N, C, H, W), weight (C_out, C, KH, KW)  -> y (N, C_out, OH, OW)
    OH = floor((H + 2P - D(KH - 1) - 1) / S) + 1
    y[n] = weight.reshape(C_out, C*KH*KW) @ im2col(x)[n]   (+ bias)

conv_transpose2d:  x (N, C_in, H, W), weight (C_in, C_out, KH, KW) -> y (N, C_out, OH, OW)
    OH = (H - 1)S - 2P + D(KH - 1) + 1
    y[n] = col2im(weight.reshape(C_in, C_out*KH*KW)^T @ x[n])   (+ bias)

The transposed convolution *is* the gradient of conv2d with respect to its input,
so the backward of one is the forward of the other (im2col <-> col2im).
"""
from __future__ import annotations

from ..backend import namespace
from .checks import check_bias, check_float, check_ndim, check_same_dtype
from .im2col import col2im, conv_output_size, conv_transpose_output_size, im2col, pair


def _conv_params(stride, padding, dilation):
    sh, sw = pair(stride, "stride")
    ph, pw = pair(padding, "padding")
    dh, dw = pair(dilation, "dilation")
    if min(sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"stride and dilation must be >= 1 and padding >= 0, got "
                         f"stride={stride!r}, padding={padding!r}, dilation={dilation!r}")
    return (sh, sw), (ph, pw), (dh, dw)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D cross-correlation (what deep learning calls convolution).

    x: (N, C, H, W); weight: (C_out, C, KH, KW); bias: (C_out,) or None.
    Returns ``(y, cache)`` with y: (N, C_out, OH, OW); the output-size formula is in
    the module docstring. ``cache`` holds the im2col columns and the shapes.
    """
    check_ndim(x, 4, "conv2d input x", "(N, C, H, W)")
    check_ndim(weight, 4, "conv2d weight", "(C_out, C_in, KH, KW)")
    check_float(x, "conv2d input x")
    check_same_dtype(x, weight, "conv2d input x", "weight")
    s, p, d = _conv_params(stride, padding, dilation)
    n, c, h, w = x.shape
    c_out, c_in, kh, kw = weight.shape
    if c != c_in:
        raise ValueError(f"conv2d channel mismatch: input x has C={c} channels (shape {tuple(x.shape)}) "
                         f"but weight expects C_in={c_in} (weight shape {tuple(weight.shape)})")
    check_bias(bias, c_out, "conv2d bias", like=x)
    oh = conv_output_size(h, kh, s[0], p[0], d[0])
    ow = conv_output_size(w, kw, s[1], p[1], d[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d kernel {kh}x{kw} (dilation {d}) is larger than the padded input "
                         f"{h + 2 * p[0]}x{w + 2 * p[1]} (input {h}x{w}, padding {p})")
    xp = namespace(x, weight, bias)
    cols, _ = im2col(x, (kh, kw), s, p, d)                       # (N, C*KH*KW, OH*OW)
    w2 = xp.reshape(weight, (c_out, c_in * kh * kw))
    y = xp.reshape(w2 @ cols, (n, c_out, oh, ow))
    if bias is not None:
        y = y + xp.reshape(bias, (1, c_out, 1, 1))
    cache = (cols, tuple(x.shape), weight, bias is not None, s, p, d)
    return y, cache


def conv2d_backward(dy, cache, need_dx=True, need_dweight=True):
    """Gradients of :func:`conv2d`.

    dy: (N, C_out, OH, OW) -> ``(dx, dweight, dbias)``:
    dweight = sum_n dy[n] @ cols[n]^T, dx = col2im(weight^T @ dy), dbias = sum of dy
    over (N, OH, OW); dbias is None when the forward had no bias. ``need_dx=False`` /
    ``need_dweight=False`` skip (and return None for) a gradient nobody needs.
    """
    cols, x_shape, weight, has_bias, s, p, d = cache
    xp = namespace(dy, weight)
    n, c_out, oh, ow = dy.shape
    _, c_in, kh, kw = weight.shape
    dy2 = xp.reshape(dy, (n, c_out, oh * ow))
    w2 = xp.reshape(weight, (c_out, c_in * kh * kw))
    dweight = dx = None
    if need_dweight:
        dweight = xp.reshape(xp.sum(dy2 @ xp.matrix_transpose(cols), axis=0), weight.shape)
    if need_dx:
        dcols = xp.matrix_transpose(w2) @ dy2                      # (N, C*KH*KW, OH*OW)
        dx = col2im(dcols, x_shape, (kh, kw), s, p, d)
    dbias = xp.sum(dy, axis=(0, 2, 3)) if has_bias else None
    return dx, dweight, dbias


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """Transposed convolution ("deconvolution"): the input-gradient of :func:`conv2d`.

    x: (N, C_in, H, W); weight: (C_in, C_out, KH, KW); bias: (C_out,) or None.
    Each input pixel scatters a copy of its kernel, scaled by its value, into the
    output at stride S; overlaps add; P rows/columns are then cropped from each side.
    Returns ``(y, cache)`` with y: (N, C_out, OH, OW), OH = (H - 1)S - 2P + D(KH - 1) + 1.
    """
    check_ndim(x, 4, "conv_transpose2d input x", "(N, C_in, H, W)")
    check_ndim(weight, 4, "conv_transpose2d weight", "(C_in, C_out, KH, KW)")
    check_float(x, "conv_transpose2d input x")
    check_same_dtype(x, weight, "conv_transpose2d input x", "weight")
    s, p, d = _conv_params(stride, padding, dilation)
    n, c, h, w = x.shape
    c_in, c_out, kh, kw = weight.shape
    if c != c_in:
        raise ValueError(f"conv_transpose2d channel mismatch: input x has C={c} channels (shape "
                         f"{tuple(x.shape)}) but weight expects C_in={c_in} (weight shape {tuple(weight.shape)})")
    check_bias(bias, c_out, "conv_transpose2d bias", like=x)
    oh = conv_transpose_output_size(h, kh, s[0], p[0], d[0])
    ow = conv_transpose_output_size(w, kw, s[1], p[1], d[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"conv_transpose2d output would be {oh}x{ow}: padding {p} is too large for "
                         f"input {h}x{w}, kernel {kh}x{kw}, stride {s}")
    xp = namespace(x, weight, bias)
    w2 = xp.reshape(weight, (c_in, c_out * kh * kw))
    cols = xp.matrix_transpose(w2) @ xp.reshape(x, (n, c_in, h * w))   # (N, C_out*KH*KW, H*W)
    y = col2im(cols, (n, c_out, oh, ow), (kh, kw), s, p, d)
    if bias is not None:
        y = y + xp.reshape(bias, (1, c_out, 1, 1))
    cache = (x, weight, bias is not None, s, p, d)
    return y, cache


def conv_transpose2d_backward(dy, cache, need_dx=True, need_dweight=True):
    """Gradients of :func:`conv_transpose2d`.

    dy: (N, C_out, OH, OW) -> ``(dx, dweight, dbias)``: with cols = im2col(dy),
    dx[n] = weight.reshape(C_in, -1) @ cols[n] (an ordinary convolution of dy) and
    dweight = sum_n x[n] @ cols[n]^T. ``need_dx`` / ``need_dweight`` as in :func:`conv2d_backward`.
    """
    x, weight, has_bias, s, p, d = cache
    xp = namespace(dy, weight)
    n, c_in, h, w = x.shape
    _, c_out, kh, kw = weight.shape
    cols, _ = im2col(dy, (kh, kw), s, p, d)                        # (N, C_out*KH*KW, H*W)
    w2 = xp.reshape(weight, (c_in, c_out * kh * kw))
    dx = xp.reshape(w2 @ cols, (n, c_in, h, w)) if need_dx else None
    dweight = None
    if need_dweight:
        x2 = xp.reshape(x, (n, c_in, h * w))
        dweight = xp.reshape(xp.sum(x2 @ xp.matrix_transpose(cols), axis=0), weight.shape)
    dbias = xp.sum(dy, axis=(0, 2, 3)) if has_bias else None
    return dx, dweight, dbias
