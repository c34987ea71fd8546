"""The array-API seam: which array library and device an array lives on.

Layer code never imports numpy or cupy: it asks :func:`namespace` for the array
namespace of its inputs (NumPy, CuPy or array_api_strict, seen through
array_api_compat) and allocates with ``device=`` taken from those inputs.
:class:`Backend` names a namespace plus a device; :func:`to_numpy` and
:func:`to_backend` are the only sanctioned moves between host and device.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import array_api_compat
import numpy as np

BACKEND_NAMES = ("numpy", "cupy", "strict", "strict:device1")


def namespace(*arrays):
    """Array-API namespace shared by ``arrays`` (``None`` entries are skipped)."""
    return array_api_compat.array_namespace(*[a for a in arrays if a is not None])


def device(x):
    """Device of array ``x`` (pass it to ``device=`` when allocating beside ``x``)."""
    return array_api_compat.device(x)


def is_numpy(x) -> bool:
    return array_api_compat.is_numpy_array(x)


def is_cupy(x) -> bool:
    return array_api_compat.is_cupy_array(x)


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        cupy = importlib.import_module("cupy")
        return bool(cupy.is_available())
    except Exception:
        return False


@dataclasses.dataclass(frozen=True)
class Backend:
    """An array namespace plus the device arrays are allocated on."""

    name: str
    xp: Any
    device: Any

    def asarray(self, a, dtype=None):
        """Copy host data (NumPy array, list, scalar) or another array onto this backend."""
        if dtype is not None:
            dtype = self.dtype(dtype)
        if not (is_numpy(a) or isinstance(a, (list, tuple, int, float))):
            a = to_numpy(a)
        return self.xp.asarray(a, dtype=dtype, device=self.device)

    def dtype(self, dtype):
        """This namespace's dtype for a name ("float32"), a NumPy dtype, or one of its own dtypes."""
        if isinstance(dtype, (str, type, np.dtype)):
            return getattr(self.xp, np.dtype(dtype).name)
        return dtype

    def __repr__(self):
        return f"Backend({self.name!r})"


def get_backend(name: str = "numpy") -> Backend:
    """Return the :class:`Backend` for one of :data:`BACKEND_NAMES`."""
    if isinstance(name, Backend):
        return name
    if name == "numpy":
        return Backend("numpy", array_api_compat.array_namespace(np.empty(0)), "cpu")
    if name == "cupy":
        if not cupy_available():
            raise RuntimeError("backend 'cupy' requested but CuPy is not installed or sees no GPU "
                               "(install minifcn[cuda12] or minifcn[cuda13])")
        cupy = importlib.import_module("cupy")
        xp = array_api_compat.array_namespace(cupy.empty(0))
        return Backend("cupy", xp, cupy.cuda.Device())
    if name in ("strict", "strict:device1"):
        try:
            import array_api_strict as xps
        except ImportError as exc:  # pragma: no cover - test extra
            raise RuntimeError("backend %r needs array-api-strict (pip install array-api-strict)" % name) from exc
        dev = xps.Device("device1" if name.endswith("device1") else "CPU_DEVICE")
        return Backend(name, xps, dev)
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKEND_NAMES)}")


def backend_of(x) -> Backend:
    """The :class:`Backend` array ``x`` lives on."""
    if is_numpy(x):
        return get_backend("numpy")
    if is_cupy(x):
        return get_backend("cupy")
    xp = namespace(x)
    if xp.__name__.startswith("array_api_strict"):
        return Backend("strict:device1" if "device1" in str(x.device) else "strict", xp, x.device)
    return Backend(xp.__name__, xp, device(x))


def to_numpy(x) -> np.ndarray:
    """Explicit host copy of any backend's array (the only sanctioned host transfer)."""
    if x is None or isinstance(x, np.ndarray):
        return x
    if is_cupy(x):
        return x.get()
    if isinstance(x, (int, float, bool, np.generic)):
        return np.asarray(x)
    mod = type(x).__module__
    if mod.startswith("array_api_strict"):
        import array_api_strict as xps

        if x.device != xps.Device("CPU_DEVICE"):
            x = x.to_device(xps.Device("CPU_DEVICE"))
        return np.asarray(x)
    return np.asarray(x)


def to_backend(x, backend):
    """Move array ``x`` onto ``backend`` (a name or :class:`Backend`)."""
    b = get_backend(backend)
    if backend_of(x).name == b.name:
        return x
    return b.asarray(to_numpy(x))
