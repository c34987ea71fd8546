"""Max-unpooling: put each value back where its max-pool found it (SegNet's decoder).

x, indices: (N, C, h, w); output_size (H, W) -> y: (N, C, H, W), zeros except

    y[n, c].flat[indices[n, c, i, j]] += x[n, c, i, j]

``indices`` are int64 flat positions ``row * W + col`` in each output plane, PyTorch's
convention, so the indices of ``max_pool2d_with_indices`` (or PyTorch's) unpool to the
pooled input's size. When several entries of a plane point at one position (the windows
of an overlapping pool can share a maximum) their values are SUMMED: this is exactly the
gradient of max pooling with respect to its input, so ``max_unpool2d(dy, indices)`` is
max-pool's backward. (PyTorch's CPU kernel keeps the last write instead; with the
non-overlapping 2x2/2 pools of SegNet both agree, since no position repeats.)

Backward is the adjoint, a gather: ``dx[n, c, i, j] = dy[n, c].flat[indices[n, c, i, j]]``.

The forward scatter is outside the array API (which has take / take_along_axis but no
put): NumPy and CuPy use their own ``bincount`` with weights; any other namespace a
portable, gather-only version (sort the indices per plane, find each output position's
run of equal indices with ``searchsorted``, add the run's values one step at a time).
Out-of-range indices are rejected before any gather or scatter (CuPy would wrap them
silently): that check reads min and max of ``indices`` back to the host, one
synchronisation per forward call.
"""
from __future__ import annotations

import operator
from typing import Any, NamedTuple

from ..backend import device, namespace, scatter_add_rows, to_numpy
from .checks import check_float, check_ndim


class UnpoolCache(NamedTuple):
    """indices: (N*C, h*w) int64 flat positions; input_shape (N, C, h, w); output_size (H, W)."""

    indices: Any
    input_shape: tuple
    output_size: tuple


def _output_size(output_size, n, c):
    """(H, W) from ``(H, W)`` or a full ``(N, C, H, W)`` (as PyTorch accepts)."""
    try:
        size = tuple(operator.index(s) for s in output_size)
    except TypeError:
        raise ValueError(f"max_unpool2d output_size must be two ints (H, W), got {output_size!r}") from None
    if len(size) == 4:
        if size[:2] != (n, c):
            raise ValueError(f"max_unpool2d output_size {size} does not match the input's (N, C) = ({n}, {c})")
        size = size[2:]
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"max_unpool2d output_size must be two positive ints (H, W), got {output_size!r}")
    return size


def _check_range(xp, flat, hw_out, output_size):
    """ValueError unless every flat index lies in [0, H*W). One host synchronisation."""
    lo, hi = (int(v) for v in to_numpy(xp.stack([xp.min(flat), xp.max(flat)])))
    if lo < 0 or hi >= hw_out:
        bad = lo if lo < 0 else hi
        raise ValueError(f"max_unpool2d indices must lie in [0, H*W) = [0, {hw_out}) for output_size "
                         f"{output_size}, got index {bad} (indices range from {lo} to {hi}); "
                         f"is output_size too small for these indices?")


def max_unpool2d(x, indices, output_size):
    """Max-unpooling. x: (N, C, h, w), indices: (N, C, h, w) integer -> ``(y, cache)``.

    y: (N, C, H, W) with (H, W) = ``output_size`` (a full (N, C, H, W) is accepted too);
    y is zero except ``y[n, c].flat[indices[n, c, i, j]] += x[n, c, i, j]`` (repeated
    positions sum). Raises ValueError for indices of another shape or a non-integer
    dtype, an output_size that is not two positive ints, and any index outside
    [0, H*W) (checked before the scatter; one host synchronisation).
    """
    check_ndim(x, 4, "max_unpool2d input x", "(N, C, h, w)")
    check_float(x, "max_unpool2d input x")
    n, c, h, w = x.shape
    if not hasattr(indices, "shape") or tuple(indices.shape) != tuple(x.shape):
        got = tuple(indices.shape) if hasattr(indices, "shape") else type(indices).__name__
        raise ValueError(f"max_unpool2d indices must have the input's shape (N, C, h, w) = {tuple(x.shape)}, "
                         f"got {got}")
    xp = namespace(x, indices)
    if not xp.isdtype(indices.dtype, "integral"):
        raise ValueError(f"max_unpool2d indices must be an integer array (int64 flat positions row * W + col), "
                         f"got dtype {indices.dtype}")
    out_h, out_w = _output_size(output_size, n, c)
    flat = xp.reshape(xp.astype(indices, xp.int64), (n * c, h * w))
    if n * c * h * w > 0:
        _check_range(xp, flat, out_h * out_w, (out_h, out_w))
    y = scatter_add_rows(xp.reshape(x, (n * c, h * w)), flat, out_h * out_w)
    return xp.reshape(y, (n, c, out_h, out_w)), UnpoolCache(flat, (n, c, h, w), (out_h, out_w))


def max_unpool2d_backward(dy, cache: UnpoolCache):
    """Gradient of :func:`max_unpool2d`. dy: (N, C, H, W) -> dx: (N, C, h, w).

    ``dx[n, c, i, j] = dy[n, c].flat[indices[n, c, i, j]]`` (a gather).
    """
    n, c, h, w = cache.input_shape
    out_h, out_w = cache.output_size
    if tuple(dy.shape) != (n, c, out_h, out_w):
        raise ValueError(f"max_unpool2d_backward dy must have the output's shape {(n, c, out_h, out_w)}, "
                         f"got {tuple(dy.shape)}")
    xp = namespace(dy)
    if n * c * h * w == 0:
        return xp.zeros((n, c, h, w), dtype=dy.dtype, device=device(dy))
    dx = xp.take_along_axis(xp.reshape(dy, (n * c, out_h * out_w)), cache.indices, axis=1)
    return xp.reshape(dx, (n, c, h, w))
