"""The VGG16 trunk (Simonyan & Zisserman 2015), written once and described by a table.

A trunk is a tuple of rows, built in order by :class:`VGG16`:

* ``Stage(channels, convs, dilation=1, padding=None, pool=Pool(), batch_norm=False, kernel=3)``:
  ``convs`` convolutions ``conv{b}_{i}`` (b: the stage's number, counting Stage rows
  from 1) of ``channels`` outputs, each followed by ``conv{b}_{i}_bn`` when
  ``batch_norm`` and by ``relu{b}_{i}``, then the max pool ``pool{b}`` unless
  ``pool=None``. ``dilation`` and ``padding`` are one value for every conv or a tuple
  with one value per conv; ``padding=None`` is "same" padding ``dilation * (kernel - 1) // 2``.
* ``Pool(kernel=2, stride=None, padding=0, ceil_mode=False, keep_indices=False)``:
  a stage's pool (stride None = kernel); ``keep_indices`` asks for a pool that keeps
  its argmax positions (SegNet's decoder unpools with them).
* ``FC(index, channels, kernel, dilation=1, padding=0, dropout=True)``: the
  convolutionalised classifier layer ``fc{index}``, then ``relu{index}`` and, when
  ``dropout``, ``drop{index}``.

The tables here:

=====================  =========================================================
``FCN_VGG16``          the FCN trunk (Long et al. 2015): conv1_1 pad 100, 3x3 pad 1,
                       2x2/2 pools in ceil mode, fc6 7x7, fc7 1x1 (4096), dropout
``FCN_VGG16_SAME``     the same with "same" padding: conv1_1 pad 1, fc6 pad 3
``DEEPLAB_VGG16``      DeepLab (Chen et al.): pools 1-3 3x3/2 pad 1 ceil, pools 4-5
                       3x3/1 pad 1, conv5 dilation 2 pad 2 (output stride 8), no fc
``DEEPLAB_LARGEFOV``   DEEPLAB_VGG16 + fc6 3x3 dilation 12 pad 12 (1024), fc7 1x1 (1024)
``DILATION_FRONTEND``  Yu & Koltun's front end: no pool4 / pool5, conv5 dilation 2,
                       fc6 7x7 dilation 4 ("same" padding 12 here), fc7 1x1 (4096)
``SEGNET_ENCODER``     SegNet (Badrinarayanan et al.): conv + BN + ReLU, 2x2/2 ceil
                       pools keeping their indices, no fc
=====================  =========================================================

``width`` scales every channel count to ``max(1, round(c * width))`` (``width=1/4``
gives 16-32-64-128-128 and fc 1024 for the FCN trunk). The 100-pixel padding of
conv1_1 makes the FCN trunk accept any input size H, W >= 1: pool5 is then at least
7x7, the size of fc6's kernel. Dropout is Caffe's element-wise dropout with
probability ``dropout``.
"""
from __future__ import annotations

import dataclasses
import math

from ..backend import RNG, backend_of
from ..init import generator
from ..layers import Conv2d, Dropout, Layer, MaxPool2d, ReLU
from .base import check_dropout, check_width
from .geometry import compose


@dataclasses.dataclass(frozen=True)
class Pool:
    """A stage's max pool: ``kernel`` x ``kernel`` windows at ``stride`` (None: = kernel),
    ``padding``, ``ceil_mode``; ``keep_indices`` for a pool that keeps its argmax positions."""

    kernel: int = 2
    stride: int | None = None
    padding: int = 0
    ceil_mode: bool = False
    keep_indices: bool = False


