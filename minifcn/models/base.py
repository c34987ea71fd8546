"""What every model shares: the name registry behind :func:`build`, checkpoints in and
out, and the checks of the common arguments.

A model class is registered under its ``name`` so that ``build(name, ...)`` and
:func:`load_model` find it::

    @register_model
    class SegNet(Model):
        name = "segnet"
        def __init__(self, n_class=21, width=1.0, seed=0): ...
        @property
        def config(self): return {"name": self.name, "n_class": ..., "width": ..., "seed": ...}

``config`` must hold JSON-able arguments with which ``build(**config)`` rebuilds the
model; :meth:`Model.save` stores it next to the weights.
"""
from __future__ import annotations

import math
import numbers

from ..layers import Layer

MODELS: dict = {}


def register_model(cls=None, *, name=None):
    """Class decorator: ``MODELS[name or cls.name] = cls`` (so :func:`build` knows it).

    ``@register_model`` or ``@register_model(name="other-name")``. Raises ValueError
    when the name is empty or already taken by another class."""
    def add(c):
        key = name or c.name
        if not key:
            raise ValueError(f"model class {c.__name__} needs a non-empty name to be registered")
        if MODELS.get(key, c) is not c:
            raise ValueError(f"model name {key!r} is already registered to {MODELS[key].__name__}")
        MODELS[key] = c
        return c

    return add(cls) if cls is not None else add


def twin_layer(parent, name, layer):
    """``layer.torch_module()``, registered on the PyTorch module ``parent`` under its
    minifcn name (parameters then carry minifcn's names, and train()/eval() reach it).
    The models' ``torch_module()`` build their twins from these."""
    m = layer.torch_module()
    setattr(parent, name, m)
    return m


def build(name, n_class=21, width=1.0, **kwargs):
    """Build a registered model by name (e.g. "fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return MODELS[name](n_class=n_class, width=width, **kwargs)


def load_model(path, backend="numpy", dtype=None):
    """Rebuild the model saved at ``path`` (its class from the stored config) on ``backend``.

    ``dtype`` defaults to the dtype the parameters were saved in.
    """
    from ..io import load_npz, model_arrays

    arrays, meta = load_npz(path)
    config = meta.get("model")
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"{path} holds no model config (meta['model']): not a minifcn model checkpoint "
                         f"(VGG16 ImageNet weights load with model.load_vgg16)")
    params = model_arrays(arrays)
    if dtype is None and params:
        dtype = next(iter(params.values())).dtype
    model = build(**config).to(backend, dtype)
    try:
        return model.load_state_dict(params)
    except ValueError as exc:
        raise ValueError(f"checkpoint {path} does not match its own config {config}: {exc}") from None


def check_n_class(n_class):
    if not (isinstance(n_class, numbers.Integral) and not isinstance(n_class, bool) and n_class >= 1):
        raise ValueError(f"n_class must be an int >= 1, got {n_class!r}")


def check_width(width):
    if not (isinstance(width, numbers.Real) and not isinstance(width, bool)
            and math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a finite number > 0, got {width!r}")


def check_dropout(dropout):
    if not (isinstance(dropout, numbers.Real) and not isinstance(dropout, bool) and 0 <= dropout < 1):
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


class Model(Layer):
    """Base class of the models: a registered ``name``, a ``config``, and checkpoints.

    Subclasses define ``name``, ``n_class`` and ``config``; ``save`` / ``load`` write
    and read every parameter and buffer (``state_dict``) with the config.
    """

    name = ""

    @property
    def config(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError(f"{type(self).__name__} must define config")

    def save(self, path, meta=None):
        """Write the parameters, buffers and ``config`` to ``path`` (.npz, atomic; see :mod:`minifcn.io`)."""
        from ..io import save_npz

        save_npz(path, self.state_dict(), {**(meta or {}), "model": self.config})

    def load(self, path):
        """Load a state saved by :meth:`save` (or a trainer checkpoint) into this model.

        Raises ValueError naming the missing, unexpected and mis-shaped keys when the
        checkpoint holds another model or class count.
        """
        from ..io import load_npz, model_arrays

        arrays, meta = load_npz(path)
        try:
            self.load_state_dict(model_arrays(arrays))
        except ValueError as exc:
            held = meta.get("model", {})
            what = f"{held.get('name', '?')} with n_class={held.get('n_class', '?')}" if held else "no config"
            raise ValueError(f"checkpoint {path} ({what}) cannot be loaded into {self.name} with "
                             f"n_class={getattr(self, 'n_class', '?')}: {exc}") from None
        return self


class TrunkModel(Model):
    """A model on a VGG16 trunk held inline as ``self.backbone`` (its layers named as the
    model's own): the trunk's layer list, width, dropout RNG and output channels, which
    the trainer and the coordinate-map arithmetic ask the model for."""

    @property
    def trunk(self):
        """The trunk's ``(name, layer)`` list in forward order."""
        return self.backbone.trunk

    @property
    def width(self):
        return self.backbone.width

    @property
    def rng(self):
        """The :class:`~minifcn.backend.RNG` every dropout layer draws from (the trainer saves it)."""
        return self.backbone.rng

    @property
    def out_channels(self):
        return self.backbone.out_channels
