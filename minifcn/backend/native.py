"""Native fast paths outside the array API, each with a portable fallback.

NumPy and CuPy get their own routine (``bincount``, ``matmul(out=)``, strided
views); any other array API namespace gets a plain equivalent, or ``None`` where
there is none, and the caller then takes its portable path.
"""
from __future__ import annotations

import importlib

import numpy as np

from .arrays import device, is_cupy, is_numpy, namespace, to_numpy


def bincount(x, minlength: int):
    """Counts of each value in the 1-D non-negative integer array ``x``."""
    if is_numpy(x):
        return np.bincount(x, minlength=minlength)
    if is_cupy(x):
        cupy = importlib.import_module("cupy")
        return cupy.bincount(x, minlength=minlength)
    xp = namespace(x)
    values = xp.arange(minlength, device=device(x), dtype=x.dtype)
    return xp.sum(xp.astype(x[:, None] == values[None, :], xp.int64), axis=0)


def matmul(a, b, out=None):
    """``a @ b``, written into ``out`` where the backend supports it (NumPy), else fresh."""
    if out is not None and is_numpy(out) and is_numpy(a) and is_numpy(b):
        return np.matmul(a, b, out=out)
    return a @ b


def element_strides(x):
    """Strides of ``x`` in elements (NumPy/CuPy), or None where arrays expose none."""
    if is_numpy(x) or is_cupy(x):
        return tuple(s // x.itemsize for s in x.strides)
    return None


def as_strided(x, shape, strides_in_elements):
    """A strided view of ``x`` (NumPy/CuPy only); ``None`` where unsupported."""
    if is_numpy(x):
        item = x.itemsize
        return np.lib.stride_tricks.as_strided(x, shape, [s * item for s in strides_in_elements],
                                               writeable=False)
    if is_cupy(x):
        cupy = importlib.import_module("cupy")
        item = x.itemsize
        return cupy.lib.stride_tricks.as_strided(x, shape, [s * item for s in strides_in_elements])
    return None


def scatter_add_rows_portable(values, index, size):
    """Gather-only scatter-add for any array API namespace.

    values: (P, K) float; index: (P, K) int64 in [0, size) -> out: (P, size) with
    ``out[p, j] = sum of values[p, k] over k with index[p, k] == j`` (zero if none).
    Sorting puts each plane's equal indices in one run; ``searchsorted`` finds where
    the run of every output position j starts and ends; the runs are added one element
    at a time (as many steps as the longest run: 1 for unique indices), so sums are exact
    sums, not differences of prefix sums. Reads the longest run length to the host once.
    """
    xp = namespace(values, index)
    dev = device(values)
    p, k = values.shape
    if p * k == 0:
        return xp.zeros((p, size), dtype=values.dtype, device=dev)
    order = xp.argsort(index, axis=1, stable=True)
    offsets = xp.reshape(xp.arange(p, dtype=xp.int64, device=dev) * size, (p, 1))
    keys = xp.reshape(xp.take_along_axis(index, order, axis=1) + offsets, (-1,))       # sorted, 1-D
    ordered = xp.reshape(xp.take_along_axis(values, order, axis=1), (-1,))
    targets = xp.reshape(xp.reshape(xp.arange(size, dtype=xp.int64, device=dev), (1, size)) + offsets, (-1,))
    start = xp.searchsorted(keys, targets, side="left")
    stop = xp.searchsorted(keys, targets, side="right")
    longest = int(to_numpy(xp.max(stop - start)))
    out = xp.zeros(p * size, dtype=values.dtype, device=dev)
    for step in range(longest):
        pos = start + step
        hit = pos < stop
        picked = xp.take(ordered, xp.where(hit, pos, xp.zeros_like(pos)), axis=0)
        out = out + picked * xp.astype(hit, values.dtype)
    return xp.reshape(out, (p, size))


def scatter_add_rows(values, index, size):
    """``out[p, index[p, k]] += values[p, k]`` for values, index (P, K) -> out (P, size), repeats summed.

    NumPy and CuPy use their own ``bincount`` with weights; other namespaces
    :func:`scatter_add_rows_portable`."""
    if is_numpy(values) or is_cupy(values):
        xp = namespace(values)          # array_api_compat's numpy / cupy: their own bincount
        p, k = values.shape
        offsets = xp.reshape(xp.arange(p, dtype=xp.int64, device=device(values)) * size, (p, 1))
        flat = xp.reshape(index + offsets, (-1,))
        out = xp.bincount(flat, weights=xp.reshape(values, (-1,)), minlength=p * size)
        return xp.reshape(xp.astype(out, values.dtype, copy=False), (p, size))
    return scatter_add_rows_portable(values, index, size)
