"""Constant-frame detection (:func:`constant_frame`) for FCN's padding-100 inputs.

FCN pads its input by 100 pixels, so early activations are one value per channel
around a small core; the convolution's frame plan computes that frame once. Finding
the frame reads the data on the host, so it is done on NumPy only. The settings
below are read from this module at every call.
"""
from __future__ import annotations

import numpy as np

from .arrays import is_numpy
from .threads import by_channels

FRAME_MIN_PIXELS = 32 * 32       # smaller images are not worth inspecting
FRAME_MAX_RING = 8               # outer rows/columns that may differ from the frame


def constant_frame(x):
    """Where every (n, c) plane of x (N, C, H, W) is one value v[n, c] around a core.

    Returns ``(box, ring)`` or None: outside ``box = (r0, r1, c0, c1)`` and inside an
    outer ring of ``ring = (a, b)`` rows/columns (a at the top and left, b at the bottom
    and right) every plane equals v = x[:, :, a, a]. The ring holds what saw zero
    padding in earlier layers (it grows by one per 3x3 convolution). None: no such
    frame, a small image, or a backend other than NumPy (finding it reads the data on
    the host, a GPU sync).
    """
    if not is_numpy(x) or x.ndim != 4 or x.shape[2] * x.shape[3] < FRAME_MIN_PIXELS:
        return None
    n, c, h, w = x.shape

    def ring_width(diagonal):      # first 2x2 block along the diagonal holding one value per plane
        for k in range(min(FRAME_MAX_RING, h - 2, w - 2) + 1):
            block = diagonal(k)
            if (block == block[:, :, :1, :1]).all():
                return k
        return None

    a = ring_width(lambda k: x[:, :, k:k + 2, k:k + 2])
    b = ring_width(lambda k: x[:, :, h - 2 - k:h - k, w - 2 - k:w - k])
    if a is None or b is None or a + b + 2 > min(h, w):
        return None
    inner = x[:, :, a:h - b, a:w - b]
    same = np.empty(inner.shape, dtype=bool)
    by_channels(lambda c0, c1: inner[:, c0:c1] == x[:, c0:c1, a:a + 1, a:a + 1], same)
    rows = np.flatnonzero(~same.all(axis=(0, 1, 3)))
    cols = np.flatnonzero(~same.all(axis=(0, 1, 2)))
    hi, wi = inner.shape[2:]
    if rows.size == 0 or (rows[0] == 0 and rows[-1] == hi - 1 and cols[0] == 0 and cols[-1] == wi - 1):
        return None
    box = int(rows[0]) + a, int(rows[-1]) + 1 + a, int(cols[0]) + a, int(cols[-1]) + 1 + a
    return box, (a, b)
