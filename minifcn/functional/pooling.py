"""Max pooling with Caffe/PyTorch ceil-mode rounding.

x: (N, C, H, W) -> y: (N, C, OH, OW) with kernel KH x KW, stride S, padding P:

    OH = floor((H + 2P - KH) / S) + 1                      (ceil_mode=False)
    OH = ceil((H + 2P - KH) / S) + 1, minus 1 if the last
         window would start at or past H + P               (ceil_mode=True)

Windows that hang over the edge see -inf there, so only real pixels can win.
The forward pass is the element-wise maximum of KH*KW strided slices of the whole
batch; the backward finds which kernel offset won each window by comparing those
slices with the output, and sends each dy to that one winner (ties go to the first
offset in row-major order).
"""
from __future__ import annotations

import math

from ..backend import device, namespace, parallel_for, row_bands
from .checks import check_float, check_ndim
from .im2col import _window, pair


def pool_output_size(size, kernel, stride, padding=0, ceil_mode=False):
    """Output length of max pooling along one axis (see the module docstring)."""
    span = size + 2 * padding - kernel
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """Max pooling. x: (N, C, H, W) -> ``(y, cache)``, y: (N, C, OH, OW).

    ``stride`` defaults to ``kernel_size``; ``padding`` must be at most half the kernel.
    ``cache`` holds the (padded) input and the output: backward finds the winners by
    comparing them, so no index array is stored.
    """
    check_ndim(x, 4, "max_pool2d input x", "(N, C, H, W)")
    check_float(x, "max_pool2d input x")
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = pair(kernel_size if stride is None else stride, "stride")
    ph, pw = pair(padding, "padding")
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"max_pool2d needs kernel_size, stride >= 1 and padding >= 0, got "
                         f"kernel_size={kernel_size!r}, stride={stride!r}, padding={padding!r}")
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"max_pool2d padding {(ph, pw)} must be at most half the kernel size {(kh, kw)}")
    n, c, h, w = x.shape
    oh = pool_output_size(h, kh, sh, ph, ceil_mode)
    ow = pool_output_size(w, kw, sw, pw, ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(f"max_pool2d kernel {kh}x{kw} is larger than the padded input "
                         f"{h + 2 * ph}x{w + 2 * pw} (input shape {tuple(x.shape)})")
    xp = namespace(x)
    # Pad with -inf: P on the top/left, and on the bottom/right whatever the last
    # (ceil-mode) window needs beyond the input. Most FCN pools need no padding at all.
    hp = max(h + 2 * ph, (oh - 1) * sh + kh)
    wp = max(w + 2 * pw, (ow - 1) * sw + kw)
    xpad = x
    if (hp, wp) != (h, w):
        xpad = xp.full((n, c, hp, wp), -xp.inf, dtype=x.dtype, device=device(x))
        xpad[:, :, ph:ph + h, pw:pw + w] = x
    y = xp.empty((n, c, oh, ow), dtype=x.dtype, device=device(x))

    def chunk(c0, c1):
        views = _window_views(xpad, (kh, kw), (sh, sw), (oh, ow), (c0, c1))
        m = views[0] if len(views) == 1 else xp.maximum(views[0], views[1])
        for v in views[2:]:
            m = xp.maximum(m, v)
        y[:, c0:c1, :, :] = m

    parallel_for(chunk, row_bands(c, n * hp * wp, x), x)        # cache-sized channel groups
    cache = (xpad, y, tuple(x.shape), (kh, kw), (sh, sw), (ph, pw))
    return y, cache


def _window_views(xpad, kernel, stride, out_size, channels):
    """The KH*KW strided slices ``xpad[:, c0:c1, ky::S, kx::S]`` (OH x OW each), in
    row-major kernel-offset order, for the channels ``(c0, c1)``."""
    (kh, kw), (sh, sw), (oh, ow), (c0, c1) = kernel, stride, out_size, channels
    return [xpad[:, c0:c1, _window(ky, oh, sh), _window(kx, ow, sw)] for ky in range(kh) for kx in range(kw)]


def max_pool2d_backward(dy, cache):
    """Gradient of :func:`max_pool2d`: dy (N, C, OH, OW) -> dx (N, C, H, W).

    dx[window winner] += dy[window]; every other input pixel of the window gets 0.
    The winner of a window is the first kernel offset whose value equals the maximum.
    """
    xpad, y, x_shape, (kh, kw), (sh, sw), (ph, pw) = cache
    xp = namespace(dy)
    n, c, h, w = x_shape
    oh, ow = y.shape[2:]
    hp, wp = xpad.shape[2:]
    # Windows that tile the padded input exactly (stride = kernel, no remainder) write
    # every element once, so dx needs no zero fill and no accumulation.
    tiles = (sh, sw) == (kh, kw) and (hp, wp) == (oh * sh, ow * sw)
    dxpad = (xp.empty if tiles else xp.zeros)((n, c, hp, wp), dtype=dy.dtype, device=device(dy))

    def chunk(c0, c1):
        views = _window_views(xpad, (kh, kw), (sh, sw), (oh, ow), (c0, c1))
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
            idx = (slice(None), slice(c0, c1), _window(ky, oh, sh), _window(kx, ow, sw))
            if tiles:
                dxpad[idx] = g
            else:
                dxpad[idx] += g

    parallel_for(chunk, row_bands(c, n * hp * wp, dy), dy)
    if (hp, wp) == (h, w):
        return dxpad
    return dxpad[:, :, ph:ph + h, pw:pw + w]
