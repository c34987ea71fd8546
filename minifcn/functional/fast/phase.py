"""Transposed convolution as one stride-1 convolution of stacked phase kernels, then a
pixel shuffle. Equals :func:`..reference.conv_transpose2d` and its backward.

A transposed convolution with stride S is S*S ordinary stride-1 convolutions, one per
output phase (ry, rx) = (oy mod SH, ox mod SW): output row oy = (iy + qy)*SH + ry gets
kernel row ky = qy*SH + ry from input row iy. Stacking the phase kernels as output
channels gives ONE convolution of x (padding Q - 1, Q = ceil(KH_dilated / SH) taps per
phase); a pixel shuffle then interleaves the phases into the (SH*BH, SW*BW) output,
which is cropped by P (and extended by the output padding).

Why faster: the reference forms C_out*KH*KW x H*W columns (for upscore8 of FCN-8s,
16*16 = 256 rows per class) and col2im adds them with overlaps; the phase convolution
has C_out*SH*SW output channels over Q*Q taps, no overlaps, and runs on the fast
convolution (bands, frames), or channel by channel (:mod:`.diagonal`) when the weight
is zero off the channel diagonal, as FCN's bilinear upsampling is.
"""
from __future__ import annotations

from typing import NamedTuple

from ...backend import device, namespace
from ..im2col import window
from . import diagonal


class ConvTransposeCache(NamedTuple):
    conv: object           # the cache of the phase convolution
    weight_shape: tuple
    phase_size: tuple      # (BH, BW) of the phase planes
    out_size: tuple        # (OH, OW)
    has_bias: bool
    stride: tuple
    padding: tuple
    dilation: tuple


def phase_weight(weight, s, d):
    """(C_in, C_out, KH, KW) -> the phase kernel (C_out*SH*SW, C_in, QH, QW), and (QH, QW)."""
    xp = namespace(weight)
    c_in, c_out, kh, kw = weight.shape
    kdh, kdw = d[0] * (kh - 1) + 1, d[1] * (kw - 1) + 1                # dilated kernel size
    qh, qw = -(-kdh // s[0]), -(-kdw // s[1])
    wp = xp.zeros((c_in, c_out, qh * s[0], qw * s[1]), dtype=weight.dtype, device=device(weight))
    wp[:, :, window(0, kh, d[0]), window(0, kw, d[1])] = weight      # dilate, pad to Q*S taps
    w6 = xp.flip(xp.reshape(wp, (c_in, c_out, qh, s[0], qw, s[1])), axis=(2, 4))  # tap q -> Q-1-q
    wq = xp.permute_dims(w6, (1, 3, 5, 0, 2, 4))                          # (C_out, SH, SW, C_in, QH, QW)
    return xp.reshape(wq, (c_out * s[0] * s[1], c_in, qh, qw)), (qh, qw)


def phase_weight_grad(dwq, w_shape, s, d):
    """Adjoint of :func:`phase_weight`: (C_out*SH*SW, C_in, QH, QW) -> (C_in, C_out, KH, KW)."""
    xp = namespace(dwq)
    c_in, c_out, kh, kw = w_shape
    qh, qw = dwq.shape[2:]
    w6 = xp.permute_dims(xp.reshape(dwq, (c_out, s[0], s[1], c_in, qh, qw)), (3, 0, 4, 1, 5, 2))
    wp = xp.reshape(xp.flip(w6, axis=(2, 4)), (c_in, c_out, qh * s[0], qw * s[1]))
    return wp[:, :, window(0, kh, d[0]), window(0, kw, d[1])]


def pixel_shuffle(yq, c_out, s):
    """(N, C_out*SH*SW, BH, BW) phase planes -> (N, C_out, BH*SH, BW*SW), y[.., b*S + r, ..] = plane r at b."""
    xp = namespace(yq)
    n, _, bh, bw = yq.shape
    y6 = xp.permute_dims(xp.reshape(yq, (n, c_out, s[0], s[1], bh, bw)), (0, 1, 4, 2, 5, 3))
    return xp.reshape(y6, (n, c_out, bh * s[0], bw * s[1]))


def conv_transpose2d(x, weight, bias, s, p, d, out_size, conv):
    """The phase plan for validated arguments; ``conv`` is the convolution that runs the
    phase kernels (the dispatching :func:`minifcn.functional.conv2d`). The output is
    ``out_size`` = (OH, OW), which may exceed the uncropped planes by the output padding."""
    xp = namespace(x, weight)
    n, c_out, (oh, ow) = x.shape[0], weight.shape[1], out_size
    wq, (qh, qw) = phase_weight(weight, s, d)
    if diagonal.channel_diagonal(weight):          # FCN's bilinear upsampling: class c -> class c
        full, conv_cache = diagonal.upsample(x, wq, s)
    else:
        yq, conv_cache = conv(x, wq, None, (1, 1), (qh - 1, qw - 1), (1, 1))   # (N, C_out*SH*SW, BH, BW)
        full = pixel_shuffle(yq, c_out, s)
    if full.shape[2] < p[0] + oh or full.shape[3] < p[1] + ow:          # output padding past the planes
        grown = xp.zeros((n, c_out, max(full.shape[2], p[0] + oh), max(full.shape[3], p[1] + ow)),
                         dtype=x.dtype, device=device(x))
        grown[:, :, :full.shape[2], :full.shape[3]] = full
        full = grown
    y = full[:, :, p[0]:p[0] + oh, p[1]:p[1] + ow]
    if bias is not None:
        y = y + xp.reshape(bias, (1, c_out, 1, 1))
    phase_size = (full.shape[2] // s[0], full.shape[3] // s[1])
    return y, ConvTransposeCache(conv_cache, tuple(weight.shape), phase_size, out_size,
                                 bias is not None, s, p, d)


def conv_transpose2d_backward(dy, cache, need_dx, need_dweight, conv_backward):
    """Undo the crop (zeros) and the pixel shuffle, take the phase convolution's gradients
    (``conv_backward``), and fold the phase kernel's gradient back into (C_in, C_out, KH, KW)."""
    xp = namespace(dy)
    (bh, bw), s, p = cache.phase_size, cache.stride, cache.padding
    n, c_out, oh, ow = dy.shape
    dfull = xp.zeros((n, c_out, bh * s[0], bw * s[1]), dtype=dy.dtype, device=device(dy))
    rows, cols = min(oh, bh * s[0] - p[0]), min(ow, bw * s[1] - p[1])   # output padding gets no phase
    dfull[:, :, p[0]:p[0] + rows, p[1]:p[1] + cols] = dy[:, :, :rows, :cols]
    dbias = xp.sum(dy, axis=(0, 2, 3)) if cache.has_bias else None
    conv_cache, dx, dweight = cache.conv, None, None
    if isinstance(conv_cache, diagonal.DiagonalCache):    # dx channel by channel; dweight is dense
        dx = diagonal.upsample_backward(dfull, conv_cache) if need_dx else None
        need_dx, conv_cache = False, diagonal.dense_cache(conv_cache)
    if need_dx or need_dweight:
        dq = xp.reshape(xp.permute_dims(xp.reshape(dfull, (n, c_out, bh, s[0], bw, s[1])), (0, 1, 3, 5, 2, 4)),
                        (n, c_out * s[0] * s[1], bh, bw))
        dxq, dwq, _ = conv_backward(dq, conv_cache, need_dx, need_dweight)
        dx = dxq if need_dx else dx
        dweight = phase_weight_grad(dwq, cache.weight_shape, s, cache.dilation) if need_dweight else None
    return dx, dweight, dbias
