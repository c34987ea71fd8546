"""Random numbers on every backend, reproducible from one seed (:class:`RNG`).

Random generation is outside the array API standard, so it lives here: NumPy and
array_api_strict draw on the host, CuPy draws on the GPU.
"""
from __future__ import annotations

import importlib

import numpy as np

from .arrays import device, is_cupy, is_numpy, namespace


class RNG:
    """Random numbers on any backend, reproducible from one seed.

    NumPy and array_api_strict draw from a ``numpy.random.Generator`` (strict arrays
    are then copied onto their device); CuPy draws on the GPU from its own generator
    seeded from the same seed. ``state()``/``set_state()`` make runs resumable.
    """

    def __init__(self, seed: int | None = 0):
        self.seed = seed
        self.np = np.random.default_rng(seed)
        self._cupy = None

    def _cupy_rng(self):
        if self._cupy is None:
            cupy = importlib.import_module("cupy")
            self._cupy = cupy.random.default_rng(int(self.np.integers(2**63 - 1)))
        return self._cupy

    def uniform(self, shape, like, dtype=None):
        """Uniform [0, 1) samples of ``shape`` on the backend and device of ``like``."""
        xp = namespace(like)
        dtype = like.dtype if dtype is None else dtype
        if is_cupy(like):
            return self._cupy_rng().random(shape, dtype=dtype)
        u = self.np.random(shape, dtype=np.float64 if "64" in str(dtype) else np.float32)
        return xp.asarray(u, device=device(like)) if not is_numpy(like) else u

    def normal(self, shape, like, dtype=None, std=1.0):
        """Normal(0, std^2) samples on the backend of ``like``."""
        xp = namespace(like)
        dtype = like.dtype if dtype is None else dtype
        if is_cupy(like):
            return self._cupy_rng().standard_normal(shape, dtype=dtype) * std
        z = self.np.standard_normal(shape) * std
        z = z.astype(np.float64 if "64" in str(dtype) else np.float32)
        return xp.asarray(z, device=device(like)) if not is_numpy(like) else z

    def state(self) -> dict:
        """JSON-able state of the host generator (the GPU stream is reseeded from it)."""
        return self.np.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.np.bit_generator.state = state
        self._cupy = None
