"""Shared fixtures. ``backend`` runs a test on every array backend:

numpy; array_api_strict on CPU_DEVICE; array_api_strict on ``device1`` (refuses host
conversion and mixing with NumPy, as CuPy does); and cupy when a GPU is available.
"""
import numpy as np
import pytest

from minifcn.backend import cupy_available, get_backend

BACKENDS = [
    "numpy",
    "strict",
    "strict:device1",
    pytest.param("cupy", marks=pytest.mark.skipif(not cupy_available(), reason="CuPy with a GPU not available")),
]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """A :class:`minifcn.backend.Backend` (xp, device) for each test backend."""
    return get_backend(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
