"""FCN-32s, FCN-16s, FCN-8s and FCN-8s-at-once (Long, Shelhamer, Darrell, CVPR 2015).

Every model is the VGG16 trunk (:mod:`.vgg`) plus one head, written once here::

    h = score_fr(fc7)                                  1x1 conv to n_class scores
    for each skip (pool4, then pool3):                 none for FCN-32s
        h = upsample_2x(h)
        h = h + crop(score_pool(scale * pool))         fuse a finer prediction
    scores = crop(upsample_final(h))                   back to the input's H x W

=============  ======================  =========================  =================
model          skips                   final upsampling (K, S)    crop offsets
=============  ======================  =========================  =================
FCN32s         -                       upscore (64, 32)           19
FCN16s         pool4                   upscore16 (32, 16)         5, 27
FCN8s          pool4, pool3            upscore8 (16, 8)           5, 9, 31
FCN8sAtOnce    as FCN8s, pool4 scaled by 0.01 and pool3 by 0.0001 (the reference
               "at-once" net, trained in one stage)
=============  ======================  =========================  =================

With ``same_padding=True`` the trunk is :data:`.vgg.FCN_VGG16_SAME` (conv1_1 pad 1, fc6
pad 3): no 100-pixel margin, so a 384 px input costs 2.3x fewer trunk pixels (584^2 /
384^2). The upsampled h then starts before its skip (the shift is -1 at both skips), so
h is cropped to the skip instead: offsets h 1, final 16 (FCN-32s); h 1, final 8 (FCN-16s);
h 1 and 1, final 4 (FCN-8s).

The 2x upsamplings (upscore2, upscore_pool4) are (4, 2). Score layers are 1x1 convs
initialised to zero; upsamplings are transposed convolutions without bias, initialised
to the bilinear kernel and frozen unless ``learn_upsampling``. The crop offsets are
computed from the layers by :mod:`.geometry`, never typed in.
"""
from __future__ import annotations

import dataclasses

from ..backend import backend_of
from ..layers import Conv2d, ConvTranspose2d, Crop
from .base import MODELS, TrunkModel, check_n_class, register_model, twin_layer
from .geometry import IDENTITY, compose, crop_offset, shift_between
from .vgg import FCN_VGG16, FCN_VGG16_SAME, VGG16


@dataclasses.dataclass(frozen=True)
class SkipSpec:
    """One skip connection: upsample ``h`` 2x by ``up``, add ``score`` of ``scale * tap``."""

    up: str          # name of the 2x upsampling applied to h before the fusion
    score: str       # name of the 1x1 scoring conv of the tap
    tap: str         # trunk layer whose output is scored (pool4, pool3)
    scale: float = 1.0


@dataclasses.dataclass
class _Skip:
    spec: SkipSpec
    crop: Crop       # aligns the skip's score with the upsampled h
    crop_h: Crop | None = None   # or, where h starts first (same padding), h with the score


