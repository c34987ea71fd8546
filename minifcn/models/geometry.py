"""Coordinate maps: where a pixel of a layer's output sits in its input.

Every spatial layer maps an output coordinate to an input coordinate by an affine map
per axis, ``x_in = a * x_out + b`` (the centre of the output pixel's window):

==================================  ====================  ==========================
layer (kernel K, stride S, pad P,   a                     b
dilation D; K' = D (K - 1) + 1)
==================================  ====================  ==========================
convolution, max pooling            S                     (K' - 1) / 2 - P
transposed convolution              1 / S                 (P - (K' - 1) / 2) / S
crop at offset O                    1                     O
ReLU, dropout, scaling              1                     0
==================================  ====================  ==========================

The transposed convolution's map is the inverse of the convolution's with the same
hyper-parameters (it is that convolution's adjoint). Maps compose along a path of
layers; two paths from the same input whose maps have the same scale differ only by
a shift, and that shift, in units of the cropped blob's pixels, is the crop offset:

    input = a * big + b_big = a * ref + b_ref   =>   big = ref + (b_ref - b_big) / a

This is the idea of Caffe's ``coord_map.py`` (used by the reference FCN nets). For
the reference VGG16-FCN it gives offsets 19 (FCN-32s); 5 and 27 (FCN-16s); 5, 9
and 31 (FCN-8s). Arithmetic is exact (fractions), so a misaligned net is detected.
"""
from __future__ import annotations

import dataclasses
from fractions import Fraction

from ..functional.im2col import pair
from ..layers import Conv2d, ConvTranspose2d, Crop, Dropout, MaxPool2d, ReLU


@dataclasses.dataclass(frozen=True)
class CoordMap:
    """``x_in = scale * x_out + shift`` on each spatial axis; ``scale``, ``shift`` are (y, x) pairs."""

    scale: tuple = (Fraction(1), Fraction(1))
    shift: tuple = (Fraction(0), Fraction(0))

    def then(self, inner: "CoordMap") -> "CoordMap":
        """The map of this path followed by one more layer with map ``inner``.

        With ``x = a x' + b`` (this path) and ``x' = a' x'' + b'`` (the next layer):
        ``x = (a a') x'' + (a b' + b)``.
        """
        return CoordMap(tuple(a * a2 for a, a2 in zip(self.scale, inner.scale)),
                        tuple(a * b2 + b for a, b2, b in zip(self.scale, inner.shift, self.shift)))


IDENTITY = CoordMap()


def _window(layer):
    """(K', S, P) per axis of a convolution-like layer as pairs of Fractions."""
    kernel = pair(layer.weight.shape[2:] if hasattr(layer, "weight") else layer.kernel_size, "kernel_size")
    stride = pair(getattr(layer, "stride", None) or kernel, "stride")
    padding = pair(getattr(layer, "padding", 0), "padding")
    dilation = pair(getattr(layer, "dilation", 1), "dilation")
    span = tuple(Fraction(d * (k - 1) + 1) for k, d in zip(kernel, dilation))
    return span, tuple(Fraction(s) for s in stride), tuple(Fraction(p) for p in padding)


def coord_map(layer) -> CoordMap:
    """The :class:`CoordMap` of one layer, read from its hyper-parameters (table above)."""
    if isinstance(layer, (Conv2d, MaxPool2d)):
        span, stride, pad = _window(layer)
        return CoordMap(stride, tuple((k - 1) / 2 - p for k, p in zip(span, pad)))
    if isinstance(layer, ConvTranspose2d):
        span, stride, pad = _window(layer)
        return CoordMap(tuple(1 / s for s in stride),
                        tuple((p - (k - 1) / 2) / s for k, s, p in zip(span, stride, pad)))
    if isinstance(layer, Crop):
        return CoordMap(shift=tuple(Fraction(o) for o in pair(layer.offset, "offset")))
    if isinstance(layer, (ReLU, Dropout)):
        return IDENTITY
    raise TypeError(f"no coordinate map for layer {type(layer).__name__}; expected Conv2d, "
                    f"ConvTranspose2d, MaxPool2d, Crop, ReLU or Dropout")


def compose(layers) -> CoordMap:
    """Map from the output of the last layer of ``layers`` (forward order) to the input of the first."""
    m = IDENTITY
    for layer in layers:
        m = m.then(coord_map(layer))
    return m


def crop_offset(big: CoordMap, ref: CoordMap) -> tuple[int, int]:
    """Offset (oy, ox) at which to crop the blob with map ``big`` so it aligns with ``ref``.

    Both maps must lead to the same input. Raises ValueError when the scales differ or
    the offset is not a non-negative integer (the two paths cannot be aligned by a crop).
    """
    if big.scale != ref.scale:
        raise ValueError(f"cannot align blobs of different scales {_fmt(big.scale)} and {_fmt(ref.scale)}")
    offset = tuple((br - bb) / a for bb, br, a in zip(big.shift, ref.shift, big.scale))
    if any(o.denominator != 1 or o < 0 for o in offset):
        raise ValueError(f"crop offset {_fmt(offset)} is not a non-negative integer: the two paths "
                         f"(shifts {_fmt(big.shift)} and {_fmt(ref.shift)}) cannot be aligned by a crop")
    return int(offset[0]), int(offset[1])


def _fmt(pair_):
    return "(" + ", ".join(str(v) for v in pair_) + ")"
