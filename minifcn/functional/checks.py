"""Input validation shared by the functional ops: errors name the bad value and the expected shape."""
from __future__ import annotations

from ..backend import namespace


def check_ndim(x, ndim, name, layout):
    """Raise ValueError unless ``x`` has ``ndim`` axes (``layout`` names them, e.g. "(N, C, H, W)")."""
    shape = getattr(x, "shape", None)
    if shape is None:
        raise ValueError(f"{name} must be an array of shape {layout}, got {type(x).__name__}")
    if len(shape) != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {tuple(shape)} ({len(shape)}-D)")


def check_float(x, name):
    """Raise ValueError unless ``x`` has a real floating dtype."""
    xp = namespace(x)
    if not xp.isdtype(x.dtype, "real floating"):
        raise ValueError(f"{name} must be a floating-point array (float32 or float64), got dtype {x.dtype}")


def check_same_dtype(a, b, name_a, name_b):
    if a.dtype != b.dtype:
        raise ValueError(f"{name_a} has dtype {a.dtype} but {name_b} has dtype {b.dtype}; they must match")


def check_bias(bias, channels, name="bias", like=None):
    """Raise ValueError unless ``bias`` is None or has shape (channels,) and the dtype of ``like``."""
    if bias is None:
        return
    if tuple(bias.shape) != (channels,):
        raise ValueError(f"{name} must have shape ({channels},), got {tuple(bias.shape)}")
    if like is not None and bias.dtype != like.dtype:
        raise ValueError(f"{name} has dtype {bias.dtype} but the input has dtype {like.dtype}; they must match")