@dataclasses.dataclass(frozen=True)
class Stage:
    """``convs`` convs of ``channels`` outputs (+ BN) + ReLU each, then ``pool`` (None: no pool).

    ``dilation`` / ``padding``: one value for all convs or a tuple of one per conv (each
    an int or a (y, x) pair); ``padding=None`` is "same" padding ``dilation * (kernel - 1) // 2``.
    """

    channels: int
    convs: int
    dilation: int | tuple = 1
    padding: int | tuple | None = None
    pool: Pool | None = Pool()
    batch_norm: bool = False
    kernel: int = 3

    def conv_settings(self):
        """[(dilation, padding)] for each conv of the stage."""
        def per_conv(value, what):
            if isinstance(value, tuple):
                if len(value) != self.convs:
                    raise ValueError(f"Stage {what}={value!r} must hold one value per conv ({self.convs})")
                return list(value)
            return [value] * self.convs

        dilations = per_conv(self.dilation, "dilation")
        paddings = per_conv(self.padding, "padding")
        return [(d, p if p is not None else _same_padding(self.kernel, d)) for d, p in zip(dilations, paddings)]


@dataclasses.dataclass(frozen=True)
class FC:
    """A convolutionalised fully connected layer ``fc{index}``: ``kernel`` x ``kernel``
    conv of ``channels`` outputs, ReLU ``relu{index}``, dropout ``drop{index}`` if ``dropout``."""

    index: int
    channels: int
    kernel: int
    dilation: int = 1
    padding: int = 0
    dropout: bool = True


def _same_padding(kernel, dilation):
    if isinstance(dilation, tuple):
        return tuple(d * (kernel - 1) // 2 for d in dilation)
    return dilation * (kernel - 1) // 2


CEIL_2X2 = Pool(2, 2, ceil_mode=True)
FCN_VGG16 = (
    Stage(64, 2, padding=(100, 1), pool=CEIL_2X2),
    Stage(128, 2, pool=CEIL_2X2),
    Stage(256, 3, pool=CEIL_2X2),
    Stage(512, 3, pool=CEIL_2X2),
    Stage(512, 3, pool=CEIL_2X2),
    FC(6, 4096, 7),
    FC(7, 4096, 1),
)
# "same" padding everywhere (conv1_1 pad 1, fc6 pad 3): the score map is the input's size
# over 32 without the 100-pixel margin; the heads then crop the upsampled scores instead
# of the skips (see minifcn.models.fcn)
FCN_VGG16_SAME = (dataclasses.replace(FCN_VGG16[0], padding=1),) + FCN_VGG16[1:5] + \
    (dataclasses.replace(FCN_VGG16[5], padding=3), FCN_VGG16[6])
# the FCN trunk's (channels, convs) per stage and fc width, as plain numbers
STAGES = tuple((row.channels, row.convs) for row in FCN_VGG16 if isinstance(row, Stage))
FC_CHANNELS = FCN_VGG16[-1].channels

_DOWN, _KEEP = Pool(3, 2, 1, ceil_mode=True), Pool(3, 1, 1, ceil_mode=True)
DEEPLAB_VGG16 = (
    Stage(64, 2, pool=_DOWN),
    Stage(128, 2, pool=_DOWN),
    Stage(256, 3, pool=_DOWN),
    Stage(512, 3, pool=_KEEP),
    Stage(512, 3, dilation=2, pool=_KEEP),
)
DEEPLAB_LARGEFOV = DEEPLAB_VGG16 + (FC(6, 1024, 3, dilation=12, padding=12), FC(7, 1024, 1))
DILATION_FRONTEND = (
    Stage(64, 2, pool=CEIL_2X2),
    Stage(128, 2, pool=CEIL_2X2),
    Stage(256, 3, pool=CEIL_2X2),
    Stage(512, 3, pool=None),
    Stage(512, 3, dilation=2, pool=None),
    FC(6, 4096, 7, dilation=4, padding=12),
    FC(7, 4096, 1),
)
_INDEXED = Pool(2, 2, ceil_mode=True, keep_indices=True)
SEGNET_ENCODER = tuple(Stage(c, n, batch_norm=True, pool=_INDEXED)
                       for c, n in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)))

# torchvision's vgg16 / vgg16_bn: convs per stage (features has one pool after each) and
# where fc6 / fc7 sit in `classifier`
_TORCHVISION_STAGES = (2, 2, 3, 3, 3)
_TORCHVISION_FC = {6: "classifier.0", 7: "classifier.3"}


