"""Dilated-convolution segmenters: DeepLab-LargeFOV, DeepLab-ASPP (Chen et al.), and Yu &
Koltun's dilation front end and context module ("Multi-Scale Context Aggregation by
Dilated Convolutions", ICLR 2016).

All four keep the VGG16 trunk (:mod:`.vgg`, a table of stages) at output stride 8 by
dropping the last pools' strides and dilating what follows instead, then score the
stride-8 map and resize the scores bilinearly to the input's H x W::

    deeplab-largefov    DEEPLAB_LARGEFOV trunk (fc6 3x3 dilation 12, 1024; fc7 1x1)  -> fc8
    deeplab-aspp        DEEPLAB_VGG16 trunk -> 4 branches fc6_i (3x3, dilation 6/12/18/24,
                        1024) -> fc7_i (1x1) -> fc8_i, the 4 score maps summed       (ASPP-L)
    dilation-frontend   DILATION_FRONTEND trunk (fc6 7x7 dilation 4, 4096; fc7 1x1)  -> fc8
    dilation-context    dilation-frontend's scores -> the basic context module

then ``interpolate`` (an :class:`Interpolate`) to the input size.

Resizing. DeepLab's trunk (3x3 pad 1 convs, 3x3/2 pad 1 pools) puts score pixel i at
input pixel 8 i exactly (coordinate map scale 8, shift 0), which is what DeepLab's
Interp layer with ``align_corners=True`` assumes (exactly for H = 8 (h - 1) + 1, e.g. the
paper's 513 -> 65). The dilation front end's 2x2/2 pools put it at 8 i + 3.5, which is
the pixel-centre rule ``align_corners=False`` (exactly for H = 8 h); the models read the
rule from their trunk's coordinate map (:func:`resize_rule`), a test checks both.

Padding (any H, W >= 1). DeepLab pads every conv "same" (pad = dilation) and its pools
are 3x3 pad 1 in ceil mode, so every size works. Yu & Koltun's front end uses unpadded
convs on a reflection-padded image; here its convs are "same"-padded instead (3x3 pad 1,
conv5 pad 2, fc6 pad 12 = 4 * (7 - 1) / 2) with the VGG 2x2/2 ceil-mode pools, so a
1 x 1 image gives a 1 x 1 score map and every size is valid, at the same output stride 8.

Context module (Yu & Koltun, Table 1, "basic"): seven 3x3 convs with C = n_class channels
and dilations 1, 1, 2, 4, 8, 16, 1 (padding = dilation, so the size is kept), each
followed by a ReLU, then a 1x1 C -> C conv without ReLU; receptive field 67 x 67 on the
score map. Identity initialisation: each conv's weight is zero but the centre tap of
channel c -> c, which is 1; biases 0. The untrained module therefore computes
``max(x, 0)`` (the identity on non-negative input, as in the paper, whose truncations
follow every layer but the last). It is applied, as in the paper, to the front end's
scores, so fc8 starts from N(0, 0.01^2) (the DeepLab Caffe init) rather than zero: zero
scores would sit exactly at the ReLUs' kink and no gradient would reach the front end.

Initialisation: trunk convs He-normal (or ImageNet VGG16 by :meth:`load_vgg16`), every
``fc8`` N(0, 0.01^2), biases 0. ``load_vgg16`` loads the 13 VGG16 convolutions; DeepLab's
fc6/fc7 (3x3x1024 and 1024x1024) do not have VGG16's shapes and stay freshly initialised
(the DeepLab authors' subsampling of VGG's fc6 to 3x3/1024 is not done), while the
dilation front end's fc6 (7x7x4096) and fc7 do and are loaded as well.
"""
from __future__ import annotations

from .. import init as initializers
from ..layers import Conv2d, Dropout, Interpolate, Layer, ReLU
from .base import TrunkModel, check_n_class, register_model, twin_layer
from .geometry import compose
from .vgg import DEEPLAB_LARGEFOV, DEEPLAB_VGG16, DILATION_FRONTEND, FC, VGG16, channels

FC8_STD = 0.01                             # DeepLab's Caffe fc8 init: Gaussian, std 0.01
ASPP_RATES = (6, 12, 18, 24)               # ASPP-L (DeepLab v2)
CONTEXT_DILATIONS = (1, 1, 2, 4, 8, 16, 1)  # Yu & Koltun's basic context module, layers 1-7


def resize_rule(trunk_map) -> bool:
    """``align_corners`` for resizing the scores of a trunk with coordinate map ``trunk_map``
    (input = 8 * score + shift) back to the input: shift 0 puts score pixel 0 on input pixel 0
    (align_corners=True); shift (S - 1) / 2 puts it at the centre of the first S x S block
    (pixel-centre rule, align_corners=False). Other shifts fit neither rule: ValueError."""
    (sy, sx), (by, bx) = trunk_map.scale, trunk_map.shift
    if (by, bx) == (0, 0):
        return True
    if (by, bx) == ((sy - 1) / 2, (sx - 1) / 2):
        return False
    raise ValueError(f"scores at input = {sy} * y + {by}, {sx} * x + {bx} fit neither bilinear rule")


