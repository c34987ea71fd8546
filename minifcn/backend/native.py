"""Native fast paths outside the array API, each with a portable fallback.

NumPy and CuPy get their own routine (``bincount``, ``matmul(out=)``, strided
views); any other array API namespace gets a plain equivalent, or ``None`` where
there is none, and the caller then takes its portable path.
"""
from __future__ import annotations

import importlib

import numpy as np

from .arrays import device, is_cupy, is_numpy, namespace


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
