"""Coordinate maps and the crop offsets they give (minifcn.models.geometry)."""
from fractions import Fraction

import numpy as np
import pytest

from minifcn.layers import Conv2d, ConvTranspose2d, Crop, Dropout, Layer, MaxPool2d, ReLU
from minifcn.models import FCN8s, FCN8sAtOnce, FCN16s, FCN32s
from minifcn.models.geometry import (IDENTITY, CoordMap, compose, coord_map, crop_offset, output_stride,
                                     receptive_field)

WIDTH = 1 / 32


def fr_pair(a, b=None):
    b = a if b is None else b
    return (Fraction(a), Fraction(b))


def test_reference_offsets():
    """The offsets of the reference Caffe nets (voc-fcn32s/16s/8s): 19; 5, 27; 5, 9, 31."""
    assert FCN32s(width=WIDTH).crop_offsets() == {"upscore": (19, 19)}
    assert FCN16s(width=WIDTH).crop_offsets() == {"score_pool4": (5, 5), "upscore16": (27, 27)}
    expected8 = {"score_pool4": (5, 5), "score_pool3": (9, 9), "upscore8": (31, 31)}
    assert FCN8s(width=WIDTH).crop_offsets() == expected8
    assert FCN8sAtOnce(width=WIDTH).crop_offsets() == expected8
    m = FCN8s(width=WIDTH)
    assert [s.crop.offset for s in m.skips] == [(5, 5), (9, 9)] and m.crop_final.offset == (31, 31)


def test_same_padding_offsets_crop_h():
    """Same padding (conv1_1 pad 1, fc6 pad 3): the upsampled h starts one pixel before each
    skip, so h is cropped (keyed by the upsampling); the final offsets are 16; 8; 4 (worked
    out by hand in tests/test_fcn.py)."""
    assert FCN32s(width=WIDTH, same_padding=True).crop_offsets() == {"upscore": (16, 16)}
    assert FCN16s(width=WIDTH, same_padding=True).crop_offsets() == {"upscore2": (1, 1), "upscore16": (8, 8)}
    m = FCN8s(width=WIDTH, same_padding=True)
    assert m.crop_offsets() == {"upscore2": (1, 1), "upscore_pool4": (1, 1), "upscore8": (4, 4)}
    assert [s.crop_h.offset for s in m.skips] == [(1, 1), (1, 1)] and m.crop_final.offset == (4, 4)
    assert all(s.crop_h is None for s in FCN8s(width=WIDTH).skips)


def test_layer_maps_by_hand():
    # conv 3x3 pad 1: the window of output o is centred on input o
    assert coord_map(Conv2d(1, 1, 3, padding=1)) == CoordMap(fr_pair(1), fr_pair(0))
    # conv1_1: pad 100 moves the centre 99 pixels up-left
    assert coord_map(Conv2d(1, 1, 3, padding=100)) == CoordMap(fr_pair(1), fr_pair(-99))
    # 2x2/2 pool: output o covers inputs 2o, 2o+1, centred on 2o + 1/2
    assert coord_map(MaxPool2d(2, 2, ceil_mode=True)) == CoordMap(fr_pair(2), fr_pair(Fraction(1, 2)))
    # fc6: 7x7, no padding, centre o + 3
    assert coord_map(Conv2d(1, 1, 7)) == CoordMap(fr_pair(1), fr_pair(3))
    # upscore k64 s32: the inverse of a conv k64 s32 (x = 32 o + 31.5)
    assert coord_map(ConvTranspose2d(1, 1, 64, 32)) == CoordMap(fr_pair(Fraction(1, 32)),
                                                                fr_pair(Fraction(-63, 64)))
    assert coord_map(Crop((5, 7))) == CoordMap(fr_pair(1), fr_pair(5, 7))
    assert coord_map(ReLU()) == IDENTITY and coord_map(Dropout(0.5)) == IDENTITY
    with pytest.raises(TypeError, match="no coordinate map"):
        coord_map(object())


