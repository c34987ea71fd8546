"""Coordinate maps: where an output pixel of a layer sits in the layer's input.

Every spatial layer maps an output coordinate to an input coordinate by an affine map
per axis, ``x_in = scale * x_out + shift`` (the centre of the output pixel's window),
and its window reaches ``radius`` input pixels either side of that centre:

==================================  ====================  ==========================  ============
layer (kernel K, stride S, pad P,   scale                 shift                       radius
dilation D; K' = D (K - 1) + 1)
==================================  ====================  ==========================  ============
convolution, max pooling            S                     (K' - 1) / 2 - P            (K' - 1) / 2
transposed convolution              1 / S                 (P - (K' - 1) / 2) / S      (K' - 1) / (2 S)
crop at offset O                    1                     O                           0
ReLU, dropout, scaling              1                     0                           0
==================================  ====================  ==========================  ============

Each layer class reports its own map (``layer.coord_map()``, built with the
constructors below), so code that aligns or measures layers never switches on
layer classes; this is the idea of Caffe's ``coord_map.py``. The arithmetic is exact
(fractions). This module knows no layer class: :mod:`minifcn.layers` imports it.
"""
from __future__ import annotations

import dataclasses
from fractions import Fraction

_ZERO = (Fraction(0), Fraction(0))


def _pair2(v, what):
    """``v`` as a (y, x) pair of Fractions; an int/Fraction stands for both axes."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{what} must be a number or a (y, x) pair, got {v!r}")
        return Fraction(v[0]), Fraction(v[1])
    return Fraction(v), Fraction(v)


@dataclasses.dataclass(frozen=True)
class CoordMap:
    """``x_in = scale * x_out + shift`` on each spatial axis; ``scale``, ``shift`` are (y, x) pairs.

    ``radius`` (a (y, x) pair, default 0) is how far the output pixel's window reaches
    either side of its centre, in input pixels: the window is
    ``[scale * x_out + shift - radius, scale * x_out + shift + radius]``, so a stack of
    layers sees ``2 * radius + 1`` input pixels per axis (its receptive field).
    Equality compares the affine map (scale and shift) only.
    """

    scale: tuple = (Fraction(1), Fraction(1))
    shift: tuple = _ZERO
    radius: tuple = dataclasses.field(default=_ZERO, compare=False)

    def then(self, inner: "CoordMap") -> "CoordMap":
        """The map of this path followed by one more layer with map ``inner``.

        With ``x = a x' + b`` (this path) and ``x' = a' x'' + b'`` (the next layer):
        ``x = (a a') x'' + (a b' + b)``; the windows nest, so radii add as ``r + a r'``.
        """
        return CoordMap(tuple(a * a2 for a, a2 in zip(self.scale, inner.scale)),
                        tuple(a * b2 + b for a, b2, b in zip(self.scale, inner.shift, self.shift)),
                        tuple(r + a * r2 for r, a, r2 in zip(self.radius, self.scale, inner.radius)))

    @property
    def receptive_field(self) -> tuple:
        """Input pixels per axis that one output pixel depends on: ``2 * radius + 1`` (Fractions)."""
        return tuple(2 * r + 1 for r in self.radius)

    # --- constructors for the layers' own maps ------------------------------------------
    @classmethod
    def window(cls, kernel, stride=1, padding=0, dilation=1) -> "CoordMap":
        """A sliding window (convolution, pooling): scale S, shift (K' - 1) / 2 - P, radius (K' - 1) / 2."""
        span = [d * (k - 1) + 1 for k, d in zip(_pair2(kernel, "kernel"), _pair2(dilation, "dilation"))]
        return cls(_pair2(stride, "stride"),
                   tuple((k - 1) / 2 - p for k, p in zip(span, _pair2(padding, "padding"))),
                   tuple(Fraction(k - 1, 2) for k in span))

    @classmethod
    def transposed_window(cls, kernel, stride=1, padding=0, dilation=1) -> "CoordMap":
        """The inverse of :meth:`window` with the same hyper-parameters (a transposed
        convolution is that convolution's adjoint): scale 1/S, shift (P - (K' - 1)/2) / S."""
        fwd = cls.window(kernel, stride, padding, dilation)
        return cls(tuple(1 / s for s in fwd.scale), tuple(-b / s for b, s in zip(fwd.shift, fwd.scale)),
                   tuple(r / s for r, s in zip(fwd.radius, fwd.scale)))

    @classmethod
    def offset(cls, offset) -> "CoordMap":
        """A crop at ``offset`` = (oy, ox): output pixel o is input pixel o + offset."""
        return cls(shift=_pair2(offset, "offset"))


IDENTITY = CoordMap()
