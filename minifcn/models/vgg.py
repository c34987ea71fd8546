"""The VGG16 trunk of the FCNs (Simonyan & Zisserman 2015, as made fully convolutional
by Long et al. 2015), written once and shared by every FCN head.

    conv1_1 (pad 100) conv1_2 pool1   C1 = 64 w      3x3 convs, ReLU after each
    conv2_1 conv2_2 pool2             C2 = 128 w     2x2/2 max pools, ceil mode
    conv3_1 conv3_2 conv3_3 pool3     C3 = 256 w
    conv4_1 conv4_2 conv4_3 pool4     C4 = 512 w
    conv5_1 conv5_2 conv5_3 pool5     C5 = 512 w
    fc6 (7x7 conv) relu6 drop6        C6 = 4096 w
    fc7 (1x1 conv) relu7 drop7        C6

``w`` is the ``width`` multiplier: every channel count becomes ``max(1, round(c * w))``
(``width=1/4`` gives 16-32-64-128-128 and fc 1024). The 100-pixel padding of conv1_1
makes the net accept any input size H, W >= 1: pool5 is then at least 7x7, the size
of fc6's kernel. Dropout is Caffe's element-wise dropout with probability ``dropout``.
"""
from __future__ import annotations

import math

from ..backend import RNG, backend_of
from ..init import generator
from ..layers import Conv2d, Dropout, Layer, MaxPool2d, ReLU

STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))   # (channels, convs) of blocks 1..5
FC_CHANNELS = 4096
FC6_KERNEL = 7
FIRST_PADDING = 100


def channels(c: int, width: float) -> int:
    """Channel count ``c`` scaled by ``width``: ``max(1, round(c * width))``."""
    return max(1, round(c * width))


class VGG16(Layer):
    """The trunk: conv1_1 ... pool5, fc6, fc7 (with ReLU and dropout) as one ordered list.

    ``self.trunk`` is the list of ``(name, layer)`` in forward order; every layer is also
    an attribute (``self.conv1_1``, ...), so parameters are named ``conv1_1.weight``,
    ``fc6.bias``, ... as in torchfcn. ``self.rng`` is the :class:`~minifcn.backend.RNG`
    every dropout layer draws from.
    """

    def __init__(self, width=1.0, dropout=0.5, seed=0):
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        self.width = width
        self.rng = RNG(seed)
        init_rng = generator(seed)
        self.trunk = []
        c_in = 3
        for block, (c, n_conv) in enumerate(STAGES, start=1):
            c_out = channels(c, width)
            for i in range(1, n_conv + 1):
                pad = FIRST_PADDING if (block, i) == (1, 1) else 1
                self._add(f"conv{block}_{i}", Conv2d(c_in, c_out, 3, padding=pad, rng=init_rng))
                self._add(f"relu{block}_{i}", ReLU())
                c_in = c_out
            self._add(f"pool{block}", MaxPool2d(2, stride=2, ceil_mode=True))
        c_fc = channels(FC_CHANNELS, width)
        self._add("fc6", Conv2d(c_in, c_fc, FC6_KERNEL, rng=init_rng))
        self._add("relu6", ReLU())
        self._add("drop6", Dropout(dropout, self.rng))
        self._add("fc7", Conv2d(c_fc, c_fc, 1, rng=init_rng))
        self._add("relu7", ReLU())
        self._add("drop7", Dropout(dropout, self.rng))
        self.out_channels = c_fc

    def _add(self, name, layer):
        setattr(self, name, layer)
        self.trunk.append((name, layer))

    def trunk_until(self, name):
        """The trunk layers from conv1_1 up to and including ``name`` (for coordinate maps)."""
        names = [n for n, _ in self.trunk]
        return [layer for _, layer in self.trunk[:names.index(name) + 1]]

    def channels_at(self, name):
        """Number of channels of the output of trunk layer ``name``."""
        return [layer for layer in self.trunk_until(name) if isinstance(layer, Conv2d)][-1].weight.shape[0]

    def forward_trunk(self, x, taps=()):
        """x (N, 3, H, W) -> (drop7 output (N, C6, H6, W6), {tap name: that layer's output})."""
        out = {}
        for name, layer in self.trunk:
            x = layer(x)
            if name in taps:
                out[name] = x
        return x, out

    def backward_trunk(self, dy, dtaps=None, need_dx=True):
        """Mirror of :meth:`forward_trunk`: dy at drop7, plus ``dtaps`` {name: gradient at that
        layer's output} from the skip branches, -> dx (None unless ``need_dx``)."""
        dtaps = dtaps or {}
        for i in range(len(self.trunk) - 1, 0, -1):
            name, layer = self.trunk[i]
            if name in dtaps:
                dy = dy + dtaps[name]
            dy = layer.backward(dy)
        _, first = self.trunk[0]
        return first.backward(dy, need_dx=need_dx)

    def load_vgg16(self, path):
        """Load ImageNet VGG16 weights from a .npz in torchvision's layout ("net surgery").

        ``features.K.weight/bias`` are the convolutions, K being the conv's index in the
        trunk list (conv, relu, ..., pool); ``classifier.0`` and ``classifier.3`` are
        the fully connected fc6 (C6, C5*7*7) and fc7 (C6, C6): reshaped to a 7x7 and a 1x1
        convolution they compute the same numbers at every window, which is what makes
        the classifier fully convolutional. ``classifier.6`` (the 1000 ImageNet classes)
        is not used. Shapes must match this trunk's width (full VGG16 needs width 1).
        """
        from ..io import load_npz

        arrays, _ = load_npz(path)
        names = [n for n, _ in self.trunk]
        pool5 = names.index("pool5")
        sources = {}
        for k, (name, layer) in enumerate(self.trunk):
            if isinstance(layer, Conv2d):
                section, index = ("features", k) if k < pool5 else ("classifier", k - pool5 - 1)
                sources[name] = f"{section}.{index}"
        state, problems = {}, []
        for name, src in sources.items():
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
