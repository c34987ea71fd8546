"""The phase convolution of a transposed convolution whose weight is zero off the
channel diagonal (input channel c feeds output channel c only), channel by channel:
equals the dense phase plan of :mod:`.phase`, hence :func:`..reference.conv_transpose2d`.

Where it comes from: FCN's upsampling layers are transposed convolutions initialised
to bilinear interpolation, one kernel per class on the diagonal and zeros elsewhere,
and the final one stays frozen. The dense phase convolution has C*SH*SW output
channels over all C input channels, so with a diagonal weight it multiplies C times
more zeros than values (20 of 21 for upscore8 of FCN-8s). Here each channel is a small
matmul over its Q*Q taps, written straight into the interleaved (pixel-shuffled) layout:

    cols = im2col(x, Q taps, padding Q - 1)               (N, C, BH*BW, QH*QW)
    z[n, c, ry] = cols[n, c] @ taps[c, ry]                taps (C, SH, QH*QW, SW) -> (BH*BW, SW)
    full[n, c, by*SH + ry, bx*SW + rx] = z[n, c, ry, (by, bx), rx]

The input gradient is the adjoint (dcols = sum over ry of dz[n, c, ry] @ taps[c, ry]^T,
folded by col2im). The weight gradient has no such structure (an off-diagonal zero
still gets a gradient); :mod:`.phase` takes it on the dense plan. Skipping zero
products changes only the order of the sums, hence the rounding; except that a NaN or
infinity in one input channel no longer spreads to other channels through zeros.
"""
from __future__ import annotations

from typing import NamedTuple

from ...backend import device, namespace
from ..im2col import col2im, im2col
from . import bands


class DiagonalCache(NamedTuple):
    x: object              # (N, C, H, W), the input
    wq: object             # (C*SH*SW, C, QH, QW), the phase weight
    stride: tuple


def channel_diagonal(weight) -> bool:
    """Whether a transposed convolution's weight (C, C, KH, KW) is zero off the channel
    diagonal (weight[i, o] = 0 for i != o). One reduction, hence one host sync on a GPU."""
    xp = namespace(weight)
    c_in, c_out = weight.shape[:2]
    if c_in != c_out or c_in == 1:
        return c_in == c_out
    eye = xp.reshape(xp.eye(c_in, dtype=xp.bool, device=device(weight)), (c_in, c_in, 1, 1))
    return not bool(xp.any(xp.where(eye, xp.zeros_like(weight), weight) != 0))


def _taps(wq, s):
    """(C*SH*SW, C, QH, QW) phase weight -> each channel's taps, (C, SH, QH*QW, SW):
    taps[c, ry, q, rx] = wq[(c*SH + ry)*SW + rx, c, q]."""
    xp = namespace(wq)
    c, qq = wq.shape[1], wq.shape[2] * wq.shape[3]
    w5 = xp.reshape(wq, (c, s[0] * s[1], c, qq))
    own = xp.stack([w5[i, :, i, :] for i in range(c)], axis=0)          # (C, SH*SW, QQ)
    return xp.permute_dims(xp.reshape(own, (c, s[0], s[1], qq)), (0, 1, 3, 2))


def upsample(x, wq, s):
    """The shuffled phase planes (N, C, BH*SH, BW*SW) of x (N, C, H, W) under the
    channel-diagonal phase weight ``wq``; ``(full, DiagonalCache)``."""
    xp = namespace(x, wq)
    n, c = x.shape[:2]
    qh, qw = wq.shape[2:]
    cols, (bh, bw) = im2col(x, (qh, qw), 1, (qh - 1, qw - 1))        # (N, C*QQ, BH*BW)
    colsT = xp.matrix_transpose(xp.reshape(cols, (n, c, 1, qh * qw, bh * bw)))
    z = colsT @ _taps(wq, s)                                          # (N, C, SH, BH*BW, SW)
    z6 = xp.permute_dims(xp.reshape(z, (n, c, s[0], bh, bw, s[1])), (0, 1, 3, 2, 4, 5))
    return xp.reshape(z6, (n, c, bh * s[0], bw * s[1])), DiagonalCache(x, wq, s)


def upsample_backward(dfull, cache):
    """dx (N, C, H, W) of :func:`upsample` from dfull (N, C, BH*SH, BW*SW)."""
    xp = namespace(dfull)
    x, wq, s = cache
    n, c = x.shape[:2]
    qh, qw = wq.shape[2:]
    bh, bw = dfull.shape[2] // s[0], dfull.shape[3] // s[1]
    dz = xp.permute_dims(xp.reshape(dfull, (n, c, bh, s[0], bw, s[1])), (0, 1, 3, 2, 4, 5))
    dz = xp.reshape(dz, (n, c, s[0], bh * bw, s[1]))
    dcolsT = xp.sum(dz @ xp.matrix_transpose(_taps(wq, s)), axis=2)      # (N, C, BH*BW, QQ)
    dcols = xp.reshape(xp.matrix_transpose(dcolsT), (n, c * qh * qw, bh * bw))
    return col2im(dcols, x.shape, (qh, qw), 1, (qh - 1, qw - 1))


def dense_cache(cache):
    """The banded plan's cache of the same (dense) phase convolution, for its weight gradient."""
    qh, qw = cache.wq.shape[2:]
    return bands.ConvCache(cache.x, cache.wq, False, (1, 1), (qh - 1, qw - 1), (1, 1))
