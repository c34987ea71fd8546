"""SegNet (Badrinarayanan, Kendall, Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", TPAMI 2017).

The other classic answer to "how do we get back to full resolution". FCN learns
upsampling filters and adds skip scores; SegNet remembers *where* each max-pool found
its maximum and puts the decoder's values back there:

    encoder  (VGG16's 13 convs, SEGNET_ENCODER):   stage b = 1..5
        h = relu(bn(conv3x3(h))) x convs;  h, indices_b = maxpool2x2_ceil(h)
    decoder  (the encoder mirrored):               stage b = 5..1
        h = max_unpool(h, indices_b, size before pool b)     zeros except at the maxima
        h = relu(bn(conv3x3(h))) x convs, the last conv of stage b mapping to
            stage b-1's channels (stage 1's last conv is the classifier: n_class, no BN/ReLU)

========  =============================================  ===========================
stage     encoder convs (outputs)                        decoder convs (outputs)
========  =============================================  ===========================
5         conv5_1, conv5_2, conv5_3 (512)                conv5_3_D, conv5_2_D, conv5_1_D (512, 512, 512)
4         conv4_1, conv4_2, conv4_3 (512)                conv4_3_D, conv4_2_D, conv4_1_D (512, 512, 256)
3         conv3_1, conv3_2, conv3_3 (256)                conv3_3_D, conv3_2_D, conv3_1_D (256, 256, 128)
2         conv2_1, conv2_2 (128)                         conv2_2_D, conv2_1_D (128, 64)
1         conv1_1, conv1_2 (64)                          conv1_2_D (64), conv1_1_D (n_class)
========  =============================================  ===========================

Names are the reference Caffe SegNet's: every conv but the classifier is followed by
``<conv>_bn`` (BatchNorm2d: ``.weight``, ``.bias``, buffers ``.running_mean``,
``.running_var``) and a ReLU (``relu5_3``, ``relu5_3_D``, ...); pools are ``pool1``..``pool5`` and unpoolings
``upsample5``..``upsample1``. The decoder is derived from the encoder table, not typed
in: a trunk table change (width, convs per stage) changes both. 2x2/2 pools in ceil
mode and unpooling to the pre-pool size make any H, W >= 1 give scores of size H x W.
Convs are 3x3 with padding 1 and He-initialised; BN starts at weight 1, bias 0.
"""
from __future__ import annotations

import dataclasses

from ..init import generator
from ..layers import BatchNorm2d, Conv2d, MaxUnpool2d, ReLU
from .base import TrunkModel, check_n_class, register_model, twin_layer
from .vgg import SEGNET_ENCODER, VGG16, Stage, channels

__all__ = ["SegNet", "DecoderStage", "decoder_table"]


@dataclasses.dataclass(frozen=True)
class DecoderStage:
    """Decoder stage ``stage`` (mirrors encoder stage ``stage``): unpool with ``pool{stage}``'s
    indices, then one 3x3 conv per output count in ``outputs`` (None: the classifier)."""

    stage: int
    outputs: tuple


def decoder_table(encoder=SEGNET_ENCODER):
    """The mirrored decoder of an encoder table: stages in reverse; stage b's convs keep
    its channels except the last, which maps to stage b-1's (stage 1's: the classifier, None).

    >>> [d.outputs for d in decoder_table()]
    [(512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64, None)]
    """
    stages = [row for row in encoder if isinstance(row, Stage)]
    if len(stages) != len(encoder) or any(s.pool is None or not s.pool.keep_indices for s in stages):
        raise ValueError("a SegNet encoder table holds only Stage rows whose pools keep their indices")
    table = []
    for b in range(len(stages), 0, -1):
        row = stages[b - 1]
        last = stages[b - 2].channels if b > 1 else None
        table.append(DecoderStage(b, (row.channels,) * (row.convs - 1) + (last,)))
    return tuple(table)