@pytest.mark.parametrize("k,s,p,d", [(3, 1, 1, 1), (4, 2, 1, 1), (5, 3, 0, 2), (7, 2, 3, 1), (16, 8, 0, 1)])
def test_maps_agree_with_the_layers_themselves(k, s, p, d):
    """Measure each map on the real layer: the centre of the input pixels an output pixel of a
    conv depends on (its gradient support), and the centre of the output pixels an input pixel
    of a transposed conv reaches, must be where the map says."""
    n = 40
    conv = Conv2d(1, 1, k, stride=s, padding=p, dilation=d, bias=False)
    conv.weight.data = np.ones_like(conv.weight.data)
    y = conv(np.zeros((1, 1, n, n), np.float32))
    m = coord_map(conv)
    o = y.shape[2] // 2                                    # an interior output pixel
    dy = np.zeros_like(y)
    dy[0, 0, o, o] = 1
    support = np.nonzero(conv.backward(dy)[0, 0].sum(axis=1))[0]
    assert len(support) == k                               # its whole window lies inside the input
    assert Fraction(support.min() + support.max(), 2) == m.scale[0] * o + m.shift[0]

    if d == 1:                                             # transposed convs are used undilated
        up = ConvTranspose2d(1, 1, k, stride=s, padding=p, init="zeros")
        up.weight.data = np.ones_like(up.weight.data)
        i = 5
        x = np.zeros((1, 1, 11, 11), np.float32)
        x[0, 0, i, i] = 1
        reach = np.nonzero(up(x)[0, 0].sum(axis=1))[0]
        assert len(reach) == k
        centre = Fraction(reach.min() + reach.max(), 2)
        mu = coord_map(up)
        assert mu.scale[0] * centre + mu.shift[0] == i


def test_pooling_maps_like_a_conv_of_its_window():
    assert coord_map(MaxPool2d(3, 2, padding=1)) == coord_map(Conv2d(1, 1, 3, stride=2, padding=1))


def test_compose_and_offset_arithmetic():
    # two layers: x = 2 x' + 1/2 and x' = x'' + 3  =>  x = 2 x'' + 6.5
    m = compose([MaxPool2d(2), Conv2d(1, 1, 7)])
    assert m == CoordMap(fr_pair(2), fr_pair(Fraction(13, 2)))
    assert compose([]) == IDENTITY
    big = CoordMap(fr_pair(1), fr_pair(-19))
    assert crop_offset(big, IDENTITY) == (19, 19)
    with pytest.raises(ValueError, match="different scales"):
        crop_offset(CoordMap(fr_pair(2), fr_pair(0)), IDENTITY)
    with pytest.raises(ValueError, match="not a non-negative integer"):
        crop_offset(CoordMap(fr_pair(1), fr_pair(Fraction(-37, 2))), IDENTITY)
    with pytest.raises(ValueError, match="not a non-negative integer"):
        crop_offset(CoordMap(fr_pair(1), fr_pair(4)), IDENTITY)


def test_conv1_padding_changes_offsets():
    """conv1_1's shift 1 - P enters every path at scale 1: one pixel less padding moves every
    blob one pixel, so the final crop shrinks by one while the skip crops (both paths through
    conv1_1) stay."""
    m = FCN32s(width=WIDTH)
    m.conv1_1.padding = 99
    assert m.crop_offsets() == {"upscore": (18, 18)}
    m = FCN8s(width=WIDTH)
    m.conv1_1.padding = (100, 90)
    assert m.crop_offsets() == {"score_pool4": (5, 5), "score_pool3": (9, 9), "upscore8": (31, 21)}


def test_upsampling_kernel_changes_offsets():
    # upscore k32 s32 instead of k64: its window centre moves from 31.5 to 15.5, so 19 - 16 = 3
    m = FCN32s(width=WIDTH)
    m.upscore = ConvTranspose2d(21, 21, 32, 32)
    assert m.crop_offsets() == {"upscore": (3, 3)}
    # upscore2 k6 instead of k4 (stride 2): upscore2's centre moves by 1/2 of a score_fr pixel
    # = 16 input pixels; in pool4 units (16 px) that is one pixel less for score_pool4 (4), and
    # the final crop grows by 16 (43)
    m = FCN16s(width=WIDTH)
    m.upscore2 = ConvTranspose2d(21, 21, 6, 2)
    assert m.crop_offsets() == {"score_pool4": (4, 4), "upscore16": (43, 43)}
    # an odd kernel with an even stride cannot be aligned by an integer crop
    m = FCN32s(width=WIDTH)
    m.upscore = ConvTranspose2d(21, 21, 63, 32)
    with pytest.raises(ValueError, match="not a non-negative integer"):
        m.crop_offsets()


