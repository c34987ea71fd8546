"""Max pooling as the element-wise maximum of KH*KW strided slices. Equals
:func:`..reference.max_pool2d` and its backward.

Why faster: the reference copies every window into im2col columns (KH*KW copies of
the input) and reduces them; here each kernel offset (ky, kx) is a strided view of the
padded input, and the output is the running maximum of those views, in cache-sized
channel groups on all cores. Backward finds which offset won each window by comparing
the views with the output (ties go to the first offset in row-major order, as the
reference's argmax) and sends each dy to that winner; no index array is stored, and
the cache keeps the input itself (which the layer before keeps anyway), padded again
into a reused buffer when needed (DeepLab's 3x3 pools pad by 1, ceil mode by a row).
SegNet's indices are found the same way (the first offset equal to the maximum) and
written as flat input positions directly, without integer division.
"""
from __future__ import annotations

from typing import NamedTuple

from ...backend import device, namespace, parallel_for, row_bands
from ..im2col import pad2d, window


class PoolCache(NamedTuple):
    x: object              # the input (N, C, H, W)
    y: object              # the output (N, C, OH, OW)
    padded_size: tuple     # (HP, WP) of the -inf padded input
    kernel: tuple
    stride: tuple
    padding: tuple


def window_views(xpad, kernel, stride, out_size, channels):
    """The KH*KW strided slices ``xpad[:, c0:c1, ky::S, kx::S]`` (OH x OW each), in
    row-major kernel-offset order, for the channels ``(c0, c1)``."""
    (kh, kw), (sh, sw), (oh, ow), (c0, c1) = kernel, stride, out_size, channels
    return [xpad[:, c0:c1, window(ky, oh, sh), window(kx, ow, sw)] for ky in range(kh) for kx in range(kw)]


def max_pool2d(x, k, s, p, out_size, with_indices=False):
    """The fast plan for validated arguments (pairs k, s, p; out_size (OH, OW)).

    Returns ``(y, cache)``, or ``(y, indices, cache)`` with ``with_indices``: indices
    (N, C, OH, OW) int64, the flat input position h * W + w of each window's maximum
    (the first in row-major window order), as :func:`..reference.pool_indices` gives.
    """
    xp = namespace(x)
    (n, c, h, w), (oh, ow) = x.shape, out_size
    size = (max(h + 2 * p[0], (oh - 1) * s[0] + k[0]), max(w + 2 * p[1], (ow - 1) * s[1] + k[1]))
    xpad = pad2d(x, p, value=-float("inf"), size=size, slot=2)
    y = xp.empty((n, c, oh, ow), dtype=x.dtype, device=device(x))
    indices = xp.empty((n, c, oh, ow), dtype=xp.int64, device=device(x)) if with_indices else None
    if with_indices:
        # window (oy, ox) starts at input (oy S - P, ox S - P); offset (ky, kx) adds ky W + kx,
        # and step[i] is what going from offset i to offset i + 1 adds
        dev = device(x)
        start = (xp.reshape(xp.arange(oh, dtype=xp.int64, device=dev), (oh, 1)) * s[0] - p[0]) * w \
            + xp.reshape(xp.arange(ow, dtype=xp.int64, device=dev), (1, ow)) * s[1] - p[1]
        step = [1 if (i + 1) % k[1] else w - k[1] + 1 for i in range(k[0] * k[1] - 1)]

    def chunk(c0, c1):
        views = window_views(xpad, k, s, (oh, ow), (c0, c1))
        m = views[0]
        for v in views[1:]:
            m = xp.maximum(m, v)
        y[:, c0:c1, :, :] = m
        if indices is not None:     # step past every offset before the first that holds the maximum
            best, not_yet = start, None
            for i, v in enumerate(views[:-1]):
                not_yet = v != m if not_yet is None else xp.logical_and(not_yet, v != m)
                best = best + xp.astype(not_yet, xp.int64) * step[i]
            indices[:, c0:c1, :, :] = best

    parallel_for(chunk, row_bands(c, n * size[0] * size[1], x), x)        # cache-sized channel groups
    cache = PoolCache(x, y, size, k, s, p)
    if with_indices:
        return y, indices, cache
    return y, cache


def max_pool2d_backward(dy, cache):
    """dx[window winner] += dy[window]; every other input pixel of the window gets 0."""
    x, y, (hp, wp), (kh, kw), (sh, sw), (ph, pw) = cache
    xp = namespace(dy)
    (n, c, h, w), (oh, ow) = x.shape, y.shape[2:]
    xpad = pad2d(x, (ph, pw), value=-float("inf"), size=(hp, wp), slot=2)
    # Windows that tile the padded input exactly (stride = kernel, no remainder) write
    # every element once, so dx needs no zero fill and no accumulation.
    tiles = (sh, sw) == (kh, kw) and (hp, wp) == (oh * sh, ow * sw)
    dxpad = (xp.empty if tiles else xp.zeros)((n, c, hp, wp), dtype=dy.dtype, device=device(dy))

    def chunk(c0, c1):
        views = window_views(xpad, (kh, kw), (sh, sw), (oh, ow), (c0, c1))
        yc, dyc = y[:, c0:c1, :, :], dy[:, c0:c1, :, :]
        taken = None
        for k, v in enumerate(views):
            win = v == yc
            if taken is not None:
                win = xp.logical_and(win, xp.logical_not(taken))
            if k < len(views) - 1:
                taken = win if taken is None else xp.logical_or(taken, win)
            g = dyc * xp.astype(win, dy.dtype)
            ky, kx = divmod(k, kw)
            idx = (slice(None), slice(c0, c1), window(ky, oh, sh), window(kx, ow, sw))
            if tiles:
                dxpad[idx] = g
            else:
                dxpad[idx] += g

    parallel_for(chunk, row_bands(c, n * hp * wp, dy), dy)
    if (hp, wp) == (h, w):
        return dxpad
    return dxpad[:, :, ph:ph + h, pw:pw + w]
