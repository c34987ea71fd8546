"""Per-thread reusable temporary buffers (:func:`scratch`) for band loops."""
from __future__ import annotations

import threading

import numpy as np

from .arrays import device, is_numpy, namespace

_SCRATCH = threading.local()


def scratch(shape, dtype, like, slot=0):
    """An uninitialised temporary array of ``shape`` beside ``like``.

    On NumPy it is a view of a buffer kept per thread and per ``slot`` and reused by
    the next call, so band loops do not page-fault fresh memory in every band; it is
    valid only until the next ``scratch`` call with the same slot in the same thread.
    Other backends get a fresh ``empty`` array.
    """
    if not is_numpy(like):
        return namespace(like).empty(shape, dtype=dtype, device=device(like))
    size = 1
    for dim in shape:
        size *= int(dim)
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    key = (slot, np.dtype(dtype))
    buf = buffers.get(key)
    if buf is None or buf.size < size:
        buf = buffers[key] = np.empty(size, dtype)
    return buf[:size].reshape(shape)
