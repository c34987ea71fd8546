"""The one package that knows which array library is in use.

Layer code never imports numpy or cupy: it asks :func:`namespace` for the array
namespace of its inputs (NumPy, CuPy or array_api_strict, seen through
array_api_compat) and allocates with ``device=`` taken from those inputs. Anything
outside the array API standard (random numbers, host transfers, native fast paths,
CPU threads) lives here, with a portable fallback.

Backends are named by strings:

========================  ==================================================
``"numpy"``               NumPy on the CPU
``"cupy"``                CuPy on the current GPU (imported lazily)
``"strict"``              array_api_strict on its ``CPU_DEVICE``
``"strict:device1"``      array_api_strict on its fake ``device1``, which
                          refuses host conversion and mixing with NumPy
                          exactly as CuPy does
========================  ==================================================

One file per job; everything public is re-exported here, so
``from minifcn.backend import namespace`` and ``backend.namespace`` both work:

==============  ==================================================================
``arrays``      the array-API seam: BACKEND_NAMES, namespace, device, is_numpy,
                is_cupy, cupy_available, Backend, get_backend, backend_of,
                to_numpy, to_backend
``rng``         RNG: seeded, resumable random numbers on every backend
``native``      outside the array API, with fallbacks: bincount, scatter_add_rows, matmul,
                element_strides, as_strided
``threads``     CPU parallelism: row_bands, parallel_for, threads_for,
                by_channels, blas_info, blas_threads; settings THREADS, BAND_ELEMENTS,
                CPU_BAND_ELEMENTS, DEVICE_BAND_ELEMENTS
``buffers``     scratch: per-thread reusable temporary buffers (named apart from
                the function, so ``backend.scratch`` is the function)
``frame``       constant_frame (FCN's padding-100 frame); settings
                FRAME_MIN_PIXELS, FRAME_MAX_RING
==============  ==================================================================

The settings live in their own module and are read there at every call. Reading
or assigning one through this package (``backend.THREADS = 2``, or
``monkeypatch.setattr(backend, "BAND_ELEMENTS", 1)``) reaches that module, so it
takes effect exactly as assigning ``backend.threads.THREADS`` does.
"""
from __future__ import annotations

import sys
import types

from . import frame as _frame
from . import threads as _threads
from .arrays import (BACKEND_NAMES, Backend, backend_of, cupy_available, device, get_backend, is_cupy,
                     is_numpy, namespace, to_backend, to_numpy)
from .frame import constant_frame
from .native import as_strided, bincount, element_strides, matmul, scatter_add_rows, scatter_add_rows_portable
from .rng import RNG
from .buffers import scratch
from .threads import blas_info, blas_threads, by_channels, one_blas_thread, parallel_for, row_bands, threads_for

# Module-level settings, by name, and the module that defines and reads each.
_SETTINGS = {name: _threads for name in ("THREADS", "BAND_ELEMENTS", "CPU_BAND_ELEMENTS", "DEVICE_BAND_ELEMENTS")}
_SETTINGS.update({name: _frame for name in ("FRAME_MIN_PIXELS", "FRAME_MAX_RING")})

__all__ = [
    "BACKEND_NAMES", "namespace", "device", "is_numpy", "is_cupy", "cupy_available", "Backend",
    "get_backend", "backend_of", "to_numpy", "to_backend",
    "RNG",
    "bincount", "matmul", "element_strides", "as_strided", "scatter_add_rows", "scatter_add_rows_portable",
    "blas_info", "blas_threads", "one_blas_thread", "threads_for", "parallel_for", "row_bands", "by_channels",
    "scratch",
    "constant_frame",
    *_SETTINGS,
]


def __dir__():
    return sorted(set(globals()) | set(_SETTINGS))


def _setting(name, module):
    """A property reading and assigning ``module.name``, the value ``module`` reads."""
    return property(lambda self: getattr(module, name), lambda self, value: setattr(module, name, value),
                    doc=f"{module.__name__}.{name}")


# This package's module type: each setting is a property that forwards to its module,
# so ``backend.THREADS = 2`` and monkeypatching (and undoing) it act where it is read.
_Package = type("_Package", (types.ModuleType,),
                {name: _setting(name, module) for name, module in _SETTINGS.items()})
sys.modules[__name__].__class__ = _Package
