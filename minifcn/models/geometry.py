"""Coordinate maps along paths of layers: crop offsets and receptive fields, computed, never typed in.

Every spatial layer maps an output coordinate to an input coordinate by an affine map
per axis, ``x_in = a * x_out + b`` (the centre of the output pixel's window), and
reports it itself (``layer.coord_map()``, see :mod:`minifcn.coordmap` for the table
of maps; this module never looks at layer classes):

==================================  ====================  ==========================
layer (kernel K, stride S, pad P,   a                     b
dilation D; K' = D (K - 1) + 1)
==================================  ====================  ==========================
convolution, max pooling            S                     (K' - 1) / 2 - P
transposed convolution              1 / S                 (P - (K' - 1) / 2) / S
crop at offset O                    1                     O
ReLU, dropout, scaling              1                     0
==================================  ====================  ==========================

Maps compose along a path of layers; two paths from the same input whose maps have
the same scale differ only by a shift, and that shift, in units of the cropped
blob's pixels, is the crop offset:

    input = a * big + b_big = a * ref + b_ref   =>   big = ref + (b_ref - b_big) / a

This is the idea of Caffe's ``coord_map.py`` (used by the reference FCN nets). For
the reference VGG16-FCN it gives offsets 19 (FCN-32s); 5 and 27 (FCN-16s); 5, 9
and 31 (FCN-8s). Arithmetic is exact (fractions), so a misaligned net is detected.

The maps also carry each window's radius r (K' - 1) / 2, which composes as
``r + a * r'``; the receptive field of a path is ``2 r + 1`` input pixels per axis.
For 3x3 convolutions with dilations 1, 2, 4, ..., 2^i (Yu & Koltun, ICLR 2016) that
is 2^(i+2) - 1.
"""
from __future__ import annotations

from ..coordmap import IDENTITY, CoordMap

__all__ = ["CoordMap", "IDENTITY", "coord_map", "compose", "shift_between", "crop_offset",
           "receptive_field", "output_stride"]


def coord_map(layer) -> CoordMap:
    """The :class:`CoordMap` of one layer: whatever its ``coord_map()`` method reports.

    Raises TypeError naming the class of anything that has no such method (or whose
    method says it has no map)."""
    method = getattr(layer, "coord_map", None)
    if not callable(method):
        raise TypeError(f"no coordinate map for layer {type(layer).__name__}: it has no coord_map() method")
    m = method()
    if not isinstance(m, CoordMap):
        raise TypeError(f"{type(layer).__name__}.coord_map() returned {type(m).__name__}, not a CoordMap")
    return m


def compose(layers) -> CoordMap:
    """Map from the output of the last layer of ``layers`` (forward order) to the input of the first."""
    m = IDENTITY
    for layer in layers:
        m = m.then(coord_map(layer))
    return m


def receptive_field(layers) -> tuple[int, int]:
    """(size_y, size_x): how many input pixels per axis one output pixel of the path
    ``layers`` (forward order) depends on, dilation and strides included: ``2 r + 1``
    with the composed window radius r (recurrence r <- r + a * (K' - 1) / 2, a the
    product of the strides before the layer)."""
    size = compose(layers).receptive_field
    return tuple(int(s) if s.denominator == 1 else s for s in size)


def output_stride(layers) -> tuple:
    """(stride_y, stride_x): input pixels between neighbouring output pixels of the path
    (the composed scale; 32 for VGG16 to pool5, 8 for DeepLab's trunk)."""
    return tuple(int(a) if a.denominator == 1 else a for a in compose(layers).scale)


def shift_between(big: CoordMap, ref: CoordMap) -> tuple:
    """(oy, ox), exact fractions: the position in the blob with map ``big`` of the ref blob's
    first pixel, ``(b_ref - b_big) / a``. Negative where ``ref`` starts first (then ``ref``
    is the one to crop). Raises ValueError when the scales differ."""
    if big.scale != ref.scale:
        raise ValueError(f"cannot align blobs of different scales {_fmt(big.scale)} and {_fmt(ref.scale)}")
    return tuple((br - bb) / a for bb, br, a in zip(big.shift, ref.shift, big.scale))


def crop_offset(big: CoordMap, ref: CoordMap) -> tuple[int, int]:
    """Offset (oy, ox) at which to crop the blob with map ``big`` so it aligns with ``ref``.

    Both maps must lead to the same input. Raises ValueError when the scales differ or
    the offset is not a non-negative integer (the two paths cannot be aligned by a crop).
    """
    offset = shift_between(big, ref)
    if any(o.denominator != 1 or o < 0 for o in offset):
        raise ValueError(f"crop offset {_fmt(offset)} is not a non-negative integer: the two paths "
                         f"(shifts {_fmt(big.shift)} and {_fmt(ref.shift)}) cannot be aligned by a crop")
    return int(offset[0]), int(offset[1])


def _fmt(pair_):
    return "(" + ", ".join(str(v) for v in pair_) + ")"