class Chain(Layer):
    """Layers applied in order, held as the owner's own members (no name prefix): a branch of
    ASPP or the context module. ``forward(x)`` / ``backward(dy)``; ``coord_map()`` composes."""

    def __init__(self, layers):
        self.chain = list(layers)
        for name, layer in self.chain:
            setattr(self, name, layer)

    def coord_map(self):
        return compose(layer for _, layer in self.chain)

    def forward(self, x):
        for _, layer in self.chain:
            x = layer(x)
        return x

    def backward(self, dy):
        for _, layer in reversed(self.chain):
            dy = layer.backward(dy)
        return dy


def fc_chain(rows, c_in, width, dropout, rng, init_rng, suffix=""):
    """``[(name, layer)]`` for trunk-table :class:`FC` rows: fc{i}{suffix}, relu{i}{suffix},
    drop{i}{suffix} (ASPP's branches are the table's FC rows, named with ``_k``)."""
    layers = []
    for row in rows:
        c_out = channels(row.channels, width)
        layers.append((f"fc{row.index}{suffix}", Conv2d(c_in, c_out, row.kernel, padding=row.padding,
                                                        dilation=row.dilation, rng=init_rng)))
        layers.append((f"relu{row.index}{suffix}", ReLU()))
        if row.dropout:
            layers.append((f"drop{row.index}{suffix}", Dropout(dropout, rng)))
        c_in = c_out
    return layers, c_in


def score_layer(c_in, n_class, init_rng):
    """A 1x1 conv to ``n_class`` scores, weights N(0, FC8_STD^2), bias 0."""
    conv = Conv2d(c_in, n_class, 1, init="zeros")
    # he_normal draws N(0, 2 / fan_in): fan_in = 2 / std^2 gives N(0, std^2)
    conv.weight.data = initializers.he_normal(conv.weight.shape, init_rng, fan_in=round(2 / FC8_STD ** 2))
    return conv


def identity_conv(c, kernel, dilation, init_rng=None):
    """A C -> C conv (padding = dilation * (kernel - 1) / 2) initialised to the identity:
    weight[c, c, centre, centre] = 1, every other weight and the bias 0."""
    conv = Conv2d(c, c, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation, init="zeros")
    w = initializers.zeros(conv.weight.shape)
    for i in range(c):
        w[i, i, kernel // 2, kernel // 2] = 1.0
    conv.weight.data = w
    return conv


def context_module(c):
    """Yu & Koltun's basic context module on C channels, identity-initialised (module docstring)."""
    layers = []
    for k, d in enumerate(CONTEXT_DILATIONS, start=1):
        layers += [(f"ctx_conv{k}", identity_conv(c, 3, d)), (f"ctx_relu{k}", ReLU())]
    layers.append(("ctx_final", identity_conv(c, 1, 1)))
    return Chain(layers)


class DilatedSegmenter(TrunkModel):
    """Base of the four models: a trunk from ``TRUNK`` (held inline, so parameters are named
    ``conv1_1.weight`` ... ``fc7.bias``), heads that score its output, their scores summed,
    and the bilinear resize back to the input.

    ``forward(x)``: x (N, 3, H, W) preprocessed (BGR, mean subtracted), any H, W >= 1 ->
    scores (N, n_class, H, W). ``backward(dscores, need_dx=True)`` -> dx (N, 3, H, W) (None
    when ``need_dx`` is False), adding into every unfrozen parameter's gradient.
    """

    name = ""
    TRUNK = DEEPLAB_LARGEFOV

    def __init__(self, n_class=21, width=1.0, dropout=0.5, seed=0, learn_upsampling=False):
        check_n_class(n_class)
        if learn_upsampling:         # the trainer passes the FCN option to every model
            raise ValueError(f"{self.name} resizes its scores by fixed bilinear interpolation: "
                             f"learn_upsampling must be False, got {learn_upsampling!r}")
        self.register_inline("backbone", VGG16(self.TRUNK, width=width, dropout=dropout, seed=seed))
        self.n_class, self.dropout, self.seed = int(n_class), dropout, seed
        self.heads = []
        init_rng = initializers.generator([seed, 1])
        for k, head in enumerate(self._heads(init_rng)):
            self.heads.append(self.register_inline(f"head{k + 1}", Chain(head)))
        self.interpolate = Interpolate(align_corners=resize_rule(self.backbone.coord_map()))

    def _heads(self, init_rng):
        """One ``[(name, layer)]`` per parallel head on the trunk's output (their scores add)."""
        return [[("fc8", score_layer(self.out_channels, self.n_class, init_rng))]]

    @property
    def config(self) -> dict:
        return {"name": self.name, "n_class": self.n_class, "width": self.width, "dropout": self.dropout,
                "seed": self.seed}

    def load_vgg16(self, path, fc=None):
        """ImageNet VGG16 weights into the trunk (:meth:`.vgg.VGG16.load_vgg16`): the 13 convs, and
        fc6 / fc7 too when the trunk has VGG16's (``fc=None``: exactly when it does)."""
        if fc is None:
            fc = any(isinstance(r, FC) and (r.index, r.channels, r.kernel) in ((6, 4096, 7), (7, 4096, 1))
                     for r in self.TRUNK)
        self.backbone.load_vgg16(path, fc)
        return self

    def score_path(self, head=0):
        """The layers from the input to head ``head``'s scores (coordinate maps, receptive field)."""
        return [layer for _, layer in self.trunk] + [self.heads[head]]

    def coord_map(self):
        """Map from the score grid (before the resize) to the input; all heads share it."""
        return compose(self.score_path())

    def torch_module(self):
        """The same model in PyTorch (``torch.nn.Module``), weights copied, every layer built by
        its own ``torch_module()`` and registered under its minifcn name (``minifcn bench
        --compare torch``)."""
        from torch import nn

        model = self

        class Twin(nn.Module):
            def __init__(self):
                super().__init__()
                self.trunk_ops = [twin_layer(self, name, layer) for name, layer in model.trunk]
                self.head_ops = [[twin_layer(self, name, layer) for name, layer in head.chain] for head in model.heads]
                self.resize = model.interpolate.torch_module()

            def forward(self, x):
                h = x
                for op in self.trunk_ops:
                    h = op(h)
                scores = 0
                for ops in self.head_ops:
                    s = h
                    for op in ops:
                        s = op(s)
                    scores = scores + s
                return self.resize(scores, x.shape[2:])

        return Twin()

    # --- passes ---------------------------------------------------------------------
    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} input x must have shape (N, 3, H, W), got {tuple(x.shape)}")
        h = self.backbone.forward(x)
        scores = None
        for head in self.heads:
            s = head(h)
            scores = s if scores is None else scores + s
        self._out_shape = (x.shape[0], self.n_class, *x.shape[2:])
        return self.interpolate(scores, tuple(x.shape[2:]))

    def backward(self, dscores, need_dx=True):
        expected = getattr(self, "_out_shape", None)
        if expected is None or tuple(dscores.shape) != expected:
            raise ValueError(f"{type(self).__name__}.backward needs dscores of the last forward's output "
                             f"shape {expected}, got {tuple(dscores.shape)}")
        self._out_shape = None
        ds = self.interpolate.backward(dscores)
        dh = None
        for head in self.heads:                      # the sum hands ds to every head
            g = head.backward(ds)
            dh = g if dh is None else dh + g
        return self.backbone.backward(dh, need_dx=need_dx)


