"""Crop: cut a (h, w) window out of the spatial axes; its backward pads the gradient back.

x: (N, C, H, W), offset (oy, ox), size (h, w) -> y = x[:, :, oy:oy+h, ox:ox+w]
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import device, namespace
from .checks import check_ndim
from .im2col import pair


class CropCache(NamedTuple):
    x_shape: tuple
    offset: tuple
    dtype: object
    device: object
    xp: object


def crop(x, offset, size):
    """Crop ``x`` (N, C, H, W) to (N, C, h, w) starting at ``offset`` = (oy, ox).

    Returns ``(y, cache)``; the cache is the input shape, offset, dtype and device.
    """
    check_ndim(x, 4, "crop input x", "(N, C, H, W)")
    oy, ox = pair(offset, "offset")
    h, w = pair(size, "size")
    H, W = x.shape[2:]
    if oy < 0 or ox < 0 or h < 1 or w < 1 or oy + h > H or ox + w > W:
        raise ValueError(f"crop window offset ({oy}, {ox}) size ({h}, {w}) does not fit inside the input "
                         f"of spatial size ({H}, {W}) (input shape {tuple(x.shape)})")
    y = x[:, :, oy:oy + h, ox:ox + w]
    return y, CropCache(tuple(x.shape), (oy, ox), x.dtype, device(x), namespace(x))


def crop_backward(dy, cache):
    """Gradient of :func:`crop`: dy (N, C, h, w) -> dx (N, C, H, W), zero outside the window."""
    x_shape, (oy, ox), dtype, dev, xp = cache
    h, w = dy.shape[2:]
    dx = xp.zeros(x_shape, dtype=dtype, device=dev)
    dx[:, :, oy:oy + h, ox:ox + w] = dy
    return dx
