"""Element-wise activations: ReLU and Caffe-style (inverted) dropout."""
from __future__ import annotations

from ..backend import RNG, by_channels, device, namespace


def relu(x):
    """y = max(x, 0). Returns ``(y, cache)``; the cache is the output y (its sign is the mask)."""
    xp = namespace(x)
    zero = xp.zeros((), dtype=x.dtype, device=device(x))
    if x.ndim < 2:
        y = xp.maximum(x, zero)
    else:                           # channel groups on all cores (see backend.by_channels)
        y = by_channels(lambda c0, c1: xp.maximum(x[:, c0:c1, ...], zero), xp.empty_like(x))
    return y, y


def relu_backward(dy, cache):
    """dx = dy where y > 0, else 0."""
    xp = namespace(dy)
    y = cache
    if dy.ndim < 2:
        return dy * xp.astype(y > 0, dy.dtype)
    return by_channels(lambda c0, c1: dy[:, c0:c1, ...] * xp.astype(y[:, c0:c1, ...] > 0, dy.dtype),
                       xp.empty_like(dy))


_DEFAULT_RNG = RNG(None)


def dropout(x, p=0.5, training=True, rng=None):
    """Element-wise dropout as in Caffe: keep each value with probability 1 - p and scale by 1/(1 - p).

    In evaluation (``training=False``) or with ``p == 0`` it is the identity. ``rng`` is a
    :class:`minifcn.backend.RNG` (default: a process-wide unseeded one). Returns ``(y, cache)``
    with y = x * mask, mask = keep / (1 - p); the cache is ``(keep, 1 / (1 - p))`` with the
    boolean keep array (a quarter of a float32 mask's memory), or None for the identity.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability p must be in [0, 1), got {p!r}")
    if not training or p == 0.0:
        return x, None
    rng = _DEFAULT_RNG if rng is None else rng
    keep = rng.uniform(tuple(x.shape), like=x) >= p
    scale = 1.0 / (1.0 - p)
    return x * _mask(keep, scale, x.dtype), (keep, scale)


def _mask(keep, scale, dtype):
    return namespace(keep).astype(keep, dtype) * scale


def dropout_backward(dy, cache):
    """dx = dy * mask (the forward's mask, rebuilt from its keep array)."""
    if cache is None:
        return dy
    keep, scale = cache
    return dy * _mask(keep, scale, dy.dtype)
