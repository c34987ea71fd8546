"""The models: the VGG16 trunk (a table of stages), the four FCN heads, their geometry,
and the registry behind ``build``.

    >>> from minifcn.models import build, load_model
    >>> model = build("fcn8s", n_class=21, width=0.25)
    >>> scores = model.forward(x)          # (N, 3, H, W) -> (N, 21, H, W)
    >>> dx = model.backward(dscores)       # adds into every unfrozen parameter's gradient

A model module registers its classes with ``@register_model`` (see :mod:`.base`) and
is imported here, so ``build(name)`` finds them.
"""
from .base import MODELS, Model, build, load_model, register_model
from .fcn import FCN, FCN8s, FCN8sAtOnce, FCN16s, FCN32s, same_padding_kwargs, takes_same_padding
from .deeplab import DeepLabASPP, DeepLabLargeFOV, DilationContext, DilationFrontend
from .segnet import SegNet
from .vgg import FC, FCN_VGG16, VGG16, Pool, Stage

__all__ = ["Model", "FCN", "FCN32s", "FCN16s", "FCN8s", "FCN8sAtOnce", "VGG16", "Stage", "Pool", "FC",
           "FCN_VGG16", "SegNet", "MODELS", "build", "load_model", "register_model",
           "DeepLabLargeFOV", "DeepLabASPP", "DilationFrontend", "DilationContext", "same_padding_kwargs",
           "takes_same_padding"]
