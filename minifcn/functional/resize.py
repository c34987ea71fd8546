"""Bilinear interpolation (resize), with PyTorch's ``F.interpolate(mode="bilinear")`` semantics.

x: (N, C, H, W) -> y: (N, C, OH, OW). Output row ``oh`` reads the source coordinate

    src = oh * (H - 1) / (OH - 1)                  align_corners=True   (src = 0 when OH == 1)
    src = max((oh + 0.5) * H / OH - 0.5, 0)        align_corners=False  (pixel centres; PyTorch's clamp)

and mixes the two neighbouring rows, i0 = floor(src), i1 = min(i0 + 1, H - 1), t = src - i0:

    y[oh] = (1 - t) * x[i0] + t * x[i1]

and the same along columns. Each axis is a linear map, so with the (OH, H) and (OW, W)
interpolation matrices A_h, A_w (at most two non-zeros per row, every row sums to 1)

    y  = A_h @ x @ A_w^T          (matmuls broadcast over N, C)
    dx = A_h^T @ dy @ A_w         (the backward is the transposed map)

The matrices are built on x's device from ``arange`` arithmetic, in x's dtype: no
host round trip, no gather or scatter. DeepLab's Interp layer (scores back to the
image size) is ``align_corners=True``.
"""
from __future__ import annotations

import operator
from typing import Any, NamedTuple

from ..backend import by_channels, device, namespace
from .checks import check_float, check_ndim


class InterpolateCache(NamedTuple):
    """What :func:`interpolate_bilinear_backward` needs: the two interpolation matrices."""

    a_h: Any          # (OH, H)
    a_w: Any          # (OW, W)


def _size_pair(size):
    """``size`` as a pair of positive ints (OH, OW); an int means (size, size)."""
    items = size if isinstance(size, (tuple, list)) else (size,)
    bad = len(items) not in (1, 2) or any(isinstance(v, bool) for v in items)
    try:
        vals = tuple(operator.index(v) for v in items)
    except TypeError:
        bad = True
    if bad or min(vals) < 1:
        raise ValueError(f"interpolate_bilinear size must be a positive int or a pair of positive ints "
                         f"(OH, OW), got {size!r}")
    return vals * 2 if len(vals) == 1 else vals


def interpolation_matrix(out_size, in_size, align_corners, like):
    """The (out_size, in_size) matrix A of 1-D linear interpolation (module docstring's rule).

    Row ``o`` holds weight 1 - t at column i0 and t at column i1 (added when i0 == i1), so
    ``A @ v`` resamples a length-``in_size`` signal ``v``. Built in ``like``'s dtype, on its device.
    """
    xp, dev, dtype = namespace(like), device(like), like.dtype
    dst = xp.arange(out_size, dtype=dtype, device=dev)
    if align_corners:
        src = dst * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    else:
        src = xp.clip((dst + 0.5) * (in_size / out_size) - 0.5, min=0.0)
    i0 = xp.floor(src)
    t = (src - i0)[:, None]
    i1 = xp.clip(i0 + 1.0, max=float(in_size - 1))
    cols = xp.arange(in_size, dtype=dtype, device=dev)[None, :]
    return (xp.astype(cols == i0[:, None], dtype) * (1.0 - t)
            + xp.astype(cols == i1[:, None], dtype) * t)


def _separable(a_h, z, a_w):
    """a_h @ z @ a_w^T for z (N, C, H, W), a_h (OH, H), a_w (OW, W), in the cheaper order.

    On NumPy in groups of channels on all cores (:func:`minifcn.backend.by_channels`),
    each with one BLAS thread: a product big enough for OpenBLAS to wake its own threads
    leaves them spinning for a while afterwards, which halves the speed of the band loops
    that follow (see :func:`minifcn.backend.one_blas_thread`)."""
    xp = namespace(z)
    (oh, h), (ow, w) = a_h.shape, a_w.shape
    a_wt = xp.matrix_transpose(a_w)
    columns_first = h * ow * (w + oh) <= oh * w * (h + ow)

    def channels(c0, c1):
        zc = z[:, c0:c1, ...]
        return a_h @ (zc @ a_wt) if columns_first else (a_h @ zc) @ a_wt

    out = xp.empty((z.shape[0], z.shape[1], oh, ow), dtype=z.dtype, device=device(z))
    return by_channels(channels, out)


def interpolate_bilinear(x, size, align_corners=False):
    """Resize x (N, C, H, W) to y (N, C, OH, OW), ``size`` = (OH, OW) (or one int for both).

    y = A_h @ x @ A_w^T with the interpolation matrices of the module docstring; ``align_corners``
    must be a bool. Returns ``(y, cache)``, cache an :class:`InterpolateCache`. y keeps x's dtype.
    """
    check_ndim(x, 4, "interpolate_bilinear input x", "(N, C, H, W)")
    check_float(x, "interpolate_bilinear input x")
    oh, ow = _size_pair(size)
    if not isinstance(align_corners, bool):
        raise ValueError(f"interpolate_bilinear align_corners must be a bool (True or False), "
                         f"got {align_corners!r}")
    h, w = x.shape[2:]
    if h < 1 or w < 1:
        raise ValueError(f"interpolate_bilinear needs an input of spatial size >= 1x1, got shape {tuple(x.shape)}")
    a_h = interpolation_matrix(oh, h, align_corners, x)
    a_w = interpolation_matrix(ow, w, align_corners, x)
    return _separable(a_h, x, a_w), InterpolateCache(a_h, a_w)


def interpolate_bilinear_backward(dy, cache):
    """Gradient of :func:`interpolate_bilinear`: dy (N, C, OH, OW) -> dx = A_h^T @ dy @ A_w, (N, C, H, W)."""
    a_h, a_w = cache
    check_ndim(dy, 4, "interpolate_bilinear_backward dy", "(N, C, OH, OW)")
    expected = (a_h.shape[0], a_w.shape[0])
    if tuple(dy.shape[2:]) != expected or dy.dtype != a_h.dtype:
        raise ValueError(f"interpolate_bilinear_backward dy must have shape (N, C, {expected[0]}, {expected[1]}) "
                         f"and dtype {a_h.dtype}, got shape {tuple(dy.shape)} and dtype {dy.dtype}")
    xp = namespace(dy)
    return _separable(xp.matrix_transpose(a_h), dy, xp.matrix_transpose(a_w))