# --- layers describe themselves: a new layer class needs no edits elsewhere ---------------
class Subsample(Layer):
    """Keeps every S-th pixel starting at pixel ``start``: a layer this library has never seen,
    declaring its own coordinate map (output o is input S o + start)."""

    category = "subsample"

    def __init__(self, s=2, start=1):
        self.s, self.start = s, start

    def coord_map(self):
        return CoordMap((Fraction(self.s),) * 2, (Fraction(self.start),) * 2)

    def forward(self, x):
        return x[:, :, self.start::self.s, self.start::self.s]


class NoMap(Layer):
    def forward(self, x):
        return x


def test_a_new_layer_class_brings_its_own_map():
    """The map is read off the layer, so composing, crop offsets and receptive fields work for
    a class defined here; the composed map agrees with what the layer really does."""
    path = [Conv2d(1, 1, 3, padding=1), Subsample(2, 1), Conv2d(1, 1, 3)]
    m = compose(path)
    # x = 1*(2*(1*o + 1) + 1) + 0 = 2 o + 3
    assert m == CoordMap(fr_pair(2), fr_pair(3))
    assert receptive_field(path) == (3 + 2 * 2, 3 + 2 * 2)
    assert crop_offset(compose([Subsample(2, 1)]), compose([Subsample(2, 5)])) == (2, 2)
    x = np.arange(40 * 40, dtype=np.float64).reshape(1, 1, 40, 40)
    y = Subsample(2, 1).forward(x)
    o = 7
    assert y[0, 0, o, 0] == x[0, 0, 2 * o + 1, 1]
    with pytest.raises(TypeError, match="no coordinate map for layer NoMap"):
        compose([Conv2d(1, 1, 3), NoMap()])
    with pytest.raises(TypeError, match="no coordinate map for layer NoMap"):
        receptive_field([NoMap()])

    class Liar(Layer):
        def coord_map(self):
            return (1, 0)

    with pytest.raises(TypeError, match=r"Liar.coord_map\(\) returned tuple, not a CoordMap"):
        coord_map(Liar())


def test_every_library_layer_reports_a_map_and_a_category():
    layers = {Conv2d(1, 1, 3): "conv3x3", Conv2d(1, 1, 7): "conv1x1/fc", Conv2d(1, 1, 1): "conv1x1/fc",
              ConvTranspose2d(1, 1, 4, 2): "transposed conv", MaxPool2d(2): "pooling", ReLU(): "elementwise",
              Dropout(0.5): "elementwise", Crop((1, 2)): "elementwise"}
    for layer, category in layers.items():
        assert isinstance(layer.coord_map(), CoordMap) and layer.category == category
    assert Layer.category is None and NoMap().category is None


# --- receptive fields ----------------------------------------------------------------------
@pytest.mark.parametrize("i", range(6))
def test_dilated_stack_receptive_field_matches_yu_and_koltun(i):
    """Yu & Koltun (ICLR 2016), section 2: 3x3 convolutions with dilations 1, 2, 4, ..., 2^i
    stacked give each output a (2^(i+2) - 1) x (2^(i+2) - 1) receptive field."""
    stack = [Conv2d(1, 1, 3, padding=2 ** j, dilation=2 ** j) for j in range(i + 1)]
    assert receptive_field(stack) == (2 ** (i + 2) - 1, 2 ** (i + 2) - 1)
    # measured on the real layers: the input pixels an interior output depends on
    for layer in stack:
        layer.weight.data = np.ones_like(layer.weight.data)
    n = 2 ** (i + 2) + 3
    h = np.zeros((1, 1, n, n), np.float32)
    for layer in stack:
        h = layer(h)
    dy = np.zeros_like(h)
    dy[0, 0, n // 2, n // 2] = 1
    for layer in reversed(stack):
        dy = layer.backward(dy)
    rows = np.nonzero(dy[0, 0].sum(axis=1))[0]
    assert rows.max() - rows.min() + 1 == 2 ** (i + 2) - 1


def test_receptive_fields_of_the_trunks():
    """VGG16's well-known 212 pixels at pool5 and 404 at fc7 (fc6's 7x7 at stride 32 adds
    6 * 32); conv and pool stride 1 and 2, dilation and a non-square kernel all enter."""
    m = FCN32s(width=WIDTH)
    assert receptive_field(m.trunk_until("pool5")) == (212, 212)
    assert receptive_field(m.trunk_until("drop7")) == (404, 404)
    assert output_stride(m.trunk_until("pool5")) == (32, 32) and output_stride([]) == (1, 1)
    assert receptive_field([Conv2d(1, 1, (1, 3), dilation=(1, 2))]) == (1, 5)
    assert receptive_field([]) == (1, 1)
