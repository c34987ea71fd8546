"""The reference path: convolution, transposed convolution, max pooling, batch
normalisation and the softmax of the loss, plainly.

Read this module first. Every convolution is im2col / col2im (:mod:`.im2col`) and one
matrix multiply, forward and backward, in the array API, so it runs on NumPy, CuPy
and array_api_strict alike. The fast paths (:mod:`.fast`) compute the same numbers
faster; ``MINIFCN_REFERENCE=1`` (or :func:`minifcn.functional.use_reference`) makes
every op run these instead.

Notation: x (N, C, H, W); kernel KH x KW; stride S; padding P; dilation D;
output (N, C_out, OH, OW); L = OH * OW output pixels; K = C * KH * KW.

The two convolutions are each other's adjoint: the input gradient of a convolution is
the transposed convolution of dy with the same weight, and the input gradient of a
transposed convolution is the convolution of dy. The backward functions say so in code.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import device, namespace
from .im2col import (col2im, conv_output_size, conv_transpose_output_size, im2col, pad2d, pair,
                     pool_output_size)


class ConvCache(NamedTuple):
    """What :func:`conv2d_backward` needs: the input (the columns are rebuilt from it)."""

    x: object
    weight: object
    has_bias: bool
    stride: tuple
    padding: tuple
    dilation: tuple


class ConvTransposeCache(NamedTuple):
    """What :func:`conv_transpose2d_backward` needs."""

    x: object
    weight: object
    has_bias: bool
    stride: tuple
    padding: tuple
    dilation: tuple


class PoolCache(NamedTuple):
    """What :func:`max_pool2d_backward` needs: which kernel offset won each window."""

    x_shape: tuple
    winner: object         # (N, C, L) int: offset ky * KW + kx of each window's maximum
    kernel: tuple
    stride: tuple
    padding: tuple
    padded_size: tuple     # (HP, WP) of the -inf padded input


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """Convolution (cross-correlation). x (N, C, H, W), weight (C_out, C, KH, KW), bias (C_out,).

        cols = im2col(x)                         (N, K, L)
        y[n] = weight.reshape(C_out, K) @ cols[n] + bias          -> (N, C_out, OH, OW)
        OH = floor((H + 2P - D(KH - 1) - 1) / S) + 1
    """
    xp = namespace(x, weight)
    s, p, d = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    n, c_out, kh, kw = x.shape[0], weight.shape[0], weight.shape[2], weight.shape[3]
    cols, (oh, ow) = im2col(x, (kh, kw), s, p, d)
    y = xp.reshape(weight, (c_out, -1)) @ cols
    if bias is not None:
        y = y + xp.reshape(bias, (c_out, 1))
    return xp.reshape(y, (n, c_out, oh, ow)), ConvCache(x, weight, bias is not None, s, p, d)


def conv2d_backward(dy, cache, need_dx=True, need_dweight=True):
    """Gradients of :func:`conv2d`: dy (N, C_out, OH, OW) -> (dx, dweight, dbias).

        dweight = sum_n dy[n] @ cols[n]^T        (C_out, K) -> (C_out, C, KH, KW)
        dx      = col2im(weight^T @ dy)          = conv_transpose2d(dy, weight)
        dbias   = sum of dy over (N, OH, OW)     (None without bias)
    """
    x, weight, has_bias, s, p, d = cache
    xp = namespace(dy, weight)
    (n, c_out, oh, ow), (h, w), (kh, kw) = dy.shape, x.shape[2:], weight.shape[2:]
    dbias = xp.sum(dy, axis=(0, 2, 3)) if has_bias else None
    dweight = dx = None
    if need_dweight:
        cols, _ = im2col(x, (kh, kw), s, p, d)
        dw = xp.reshape(dy, (n, c_out, oh * ow)) @ xp.matrix_transpose(cols)      # (N, C_out, K)
        dweight = xp.reshape(xp.sum(dw, axis=0), weight.shape)
    if need_dx:
        # rows/columns the forward's floor division skipped come back as output padding
        extra = (h - conv_transpose_output_size(oh, kh, s[0], p[0], d[0]),
                 w - conv_transpose_output_size(ow, kw, s[1], p[1], d[1]))
        dx, _ = conv_transpose2d(dy, weight, None, s, p, d, output_padding=extra)
    return dx, dweight, dbias


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, dilation=1, output_padding=0):
    """Transposed convolution. x (N, C_in, H, W), weight (C_in, C_out, KH, KW), bias (C_out,).

        cols[n] = weight.reshape(C_in, C_out*KH*KW)^T @ x[n]      (N, C_out*KH*KW, H*W)
        y = col2im(cols) + bias                                   -> (N, C_out, OH, OW)
        OH = (H - 1)S - 2P + D(KH - 1) + 1 + output_padding

    Each input pixel stamps its kernel, scaled by its value, into the output at stride S;
    col2im adds the overlaps. ``output_padding`` (< S) adds rows/columns at the bottom/right.
    """
    xp = namespace(x, weight)
    s, p, d = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    op = pair(output_padding, "output_padding")
    (n, _, h, w), (c_in, c_out, kh, kw) = x.shape, weight.shape
    oh = conv_transpose_output_size(h, kh, s[0], p[0], d[0]) + op[0]
    ow = conv_transpose_output_size(w, kw, s[1], p[1], d[1]) + op[1]
    cols = xp.matrix_transpose(xp.reshape(weight, (c_in, -1))) @ xp.reshape(x, (n, c_in, h * w))
    y = col2im(cols, (n, c_out, oh, ow), (kh, kw), s, p, d)
    if bias is not None:
        y = y + xp.reshape(bias, (1, c_out, 1, 1))
    return y, ConvTransposeCache(x, weight, bias is not None, s, p, d)


def conv_transpose2d_backward(dy, cache, need_dx=True, need_dweight=True):
    """Gradients of :func:`conv_transpose2d`: dy (N, C_out, OH, OW) -> (dx, dweight, dbias).

        dx      = conv2d(dy, weight)             (weight read as conv2d's (C_in, C_out, KH, KW))
        dweight = sum_n x[n] @ im2col(dy)[n]^T   (C_in, C_out*KH*KW) -> (C_in, C_out, KH, KW)
        dbias   = sum of dy over (N, OH, OW)
    """
    x, weight, has_bias, s, p, d = cache
    xp = namespace(dy, weight)
    (n, c_in, h, w), (kh, kw) = x.shape, weight.shape[2:]
    dbias = xp.sum(dy, axis=(0, 2, 3)) if has_bias else None
    dx = conv2d(dy, weight, None, s, p, d)[0] if need_dx else None
    dweight = None
    if need_dweight:
        cols, _ = im2col(dy, (kh, kw), s, p, d)                                # (N, C_out*KH*KW, H*W)
        dw = xp.reshape(x, (n, c_in, h * w)) @ xp.matrix_transpose(cols)
        dweight = xp.reshape(xp.sum(dw, axis=0), weight.shape)
    return dx, dweight, dbias


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """Max pooling. x (N, C, H, W) -> y (N, C, OH, OW), each the maximum of its window.

        cols = im2col(x padded with -inf)        (N, C, KH*KW, L)
        y = max over the KH*KW axis; winner = argmax (the first maximum in row-major order)
        OH = floor((H + 2P - KH) / S) + 1, or ceil(...) + 1 in ceil mode (see pool_output_size)
    """
    xp = namespace(x)
    k, p = pair(kernel_size, "kernel_size"), pair(padding, "padding")
    s = k if stride is None else pair(stride, "stride")
    n, c, h, w = x.shape
    oh, ow = pool_output_size(h, k[0], s[0], p[0], ceil_mode), pool_output_size(w, k[1], s[1], p[1], ceil_mode)
    size = (max(h + 2 * p[0], (oh - 1) * s[0] + k[0]), max(w + 2 * p[1], (ow - 1) * s[1] + k[1]))
    cols, _ = im2col(pad2d(x, p, value=-float("inf"), size=size), k, s)
    cols = xp.reshape(cols, (n, c, k[0] * k[1], oh * ow))
    y = xp.reshape(xp.max(cols, axis=2), (n, c, oh, ow))
    return y, PoolCache(tuple(x.shape), xp.argmax(cols, axis=2), k, s, p, size)


def max_pool2d_backward(dy, cache):
    """Gradient of :func:`max_pool2d`: dy (N, C, OH, OW) -> dx (N, C, H, W).

    Each dy goes to its window's winner only: dcols = onehot(winner) * dy, dx = col2im(dcols).
    """
    (n, c, h, w), winner, k, s, p, size = cache
    xp = namespace(dy)
    taps = xp.arange(k[0] * k[1], dtype=winner.dtype, device=device(dy))
    onehot = xp.astype(winner[:, :, None, :] == taps[None, None, :, None], dy.dtype)   # (N, C, KH*KW, L)
    dcols = onehot * xp.reshape(dy, (n, c, 1, -1))
    dxpad = col2im(xp.reshape(dcols, (n, c * k[0] * k[1], -1)), (n, c) + size, k, s)
    return dxpad[:, :, p[0]:p[0] + h, p[1]:p[1] + w]


def pool_indices(winner, cache_or_geometry, out_size):
    """Flat input positions ``h * W + w`` (int64, PyTorch's convention) of the window maxima.

    winner: (N, C, OH*OW) kernel offsets ky * KW + kx; ``cache_or_geometry`` gives
    x_shape, kernel, stride and padding (a :class:`PoolCache` or the same fields).
    Returns (N, C, OH, OW): row = oy * SH + ky - PH, col = ox * SW + kx - PW.
    """
    g = cache_or_geometry
    xp = namespace(winner)
    (n, c, _, w), (_, kw), (sh, sw), (ph, pw), (oh, ow) = g.x_shape, g.kernel, g.stride, g.padding, out_size
    winner = xp.astype(xp.reshape(winner, (n, c, oh, ow)), xp.int64)
    oy = xp.reshape(xp.arange(oh, dtype=xp.int64, device=device(winner)), (oh, 1))
    ox = xp.reshape(xp.arange(ow, dtype=xp.int64, device=device(winner)), (1, ow))
    return (oy * sh + winner // kw - ph) * w + (ox * sw + winner % kw - pw)


def softmax_logp(logits, target):
    """Softmax over classes and the log-probability of each pixel's target class.

    logits (N, C, H, W), target (N, 1, H, W) integer in [0, C) -> prob (N, C, H, W),
    logp (N, 1, H, W):

        z = logits - max_c logits          (the shift keeps exp from overflowing)
        prob = exp(z) / sum_c exp(z),      logp = z[target] - log sum_c exp(z)
    """
    xp = namespace(logits)
    z = logits - xp.max(logits, axis=1, keepdims=True)
    e = xp.exp(z)
    total = xp.sum(e, axis=1, keepdims=True)                                   # (N, 1, H, W)
    return e / total, xp.take_along_axis(z, target, axis=1) - xp.log(total)


def softmax_grad(prob, target, scale):
    """(prob - onehot(target)) * scale: the gradient of the weighted cross-entropy w.r.t.
    the logits, for prob (N, C, H, W), target (N, 1, H, W) and scale (N, 1, H, W) (the
    pixel's class weight / normaliser, 0 on ignored pixels)."""
    xp = namespace(prob)
    classes = xp.reshape(xp.arange(prob.shape[1], dtype=target.dtype, device=device(prob)), (1, -1, 1, 1))
    onehot = xp.astype(target == classes, prob.dtype)                        # (N, C, H, W)
    return (prob - onehot) * scale


def batch_norm2d(x, weight, bias, mean, var, eps):
    """Batch normalisation of x (N, C, H, W) as :mod:`..norm` states it: with ``mean`` and
    ``var`` None the batch statistics are computed (training), otherwise they are used.

    Returns y, xhat (N, C, H, W), inv_std (1, C, 1, 1) and the mean and var (C,) used.
    """
    xp = namespace(x)
    c = x.shape[1]
    if mean is None:
        mean = xp.mean(x, axis=(0, 2, 3))
        centred = x - xp.reshape(mean, (1, c, 1, 1))
        var = xp.mean(centred * centred, axis=(0, 2, 3))
    else:
        centred = x - xp.reshape(mean, (1, c, 1, 1))
    inv_std = 1.0 / xp.sqrt(xp.reshape(var, (1, c, 1, 1)) + eps)
    xhat = centred * inv_std
    y = xhat if weight is None else xhat * xp.reshape(weight, (1, c, 1, 1))
    if bias is not None:
        y = y + xp.reshape(bias, (1, c, 1, 1))
    return y, xhat, inv_std, mean, var


def batch_norm2d_backward(dy, xhat, inv_std, weight, has_bias, training):
    """dx (N, C, H, W), dweight and dbias (C,) (None without a weight / bias) of
    :func:`batch_norm2d`, by the formulas of :mod:`..norm` (g = dy * weight)."""
    xp = namespace(dy, xhat)
    c = xhat.shape[1]
    dbias = xp.sum(dy, axis=(0, 2, 3)) if has_bias else None
    dweight = xp.sum(dy * xhat, axis=(0, 2, 3)) if weight is not None else None
    g = dy if weight is None else dy * xp.reshape(weight, (1, c, 1, 1))
    if training:
        mean_g = xp.mean(g, axis=(0, 2, 3), keepdims=True)
        mean_gx = xp.mean(g * xhat, axis=(0, 2, 3), keepdims=True)
        return (g - mean_g - xhat * mean_gx) * inv_std, dweight, dbias
    return g * inv_std, dweight, dbias