@register_model
class DeepLabLargeFOV(DilatedSegmenter):
    """DeepLab-LargeFOV (Chen et al., ICLR 2015): the DEEPLAB_LARGEFOV trunk + ``fc8``
    (1x1, n_class); 20.5M parameters at width 1 with 21 classes."""

    name = "deeplab-largefov"
    TRUNK = DEEPLAB_LARGEFOV


@register_model
class DeepLabASPP(DilatedSegmenter):
    """DeepLab-ASPP-L (Chen et al., TPAMI 2017): the DEEPLAB_VGG16 trunk (to pool5) and four
    branches ``fc6_k`` (3x3, dilation = padding = 6, 12, 18, 24, 1024) ``relu6_k drop6_k
    fc7_k`` (1x1, 1024) ``relu7_k drop7_k fc8_k`` (1x1, n_class), k = 1..4, scores summed."""

    name = "deeplab-aspp"
    TRUNK = DEEPLAB_VGG16

    def _heads(self, init_rng):
        heads = []
        for k, rate in enumerate(ASPP_RATES, start=1):
            rows = (FC(6, 1024, 3, dilation=rate, padding=rate), FC(7, 1024, 1))
            layers, c = fc_chain(rows, self.out_channels, self.width, self.dropout, self.rng, init_rng, f"_{k}")
            heads.append(layers + [(f"fc8_{k}", score_layer(c, self.n_class, init_rng))])
        return heads


@register_model
class DilationFrontend(DilatedSegmenter):
    """Yu & Koltun's front end: the DILATION_FRONTEND trunk (VGG16 without pool4 / pool5,
    conv5 dilation 2, fc6 7x7 dilation 4) + ``fc8`` (1x1, n_class); output stride 8."""

    name = "dilation-frontend"
    TRUNK = DILATION_FRONTEND


@register_model
class DilationContext(DilatedSegmenter):
    """The dilation front end followed by the basic context module on its scores
    (``ctx_conv1`` ... ``ctx_conv7``, ``ctx_final``; identity-initialised, see the module docstring)."""

    name = "dilation-context"
    TRUNK = DILATION_FRONTEND

    def _heads(self, init_rng):
        fc8 = score_layer(self.out_channels, self.n_class, init_rng)
        return [[("fc8", fc8)] + context_module(self.n_class).chain]


__all__ = ["DilatedSegmenter", "DeepLabLargeFOV", "DeepLabASPP", "DilationFrontend", "DilationContext",
           "Chain", "context_module", "resize_rule", "ASPP_RATES", "CONTEXT_DILATIONS"]