def channels(c: int, width: float) -> int:
    """Channel count ``c`` scaled by ``width``: ``max(1, round(c * width))``."""
    return max(1, round(c * width))


def max_pool(spec: Pool) -> MaxPool2d:
    """The default pool factory: a :class:`~minifcn.layers.MaxPool2d` from a :class:`Pool` row."""
    return MaxPool2d(spec.kernel, spec.stride, spec.padding, spec.ceil_mode, return_indices=spec.keep_indices)


class VGG16(Layer):
    """A trunk built from ``table`` (default :data:`FCN_VGG16`) as one ordered list of layers.

    ``self.trunk`` is the list of ``(name, layer)`` in forward order; every layer is also
    an attribute (``self.conv1_1``, ...), so parameters are named ``conv1_1.weight``,
    ``fc6.bias``, ... as in torchfcn. ``self.rng`` is the :class:`~minifcn.backend.RNG`
    every dropout layer draws from; initial weights come from ``seed``.

    Layer factories: ``batch_norm(channels) -> Layer`` builds the layer after each conv
    of a ``batch_norm`` stage (required by such a stage; e.g. a BatchNorm2d class), and
    ``pool(spec: Pool) -> Layer`` builds each stage's pool (default :func:`max_pool`).
    """

    def __init__(self, table=FCN_VGG16, width=1.0, dropout=0.5, seed=0, in_channels=3,
                 batch_norm=None, pool=max_pool):
        check_width(width)
        check_dropout(dropout)
        self.table, self.width, self.dropout = tuple(table), width, dropout
        self.rng = RNG(seed)
        init_rng = generator(seed)
        self.trunk = []
        self._channels = {}              # output channels of every trunk layer
        self._sources = {}               # conv name -> its torchvision vgg16 key prefix
        c_in, block = in_channels, 0
        for row in self.table:
            if isinstance(row, Stage):
                block += 1
                c_out = channels(row.channels, width)
                per = 3 if row.batch_norm else 2          # torchvision features: conv, (bn,) relu
                first = sum(n * per + 1 for n in _TORCHVISION_STAGES[:block - 1])
                for i, (dil, pad) in enumerate(row.conv_settings(), start=1):
                    name = f"conv{block}_{i}"
                    self._add(name, Conv2d(c_in, c_out, row.kernel, padding=pad, dilation=dil, rng=init_rng), c_out)
                    if block <= len(_TORCHVISION_STAGES) and i <= _TORCHVISION_STAGES[block - 1]:
                        self._sources[name] = f"features.{first + (i - 1) * per}"
                    if row.batch_norm:
                        if batch_norm is None:
                            raise NotImplementedError(
                                f"stage {block} asks for batch norm after each conv: pass a layer factory "
                                f"batch_norm=(channels -> Layer), e.g. a BatchNorm2d class, to VGG16")
                        self._add(f"{name}_bn", batch_norm(c_out), c_out)
                    self._add(f"relu{block}_{i}", ReLU(), c_out)
                    c_in = c_out
                if row.pool is not None:
                    self._add(f"pool{block}", pool(row.pool), c_in)
            elif isinstance(row, FC):
                c_out = channels(row.channels, width)
                name = f"fc{row.index}"
                self._add(name, Conv2d(c_in, c_out, row.kernel, padding=row.padding, dilation=row.dilation,
                                       rng=init_rng), c_out)
                if row.index in _TORCHVISION_FC:
                    self._sources[name] = _TORCHVISION_FC[row.index]
                self._add(f"relu{row.index}", ReLU(), c_out)
                if row.dropout:
                    self._add(f"drop{row.index}", Dropout(dropout, self.rng), c_out)
                c_in = c_out
            else:
                raise ValueError(f"trunk table rows must be Stage or FC, got {row!r}")
        if not self.trunk:
            raise ValueError("trunk table is empty")
        self.out_channels = c_in

    def _add(self, name, layer, c_out):
        setattr(self, name, layer)
        self.trunk.append((name, layer))
        self._channels[name] = c_out

    def layer_names(self):
        return [n for n, _ in self.trunk]

    def trunk_until(self, name):
        """The trunk layers from the first up to and including ``name`` (for coordinate maps)."""
        names = self.layer_names()
        if name not in names:
            raise ValueError(f"no trunk layer {name!r}; the trunk has {', '.join(names)}")
        return [layer for _, layer in self.trunk[:names.index(name) + 1]]

    def channels_at(self, name):
        """Number of channels of the output of trunk layer ``name``."""
        if name not in self._channels:
            raise ValueError(f"no trunk layer {name!r}; the trunk has {', '.join(self.layer_names())}")
        return self._channels[name]

    def coord_map(self):
        """The composed map of the whole trunk (input -> last layer's output)."""
        return compose(layer for _, layer in self.trunk)

    def forward(self, x):
        return self.forward_trunk(x)[0]

    def backward(self, dy, need_dx=True):
        return self.backward_trunk(dy, need_dx=need_dx)

    def forward_trunk(self, x, taps=()):
        """x (N, C_in, H, W) -> (last layer's output, {tap name: that layer's output})."""
        out = {}
        for name, layer in self.trunk:
            x = layer(x)
            if name in taps:
                out[name] = x
        return x, out

    def backward_trunk(self, dy, dtaps=None, need_dx=True):
        """Mirror of :meth:`forward_trunk`: dy at the last layer, plus ``dtaps`` {name: gradient
        at that layer's output} from branches, -> dx (None unless ``need_dx``)."""
        dtaps = dtaps or {}
        for i in range(len(self.trunk) - 1, 0, -1):
            name, layer = self.trunk[i]
            if name in dtaps:
                dy = dy + dtaps[name]
            dy = layer.backward(dy)
        _, first = self.trunk[0]
        return first.backward(dy, need_dx=need_dx)

    def load_vgg16(self, path, fc=True):
        """Load ImageNet VGG16 weights from a .npz in torchvision's layout ("net surgery").

        ``features.K.weight/bias`` are the convolutions, K being the conv's index in
        torchvision's ``features`` list (conv, relu, ..., pool; conv, bn, relu with batch
        norm); ``classifier.0`` and ``classifier.3`` are the fully connected fc6
        (C6, C5*7*7) and fc7 (C6, C6): reshaped to a 7x7 and a 1x1 convolution they compute
        the same numbers at every window, which is what makes the classifier fully
        convolutional. ``classifier.6`` (the 1000 ImageNet classes) is not used. Shapes
        must match this trunk's width (full VGG16 needs width 1). ``fc=False`` loads the
        13 convolutions only (for trunks whose fc6 / fc7 differ from VGG16's).
        Nothing is changed when any array is missing or mis-shaped.
        """
        from ..io import load_npz

        arrays, _ = load_npz(path)
        state, problems = {}, []
        for name, src in self._sources.items():
            if not fc and src.startswith("classifier"):
                continue
            layer = getattr(self, name)
            for part in ("weight", "bias"):
                key, target = f"{src}.{part}", getattr(layer, part).shape
                if key not in arrays:
                    problems.append(f"missing {key} (for {name}.{part})")
                    continue
                a = arrays[key]
                if a.ndim == 2 and len(target) == 4 and a.size == math.prod(target):
                    a = a.reshape(target)          # fully connected -> convolution
                if a.shape != target:
                    problems.append(f"{key} has shape {a.shape}, {name}.{part} needs {target}")
                    continue
                state[f"{name}.{part}"] = a
        if problems:
            raise ValueError(f"{path} does not hold VGG16 weights for a trunk of width {self.width}: "
                             + "; ".join(problems))
        params = dict(self.named_parameters())
        for name, a in state.items():
            p = params[name]
            b = backend_of(p.data)
            p.data = b.xp.astype(b.asarray(a), p.data.dtype)
        return self
