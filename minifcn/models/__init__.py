"""The FCN models: the VGG16 trunk, the four FCN heads and their geometry.

    >>> from minifcn.models import build, load_model
    >>> model = build("fcn8s", n_class=21, width=0.25)
    >>> scores = model.forward(x)          # (N, 3, H, W) -> (N, 21, H, W)
    >>> dx = model.backward(dscores)       # adds into every unfrozen parameter's grad
"""
from .fcn import FCN, MODELS, FCN8s, FCN8sAtOnce, FCN16s, FCN32s, build, load_model
from .vgg import VGG16

__all__ = ["FCN", "FCN32s", "FCN16s", "FCN8s", "FCN8sAtOnce", "VGG16", "MODELS", "build", "load_model"]
