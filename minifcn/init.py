"""Weight initialisers. They return float32 NumPy arrays; layers move them to their backend."""
from __future__ import annotations

import numpy as np


def generator(seed=None) -> np.random.Generator:
    """A NumPy Generator for initialisation: ``seed`` may be an int, None, or a Generator (returned as is)."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def bilinear_filter(k: int) -> np.ndarray:
    """The (k, k) bilinear interpolation filter: an outer product of triangles.

    With f = ceil(k / 2) and centre c = f - 1 (k odd) or f - 1/2 (k even),
    filt[i, j] = (1 - |i - c| / f) * (1 - |j - c| / f).
    A transposed convolution with this filter and stride f upsamples by f.
    """
    if k < 1:
        raise ValueError(f"bilinear kernel size must be >= 1, got {k}")
    f = (k + 1) // 2
    c = f - 1 if k % 2 == 1 else f - 0.5
    t = 1.0 - np.abs(np.arange(k) - c) / f
    return np.outer(t, t)


def bilinear_kernel(c_in: int, c_out: int, k: int, dtype=np.float32) -> np.ndarray:
    """Transposed-convolution weight (C_in, C_out, k, k) that upsamples each channel bilinearly.

    The filter sits on the channel diagonal (channel i -> channel i); off-diagonal
    entries are zero, so channels do not mix.
    """
    w = np.zeros((c_in, c_out, k, k), dtype=dtype)
    filt = bilinear_filter(k).astype(dtype)
    for i in range(min(c_in, c_out)):
        w[i, i] = filt
    return w


def he_normal(shape, rng=None, fan_in: int | None = None, dtype=np.float32) -> np.ndarray:
    """He et al. (2015) normal init: N(0, 2 / fan_in), fan_in = C_in*KH*KW by default."""
    if fan_in is None:
        fan_in = int(np.prod(shape[1:]))
    return (generator(rng).standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


def zeros(shape, dtype=np.float32) -> np.ndarray:
    """All zeros (the FCN score layers start here)."""
    return np.zeros(shape, dtype=dtype)
