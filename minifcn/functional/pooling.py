"""Max pooling with Caffe/PyTorch ceil-mode rounding.

x: (N, C, H, W) -> y: (N, C, OH, OW) with kernel KH x KW, stride S, padding P:

    OH = floor((H + 2P - KH) / S) + 1                      (ceil_mode=False)
    OH = ceil((H + 2P - KH) / S) + 1, minus 1 if the last
         window would start at or past H + P               (ceil_mode=True)

Windows that hang over the edge see -inf there, so only real pixels can win.
The forward pass is KH*KW strided slices of the whole batch; it records which
kernel offset won each window, and the backward sends each dy to that one winner
(ties go to the first offset in row-major order).
"""
from __future__ import annotations

import math

from ..backend import device, namespace
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
    ``cache`` holds the winning kernel offset (ky*KW + kx) of every window.
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
    # (ceil-mode) window needs beyond the input.
    hp = max(h + 2 * ph, (oh - 1) * sh + kh)
    wp = max(w + 2 * pw, (ow - 1) * sw + kw)
    xpad = xp.full((n, c, hp, wp), -xp.inf, dtype=x.dtype, device=device(x))
    xpad[:, :, ph:ph + h, pw:pw + w] = x
    y = None
    for k in range(kh * kw):
        ky, kx = divmod(k, kw)
        v = xpad[:, :, _window(ky, oh, sh), _window(kx, ow, sw)]
        if y is None:
            y = xp.asarray(v, copy=True)
            arg = xp.zeros((n, c, oh, ow), dtype=xp.int32, device=device(x))
        else:
            better = v > y
            y = xp.where(better, v, y)
            arg = xp.where(better, xp.asarray(k, dtype=xp.int32, device=device(x)), arg)
    cache = (arg, tuple(x.shape), (hp, wp), (kh, kw), (sh, sw), (ph, pw))
    return y, cache


def max_pool2d_backward(dy, cache):
    """Gradient of :func:`max_pool2d`: dy (N, C, OH, OW) -> dx (N, C, H, W).

    dx[window winner] += dy[window]; every other input pixel of the window gets 0.
    """
    arg, x_shape, (hp, wp), (kh, kw), (sh, sw), (ph, pw) = cache
    xp = namespace(dy)
    n, c, h, w = x_shape
    oh, ow = arg.shape[2:]
    dxpad = xp.zeros((n, c, hp, wp), dtype=dy.dtype, device=device(dy))
    zero = xp.zeros((), dtype=dy.dtype, device=device(dy))
    for k in range(kh * kw):
        ky, kx = divmod(k, kw)
        dxpad[:, :, _window(ky, oh, sh), _window(kx, ow, sw)] += xp.where(arg == k, dy, zero)
    return dxpad[:, :, ph:ph + h, pw:pw + w]

