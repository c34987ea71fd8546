"""Batch normalisation in fewer passes: equals :func:`..reference.batch_norm2d` and
:func:`..reference.batch_norm2d_backward` to rounding.

Why faster: the reference makes a fresh full-size array for nearly every term (the
centred input, its square, xhat, gamma * xhat, + beta; in backward dy * xhat, g,
g * xhat, g - mean(g), ...), about a dozen passes over memory in backward. Here the
per-channel sums of products (sum x^2, sum dy * xhat) are one batched matrix product
of each channel's values with themselves, which reads them once and writes nothing,
and the affine parts are folded into per-channel factors applied in place. With
a = gamma / sqrt(var + eps), the training-mode input gradient is

    dx = a * dy - (a * mean(dy * xhat)) * xhat - a * mean(dy)

so backward reads dy and xhat for the two sums and writes dx in three passes.
:mod:`..norm` takes this plan on NumPy.
"""
from __future__ import annotations

from ...backend import namespace


def _channel_sums(a, b=None):
    """sum over (N, H, W) of a (or of a * b) per channel, (C,): a * b as one (N, C) batch
    of 1 x M by M x 1 matrix products, with no full-size temporary."""
    xp = namespace(a)
    n, c, h, w = a.shape
    if b is None:
        return xp.sum(xp.reshape(a, (n, c, h * w)), axis=(0, 2))
    dots = xp.matmul(xp.reshape(a, (n, c, 1, h * w)), xp.reshape(b, (n, c, h * w, 1)))
    return xp.sum(xp.reshape(dots, (n, c)), axis=0)


def batch_norm2d(x, weight, bias, mean, var, eps):
    """y, xhat, inv_std, mean, var of :func:`..reference.batch_norm2d`."""
    xp = namespace(x)
    n, c, h, w = x.shape
    count = n * h * w
    if mean is None:
        mean = _channel_sums(x) / count
        xhat = x - xp.reshape(mean, (1, c, 1, 1))
        var = _channel_sums(xhat, xhat) / count
    else:
        xhat = x - xp.reshape(mean, (1, c, 1, 1))
    inv_std = 1.0 / xp.sqrt(xp.reshape(var, (1, c, 1, 1)) + eps)
    xhat *= inv_std
    y = xhat if weight is None else xhat * xp.reshape(weight, (1, c, 1, 1))
    if bias is not None:
        if y is xhat:
            y = xhat + xp.reshape(bias, (1, c, 1, 1))
        else:
            y += xp.reshape(bias, (1, c, 1, 1))
    return y, xhat, inv_std, mean, var


def batch_norm2d_backward(dy, xhat, inv_std, weight, has_bias, training):
    """dx, dweight, dbias of :func:`..reference.batch_norm2d_backward`."""
    xp = namespace(dy, xhat)
    n, c, h, w = xhat.shape
    count = n * h * w
    sum_dy = _channel_sums(dy) if has_bias or training else None
    sum_dyx = _channel_sums(dy, xhat) if weight is not None or training else None
    a = inv_std if weight is None else xp.reshape(weight, (1, c, 1, 1)) * inv_std     # (1, C, 1, 1)
    dx = dy * a
    if training:
        dx -= xhat * (a * xp.reshape(sum_dyx / count, (1, c, 1, 1)))
        dx -= a * xp.reshape(sum_dy / count, (1, c, 1, 1))
    return dx, sum_dyx if weight is not None else None, sum_dy if has_bias else None