class FCN(TrunkModel):
    """Base class of the four FCNs: a VGG16 trunk (``TRUNK``, held as ``self.backbone``)
    plus the head built from ``SKIPS`` and ``FINAL``.

    The trunk is registered inline, so its layers are named and reached as the model's
    own (``conv1_1.weight``, ``model.fc6``): the parameter names and their order are
    torchfcn's. ``forward(x)``: x (N, 3, H, W), preprocessed (BGR, mean subtracted) ->
    scores (N, n_class, H, W) for any H, W >= 1. ``backward(dscores, need_dx=True)`` ->
    dx (N, 3, H, W) (None when ``need_dx`` is False), adding into every unfrozen
    parameter's gradient.
    """

    name = ""
    TRUNK = FCN_VGG16                  # the trunk table (see :mod:`.vgg`)
    SAME_TRUNK = FCN_VGG16_SAME        # the trunk with ``same_padding``
    SKIPS: tuple = ()
    FINAL = ("upscore", 64, 32)        # (name, kernel, stride) of the last upsampling
    UP2 = (4, 2)                       # (kernel, stride) of the 2x upsamplings of the skips

    def __init__(self, n_class=21, width=1.0, learn_upsampling=False, dropout=0.5, seed=0, same_padding=False):
        check_n_class(n_class)
        if not isinstance(same_padding, bool):
            raise ValueError(f"{type(self).__name__} same_padding must be True or False, got {same_padding!r}")
        trunk = self.SAME_TRUNK if same_padding else self.TRUNK
        self.register_inline("backbone", VGG16(trunk, width=width, dropout=dropout, seed=seed))
        self.n_class, self.learn_upsampling, self.dropout, self.seed = int(n_class), learn_upsampling, dropout, seed
        self.same_padding = same_padding
        self.score_fr = Conv2d(self.out_channels, n_class, 1, init="zeros")
        self.skips = []
        for spec in self.SKIPS:
            self._upsampling(spec.up, *self.UP2)
            setattr(self, spec.score, Conv2d(self.channels_at(spec.tap), n_class, 1, init="zeros"))
            self.skips.append(_Skip(spec, Crop((0, 0))))
        self._upsampling(*self.FINAL)
        self.crop_final = Crop((0, 0))
        offsets = self.crop_offsets()
        for skip in self.skips:
            if skip.spec.up in offsets:
                skip.crop_h = Crop(offsets[skip.spec.up])
            else:
                skip.crop.offset = offsets[skip.spec.score]
        self.crop_final.offset = offsets[self.FINAL[0]]

    def trunk_until(self, name):
        return self.backbone.trunk_until(name)

    def channels_at(self, name):
        return self.backbone.channels_at(name)

    def forward_trunk(self, x, taps=()):
        return self.backbone.forward_trunk(x, taps)

    def backward_trunk(self, dy, dtaps=None, need_dx=True):
        return self.backbone.backward_trunk(dy, dtaps, need_dx)

    def load_vgg16(self, path, fc=True):
        """ImageNet VGG16 weights into the trunk (see :meth:`.vgg.VGG16.load_vgg16`)."""
        self.backbone.load_vgg16(path, fc)
        return self

    def _upsampling(self, name, kernel, stride):
        n = self.n_class
        setattr(self, name, ConvTranspose2d(n, n, kernel, stride, bias=False, init="bilinear",
                                            frozen=not self.learn_upsampling))

    @property
    def upscore_final(self) -> ConvTranspose2d:
        """The last upsampling (upscore, upscore16 or upscore8)."""
        return getattr(self, self.FINAL[0])

    @property
    def config(self) -> dict:
        """JSON-able arguments that rebuild this model: ``build(**model.config)``."""
        return {"name": self.name, "n_class": self.n_class, "width": self.width,
                "learn_upsampling": self.learn_upsampling, "dropout": self.dropout, "seed": self.seed,
                **({"same_padding": True} if self.same_padding else {})}

    def crop_offsets(self) -> dict:
        """Crop offsets {cropped layer: (oy, ox)} derived from the layers' coordinate maps.

        The fused path runs trunk -> score_fr -> upsamplings; each skip's score is cropped
        to align with it (key: the score layer), or where the upsampled h starts first, h
        is cropped to align with the score (key: the upsampling), and the final upsampling
        is cropped to align with the input.
        """
        path = self.trunk_until("drop7") + [self.score_fr]
        offsets = {}
        for skip in self.skips:
            spec = skip.spec
            path = path + [getattr(self, spec.up)]
            branch = self.trunk_until(spec.tap) + [getattr(self, spec.score)]
            score_map, h_map = compose(branch), compose(path)
            if all(o >= 0 for o in shift_between(score_map, h_map)):
                offsets[spec.score] = crop_offset(score_map, h_map)
            else:
                offsets[spec.up] = crop_offset(h_map, score_map)
                path = path + [Crop(offsets[spec.up])]
        offsets[self.FINAL[0]] = crop_offset(compose(path + [self.upscore_final]), IDENTITY)
        return offsets

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} input x must have shape (N, 3, H, W), "
                             f"got {tuple(x.shape)}")
        h, taps = self.forward_trunk(x, taps={s.spec.tap for s in self.skips})
        h = self.score_fr(h)
        for skip in self.skips:
            spec = skip.spec
            h = getattr(self, spec.up)(h)
            pool = taps[spec.tap]
            if spec.scale != 1.0:
                pool = pool * spec.scale
            score = getattr(self, spec.score)(pool)
            if skip.crop_h is None:
                h = h + skip.crop(score, h.shape[2:])
            else:
                h = skip.crop_h(h, score.shape[2:]) + score
        h = self.upscore_final(h)
        self._out_shape = (x.shape[0], self.n_class, *x.shape[2:])
        return self.crop_final(h, x.shape[2:])

    def backward(self, dscores, need_dx=True):
        expected = getattr(self, "_out_shape", None)
        if expected is None or tuple(dscores.shape) != expected:
            raise ValueError(f"{type(self).__name__}.backward needs dscores of the last forward's output "
                             f"shape {expected}, got {tuple(dscores.shape)}")
        self._out_shape = None
        dh = self.crop_final.backward(dscores)
        dh = self.upscore_final.backward(dh)
        dtaps = {}
        for skip in reversed(self.skips):
            spec = skip.spec
            if skip.crop_h is None:                    # the sum passes dh to both terms
                dscore = skip.crop.backward(dh)
            else:
                dscore, dh = dh, skip.crop_h.backward(dh)
            dpool = getattr(self, spec.score).backward(dscore)
            if spec.scale != 1.0:
                dpool = dpool * spec.scale
            dtaps[spec.tap] = dpool
            dh = getattr(self, spec.up).backward(dh)
        dh = self.score_fr.backward(dh)
        return self.backward_trunk(dh, dtaps, need_dx=need_dx)

    def torch_module(self):
        """The same FCN in PyTorch (``torch.nn.Module``), weights copied, every layer built by
        its own ``torch_module()`` and registered under its minifcn name; used by
        ``minifcn bench --compare torch``."""
        from torch import nn

        model = self

        class Twin(nn.Module):
            def __init__(self):
                super().__init__()
                self.ops = [(name, twin_layer(self, name, layer)) for name, layer in model.trunk]
                self.score_fr = twin_layer(self, "score_fr", model.score_fr)
                self.skips = [(s.spec, twin_layer(self, s.spec.up, getattr(model, s.spec.up)),
                               twin_layer(self, s.spec.score, getattr(model, s.spec.score)), s.crop.offset,
                               None if s.crop_h is None else s.crop_h.offset)
                              for s in model.skips]
                self.final = twin_layer(self, model.FINAL[0], model.upscore_final)
                self.final_offset = model.crop_final.offset

            def forward(self, x):
                h, taps = x, {}
                for name, op in self.ops:
                    h = op(h)
                    taps[name] = h
                h = self.score_fr(h)
                for spec, up, score, (oy, ox), h_offset in self.skips:
                    h = up(h)
                    s = score(taps[spec.tap] * spec.scale if spec.scale != 1.0 else taps[spec.tap])
                    if h_offset is None:
                        h = h + s[:, :, oy:oy + h.shape[2], ox:ox + h.shape[3]]
                    else:
                        hy, hx = h_offset
                        h = h[:, :, hy:hy + s.shape[2], hx:hx + s.shape[3]] + s
                h = self.final(h)
                oy, ox = self.final_offset
                return h[:, :, oy:oy + x.shape[2], ox:ox + x.shape[3]]

        return Twin()

    # --- staged training ---------------------------------------------------------
    @classmethod
    def _staged(cls, source, expected):
        """A new ``cls`` with ``source``'s config, backend and dtype, and every parameter of the
        same name and shape copied from ``source`` (the new skip scores stay zero)."""
        if not isinstance(source, expected):
            raise ValueError(f"{cls.__name__} is initialised from a {expected.__name__}, "
                             f"got {type(source).__name__}")
        config = {k: v for k, v in source.config.items() if k != "name"}
        like = source.score_fr.weight.data
        model = cls(**config).to(backend_of(like), str(like.dtype).rsplit(".", 1)[-1])   # "float32"
        ours = dict(model.named_parameters())
        for name, p in source.named_parameters():
            if name in ours and ours[name].shape == p.shape:
                ours[name].data = backend_of(p.data).xp.asarray(p.data, copy=True)
        return model