@register_model
class SegNet(TrunkModel):
    """SegNet: ``forward(x)`` x (N, 3, H, W) -> scores (N, n_class, H, W), any H, W >= 1;
    ``backward(dscores, need_dx=True)`` -> dx (None when ``need_dx`` is False), adding into
    every parameter's gradient.

    The encoder is :class:`~minifcn.models.vgg.VGG16` built from ``TRUNK``
    (:data:`~minifcn.models.vgg.SEGNET_ENCODER`) with :class:`~minifcn.layers.BatchNorm2d`
    after each conv; it is held inline as ``self.backbone``, so its layers are the model's
    own (``conv1_1.weight``, ``model.pool3``). ``width`` scales every channel count as for
    FCN. ``dropout`` and ``learn_upsampling`` are accepted for the trainer's sake and
    ignored (SegNet has neither dropout nor learned upsampling).
    """

    name = "segnet"
    TRUNK = SEGNET_ENCODER

    def __init__(self, n_class=21, width=1.0, seed=0, dropout=0.0, learn_upsampling=False):
        check_n_class(n_class)
        self.register_inline("backbone", VGG16(self.TRUNK, width=width, dropout=0.0, seed=seed,
                                                batch_norm=BatchNorm2d))
        self.n_class, self.seed = int(n_class), seed
        rng = generator([seed, 1])        # the decoder's weights: a stream apart from the encoder's
        self.decoder = []                 # (name, layer) in forward order
        self._pool_of = {}                # unpooling -> the pool whose indices it uses
        c_in = self.backbone.out_channels
        for spec in decoder_table(self.TRUNK):
            b = spec.stage
            pool = getattr(self, f"pool{b}")
            self._add(f"upsample{b}", MaxUnpool2d(pool.kernel_size, pool.stride, pool.padding))
            self._pool_of[f"upsample{b}"] = pool
            for i, out in zip(range(len(spec.outputs), 0, -1), spec.outputs):
                name = f"conv{b}_{i}_D"
                if out is None:
                    self._add(name, Conv2d(c_in, self.n_class, 3, padding=1, rng=rng))
                    continue
                c_out = channels(out, width)
                self._add(name, Conv2d(c_in, c_out, 3, padding=1, rng=rng))
                self._add(f"{name}_bn", BatchNorm2d(c_out))
                self._add(f"relu{b}_{i}_D", ReLU())
                c_in = c_out

    def _add(self, name, layer):
        setattr(self, name, layer)
        self.decoder.append((name, layer))

    @property
    def config(self) -> dict:
        """JSON-able arguments that rebuild this model: ``build(**model.config)``."""
        return {"name": self.name, "n_class": self.n_class, "width": self.width, "seed": self.seed}

    def load_vgg16(self, path, fc=False):
        """ImageNet VGG16 weights into the encoder's 13 convolutions (see
        :meth:`.vgg.VGG16.load_vgg16`); the BN layers and the decoder keep their init."""
        self.backbone.load_vgg16(path, fc=False)
        return self

    def torch_module(self):
        """The same SegNet in PyTorch (``torch.nn.Module``, in this model's float dtype), every
        layer built by its own ``torch_module()`` and registered under its minifcn name, so
        parameters (``conv1_1.weight``, ``conv1_1_bn.bias``) and BN buffers
        (``conv1_1_bn.running_mean``) carry minifcn's names (``minifcn bench --compare torch``).

        The encoder's pools return their indices (``nn.MaxPool2d(return_indices=True)``); each
        ``upsample{b}`` (``nn.MaxUnpool2d``) puts values back with ``pool{b}``'s indices at the
        size ``pool{b}``'s input had, as :meth:`forward` does."""
        from torch import nn

        model = self
        names = {id(layer): name for name, layer in self.trunk}

        class Twin(nn.Module):
            def __init__(self):
                super().__init__()
                # (name, module, keeps indices) and (name, module, name of the pool it unpools)
                self.encoder = [(name, twin_layer(self, name, layer), bool(getattr(layer, "return_indices", False)))
                                for name, layer in model.trunk]
                self.decoder = [(name, twin_layer(self, name, layer),
                                 names[id(model._pool_of[name])] if name in model._pool_of else None)
                                for name, layer in model.decoder]

            def forward(self, x):
                h, pooled = x, {}
                for name, op, keeps_indices in self.encoder:
                    if keeps_indices:
                        size = tuple(h.shape[2:])
                        h, indices = op(h)
                        pooled[name] = (indices, size)
                    else:
                        h = op(h)
                for _, op, pool in self.decoder:
                    if pool is not None:
                        indices, size = pooled[pool]
                        h = op(h, indices, output_size=size)
                    else:
                        h = op(h)
                return h

        return Twin().train(self.training)      # each leaf takes its parameters' dtype

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"SegNet input x must have shape (N, 3, H, W), got {tuple(x.shape)}")
        h = self.backbone.forward(x)
        for name, layer in self.decoder:
            pool = self._pool_of.get(name)
            if pool is not None:
                h = layer(h, pool.indices, pool.input_size)
            else:
                h = layer(h)
        self._out_shape = (x.shape[0], self.n_class, *x.shape[2:])
        return h

    def backward(self, dscores, need_dx=True):
        expected = getattr(self, "_out_shape", None)
        if expected is None or tuple(dscores.shape) != expected:
            raise ValueError(f"SegNet.backward needs dscores of the last forward's output shape {expected}, "
                             f"got {tuple(dscores.shape)}")
        self._out_shape = None
        dh = dscores
        for _, layer in reversed(self.decoder):
            dh = layer.backward(dh)
        return self.backbone.backward(dh, need_dx=need_dx)
