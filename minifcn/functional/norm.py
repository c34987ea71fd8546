"""Batch normalisation over the channels of an NCHW batch (Ioffe & Szegedy, ICML 2015).

x: (N, C, H, W); weight (gamma), bias (beta), running_mean, running_var: (C,).
Every channel c is normalised over its M = N*H*W values:

    training:  mu_c  = mean(x[:, c])              var_c = mean((x[:, c] - mu_c)^2)   (biased)
    eval:      mu_c  = running_mean[c]            var_c = running_var[c]
    xhat = (x - mu_c) / sqrt(var_c + eps)         y = gamma_c * xhat + beta_c

Backward (g = dy * gamma, sums over the M values of channel c):

    dbeta_c  = sum dy                             dgamma_c = sum dy * xhat
    eval:      dx = g / sqrt(var_c + eps)
    training:  dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var_c + eps)

The training formula is the full derivative through mu_c and var_c (they depend on
every x of the channel), not the eval-mode shortcut. The op itself never touches the
running statistics: in training its cache carries the batch's ``mean`` and (biased)
``var`` and the ``count`` M, from which a layer updates them as PyTorch does:
``running = (1 - momentum) * running + momentum * batch`` with the unbiased variance
``var * M / (M - 1)``.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import is_numpy, namespace
from . import reference
from .checks import check_float, check_ndim
from .fast import norm as fast_norm
from .mode import reference_enabled


class BatchNormCache(NamedTuple):
    """What :func:`batch_norm2d_backward` needs, plus the batch statistics for a layer.

    xhat: (N, C, H, W) normalised input; inv_std: (1, C, 1, 1) = 1 / sqrt(var + eps);
    weight: (C,) or None; has_bias: whether a bias was given; training: which formula;
    mean, var: (C,) batch mean and biased variance (training) or the running statistics
    used (eval); count: M = N*H*W values per channel.
    """

    xhat: Any
    inv_std: Any
    weight: Any
    has_bias: bool
    training: bool
    mean: Any
    var: Any
    count: int


def _dtype_name(dtype):
    return str(dtype).rsplit(".", 1)[-1]        # "array_api_strict.float32" -> "float32"


def _check_vector(v, channels, name, like):
    if v is None:
        return
    if not hasattr(v, "shape") or tuple(v.shape) != (channels,):
        got = tuple(v.shape) if hasattr(v, "shape") else type(v).__name__
        raise ValueError(f"batch_norm2d {name} must have shape (C,) = ({channels},) for an input of "
                         f"shape {tuple(like.shape)}, got {got}")
    if v.dtype != like.dtype:
        raise ValueError(f"batch_norm2d {name} has dtype {_dtype_name(v.dtype)} but the input x has dtype "
                         f"{_dtype_name(like.dtype)}; they must match")


def batch_norm2d(x, weight, bias, running_mean=None, running_var=None, training=True, eps=1e-5):
    """Batch normalisation. x: (N, C, H, W) -> ``(y, cache)``, y: (N, C, H, W).

    ``weight`` / ``bias``: (C,) or None (no scale / no shift, PyTorch's affine=False).
    ``training=True`` normalises with the batch mean and biased variance per channel
    over (N, H, W); ``training=False`` with ``running_mean`` / ``running_var`` (C,),
    which are then required. ``eps`` > 0 is added to the variance. The running
    statistics are read, never written (see the module docstring).
    """
    check_ndim(x, 4, "batch_norm2d input x", "(N, C, H, W)")
    check_float(x, "batch_norm2d input x")
    n, c, h, w = x.shape
    for v, name in ((weight, "weight"), (bias, "bias"), (running_mean, "running_mean"),
                    (running_var, "running_var")):
        _check_vector(v, c, name, x)
    if not eps > 0:
        raise ValueError(f"batch_norm2d eps must be > 0, got {eps!r}")
    count = n * h * w
    if count == 0:
        raise ValueError(f"batch_norm2d needs at least one value per channel, got input shape {tuple(x.shape)}")
    if not training and (running_mean is None or running_var is None):
        missing = [nm for nm, v in (("running_mean", running_mean), ("running_var", running_var)) if v is None]
        raise ValueError(f"batch_norm2d with training=False normalises with the running statistics, "
                         f"but {' and '.join(missing)} is None; pass arrays of shape (C,) = ({c},)")
    namespace(x, weight, bias, running_mean, running_var)          # one backend for all of them
    stats = (None, None) if training else (running_mean, running_var)
    y, xhat, inv_std, mean, var = _plan(x).batch_norm2d(x, weight, bias, *stats, eps)
    return y, BatchNormCache(xhat, inv_std, weight, bias is not None, bool(training), mean, var, count)


def batch_norm2d_backward(dy, cache: BatchNormCache):
    """Gradients of :func:`batch_norm2d`. dy: (N, C, H, W) -> ``(dx, dweight, dbias)``.

    dx: (N, C, H, W); dweight, dbias: (C,), or None where no weight / bias was given.
    """
    xhat, inv_std, weight = cache.xhat, cache.inv_std, cache.weight
    if tuple(dy.shape) != tuple(xhat.shape):
        raise ValueError(f"batch_norm2d_backward dy must have the output's shape {tuple(xhat.shape)}, "
                         f"got {tuple(dy.shape)}")
    namespace(dy, xhat)
    return _plan(dy).batch_norm2d_backward(dy, xhat, inv_std, weight, cache.has_bias, cache.training)


def _plan(x):
    """The fewer-pass plan (:mod:`.fast.norm`) on NumPy, off the reference path."""
    return fast_norm if is_numpy(x) and not reference_enabled() else reference