def takes_same_padding(name) -> bool:
    """True for the registered FCNs: the models whose trunk has the 100-pixel margin that
    ``same_padding=True`` drops."""
    return name in MODELS and issubclass(MODELS[name], FCN)


def same_padding_kwargs(name, same_padding) -> dict:
    """The keyword arguments that ask ``build(name, ...)`` for the same-padding trunk:
    ``{"same_padding": True}``, or ``{}`` when it is not asked for. Raises ValueError
    for a registered model that is not an FCN (it has no 100-pixel margin to drop)."""
    if not same_padding:
        return {}
    if name in MODELS and not takes_same_padding(name):
        fcns = ", ".join(n for n in MODELS if takes_same_padding(n))
        raise ValueError(f"same padding is for the FCNs ({fcns}); {name} has no 100-pixel margin to drop")
    return {"same_padding": True}


@register_model
class FCN32s(FCN):
    name = "fcn32s"


@register_model
class FCN16s(FCN):
    name = "fcn16s"
    SKIPS = (SkipSpec("upscore2", "score_pool4", "pool4"),)
    FINAL = ("upscore16", 32, 16)

    @classmethod
    def from_fcn32s(cls, model):
        """FCN-16s initialised from a trained FCN-32s (the paper's staged training)."""
        return cls._staged(model, FCN32s)


@register_model
class FCN8s(FCN):
    name = "fcn8s"
    SKIPS = (SkipSpec("upscore2", "score_pool4", "pool4"),
             SkipSpec("upscore_pool4", "score_pool3", "pool3"))
    FINAL = ("upscore8", 16, 8)

    @classmethod
    def from_fcn16s(cls, model):
        """FCN-8s initialised from a trained FCN-16s (the paper's staged training)."""
        return cls._staged(model, FCN16s)


@register_model
class FCN8sAtOnce(FCN8s):
    name = "fcn8s-atonce"
    SKIPS = (SkipSpec("upscore2", "score_pool4", "pool4", 0.01),
             SkipSpec("upscore_pool4", "score_pool3", "pool3", 0.0001))
