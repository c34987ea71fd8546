"""Max pooling with Caffe/PyTorch ceil-mode rounding: validate, pick a plan, run it.

x: (N, C, H, W) -> y: (N, C, OH, OW) with kernel KH x KW, stride S, padding P:

    OH = floor((H + 2P - KH) / S) + 1                      (ceil_mode=False)
    OH = ceil((H + 2P - KH) / S) + 1, minus 1 if the last
         window would start at or past H + P               (ceil_mode=True)

Windows that hang over the edge see -inf there, so only real pixels can win; the
gradient of each window goes to its first maximum in row-major order. The math is
:func:`.reference.max_pool2d`; the fast plan is :mod:`.fast.pool`.
"""
from __future__ import annotations

from . import reference
from .checks import check_float, check_ndim
from .fast import pool
from .im2col import pair, pool_output_size
from .mode import reference_enabled


def _check_inputs(op, x, kernel_size, stride, padding, ceil_mode):
    """Validate a pooling call; return kernel, stride, padding pairs and the output size."""
    check_ndim(x, 4, f"{op} input x", "(N, C, H, W)")
    check_float(x, f"{op} input x")
    k = pair(kernel_size, "kernel_size")
    s = pair(kernel_size if stride is None else stride, "stride")
    p = pair(padding, "padding")
    if min(k + s) < 1 or min(p) < 0:
        raise ValueError(f"{op} needs kernel_size, stride >= 1 and padding >= 0, got "
                         f"kernel_size={kernel_size!r}, stride={stride!r}, padding={padding!r}")
    if 2 * p[0] > k[0] or 2 * p[1] > k[1]:
        raise ValueError(f"{op} padding {p} must be at most half the kernel size {k}")
    if not isinstance(ceil_mode, bool):
        raise ValueError(f"{op} ceil_mode must be True or False, got {ceil_mode!r}")
    n, c, h, w = x.shape
    if min(x.shape) < 1:
        raise ValueError(f"{op} needs a non-empty input, got shape {tuple(x.shape)}")
    out = (pool_output_size(h, k[0], s[0], p[0], ceil_mode), pool_output_size(w, k[1], s[1], p[1], ceil_mode))
    if min(out) < 1:
        raise ValueError(f"{op} kernel {k[0]}x{k[1]} is larger than the padded input "
                         f"{h + 2 * p[0]}x{w + 2 * p[1]} (input shape {tuple(x.shape)})")
    return k, s, p, out


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """Max pooling. x: (N, C, H, W) -> ``(y, cache)``, y: (N, C, OH, OW).

    ``stride`` defaults to ``kernel_size``; ``padding`` must be at most half the kernel.
    """
    k, s, p, out = _check_inputs("max_pool2d", x, kernel_size, stride, padding, ceil_mode)
    if reference_enabled():
        return reference.max_pool2d(x, k, s, p, ceil_mode)
    return pool.max_pool2d(x, k, s, p, out)


def max_pool2d_with_indices(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """Max pooling that also returns where each maximum was (SegNet keeps these).

    Returns ``(y, indices, cache)``: y (N, C, OH, OW); indices int64 (N, C, OH, OW), the
    flat position ``h * W + w`` of each window's maximum in its input plane (PyTorch's
    convention; the first maximum in row-major window order wins ties). The cache goes
    to :func:`max_pool2d_backward`.
    """
    k, s, p, out = _check_inputs("max_pool2d_with_indices", x, kernel_size, stride, padding, ceil_mode)
    if reference_enabled():
        y, cache = reference.max_pool2d(x, k, s, p, ceil_mode)
        return y, reference.pool_indices(cache.winner, cache, out), cache
    return pool.max_pool2d(x, k, s, p, out, with_indices=True)


def max_pool2d_backward(dy, cache):
    """Gradient of :func:`max_pool2d` (and of :func:`max_pool2d_with_indices`):
    dy (N, C, OH, OW) -> dx (N, C, H, W); each dy goes to its window's maximum."""
    if isinstance(cache, reference.PoolCache):
        return reference.max_pool2d_backward(dy, cache)
    if isinstance(cache, pool.PoolCache):
        return pool.max_pool2d_backward(dy, cache)
    raise ValueError(f"max_pool2d_backward got a {type(cache).__name__}, not the cache of a max_pool2d")
