"""Bias borders: padding beyond the kernel's reach. Equals :func:`..reference.conv2d`.

With stride 1, a window whose last tap D(K - 1) lies in the zero padding sees zeros
only, so its output is the bias. Padding P beyond Q = min(P, D(K - 1)) therefore adds
nothing but P - Q rows/columns of bias around the output of the same convolution with
padding Q. Why faster: conv1_1 of the FCNs is padded by 100, so most of its output is
such a border; only the windows that touch the input are computed.
"""
from __future__ import annotations

from typing import NamedTuple

from ...backend import device, namespace


class ConvCache(NamedTuple):
    """The core convolution's cache and where its output sits in the full output."""

    offset: tuple          # (P - Q) per axis
    core_size: tuple       # (OH, OW) of the core output
    core: object           # the cache of the core convolution
    has_bias: bool


def reach(s, p, d, k):
    """Padding that still reaches x, and where its output sits in the full output:
    ``(Q, P - Q)`` with Q = min(P, D(K - 1)) for stride 1, ``(P, (0, 0))`` otherwise."""
    if s != (1, 1):
        return p, (0, 0)
    q = tuple(min(pi, di * (ki - 1)) for pi, di, ki in zip(p, d, k))
    return q, (p[0] - q[0], p[1] - q[1])


def conv2d(x, weight, bias, s, p, d, core_conv):
    """y (N, C_out, OH, OW): the core ``core_conv(x, weight, bias, s, Q, d)`` framed by bias.

    ``core_conv`` is the convolution that computes the core (the dispatching
    :func:`minifcn.functional.conv2d`, so the core takes its own fastest plan).
    """
    q, off = reach(s, p, d, weight.shape[2:])
    xp = namespace(x, weight)
    n, c_out = x.shape[0], weight.shape[0]
    core, core_cache = core_conv(x, weight, bias, s, q, d)
    oh, ow = core.shape[2] + 2 * off[0], core.shape[3] + 2 * off[1]
    y = xp.zeros((n, c_out, oh, ow), dtype=x.dtype, device=device(x))
    if bias is not None:
        y[...] = xp.reshape(bias, (1, c_out, 1, 1))
    y[:, :, off[0]:off[0] + core.shape[2], off[1]:off[1] + core.shape[3]] = core
    return y, ConvCache(off, tuple(core.shape[2:]), core_cache, bias is not None)


def conv2d_backward(dy, cache, need_dx, need_dweight, core_backward):
    """Outside the core dy reaches only the bias: the core's gradients plus the full dbias."""
    xp = namespace(dy)
    (oy, ox), (hc, wc) = cache.offset, cache.core_size
    dx, dweight, _ = core_backward(dy[:, :, oy:oy + hc, ox:ox + wc], cache.core, need_dx, need_dweight)
    return dx, dweight, (xp.sum(dy, axis=(0, 2, 3)) if cache.has_bias else None)
