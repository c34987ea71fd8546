"""The one module that knows which array library is in use.

Layer code never imports numpy or cupy: it asks :func:`namespace` for the array
namespace of its inputs (NumPy, CuPy or array_api_strict, seen through
array_api_compat) and allocates with ``device=`` taken from those inputs. Anything
outside the array API standard (random numbers, host transfers, native fast paths)
lives here, with a portable fallback.

Backends are named by strings:

========================  ==================================================
``"numpy"``               NumPy on the CPU
``"cupy"``                CuPy on the current GPU (imported lazily)
``"strict"``              array_api_strict on its ``CPU_DEVICE``
``"strict:device1"``      array_api_strict on its fake ``device1``, which
                          refuses host conversion and mixing with NumPy
                          exactly as CuPy does
========================  ==================================================
"""
from __future__ import annotations

import ctypes
import dataclasses
import glob
import importlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
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


def scalar(x) -> float:
    """Python float of a 0-d array. Synchronises a GPU: keep it out of hot loops."""
    return float(x)


# ----------------------------------------------------------------------------
# Random numbers
# ----------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------
# Native fast paths (outside the array API), each with a portable fallback
# ----------------------------------------------------------------------------
def bincount(x, minlength: int):
    """Counts of each value in the 1-D non-negative integer array ``x``."""
    if is_numpy(x):
        return np.bincount(x, minlength=minlength)
    if is_cupy(x):
        cupy = importlib.import_module("cupy")
        return cupy.bincount(x, minlength=minlength)
    xp = namespace(x)
    values = xp.arange(minlength, device=device(x), dtype=x.dtype)
    return xp.sum(xp.astype(x[:, None] == values[None, :], xp.int64), axis=0)


def scatter_add(target, index, values):
    """``target[index[i]] += values[i]`` along axis 0 with repeated indices summed.

    ``target`` is modified in place and returned.
    """
    if is_numpy(target):
        np.add.at(target, index, values)
        return target
    if is_cupy(target):
        cupy = importlib.import_module("cupyx")
        cupy.scatter_add(target, index, values)
        return target
    xp = namespace(target)
    onehot = xp.astype(index[:, None] == xp.arange(target.shape[0], device=device(target))[None, :],
                       values.dtype)
    flat = xp.reshape(values, (values.shape[0], -1))
    target[...] += xp.reshape(xp.matrix_transpose(onehot) @ flat, target.shape)
    return target


# Loops over an image in bands of output rows keep their temporaries (im2col columns)
# small enough to stay in a CPU core's cache. On a GPU few big kernels are best: one
# band unless its columns would pass DEVICE_BAND_ELEMENTS.
CPU_BAND_ELEMENTS = 1 << 18     # about 1 MiB of float32 per band
DEVICE_BAND_ELEMENTS = 1 << 26  # 256 MiB of float32
BAND_ELEMENTS = None            # set to force a band size on every backend (tests)


def row_bands(rows, elements_per_row, like, min_rows=1):
    """Split ``range(rows)`` into ``[(r0, r1), ...]`` bands of about ``CPU_BAND_ELEMENTS``
    (NumPy) or at most ``DEVICE_BAND_ELEMENTS`` (other backends) elements, but at least
    ``min_rows`` rows, for arrays beside ``like``."""
    target = BAND_ELEMENTS
    if target is None:
        target = CPU_BAND_ELEMENTS if is_numpy(like) else DEVICE_BAND_ELEMENTS
    step = max(1, min_rows, min(rows, target // max(1, elements_per_row)))
    return [(r, min(r + step, rows)) for r in range(0, rows, step)]


# Band loops run on all CPU cores (NumPy only). Each thread calls OpenBLAS with ONE
# thread: the bands are the parallelism, and on a busy machine a multi-threaded BLAS
# call waits for a core while a band queue simply lets the threads that run take more.
THREADS = None                  # worker threads for band loops; None = the usable cores


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _openblas_libs():
    """NumPy's bundled OpenBLAS (wheels ship it beside the package), loaded with ctypes."""
    paths = glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "*openblas*"))
    paths += glob.glob(os.path.join(os.path.dirname(np.__file__), ".dylibs", "*openblas*"))
    for path in paths:
        try:
            yield ctypes.CDLL(path)
        except OSError:
            continue


def _openblas_set_local():
    """NumPy's bundled OpenBLAS ``openblas_set_num_threads_local`` (per-thread BLAS
    thread count, OpenBLAS >= 0.3.27), or None when it cannot be found."""
    for lib in _openblas_libs():
        fn = getattr(lib, "openblas_set_num_threads_local", None)
        if fn is not None:
            fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
            return fn
    return None


def blas_info() -> dict:
    """``{"config": ..., "core": ...}`` of NumPy's OpenBLAS (the kernel it picked for this
    CPU, which OPENBLAS_CORETYPE can override), or {} when not found. For reports only."""
    for lib in _openblas_libs():
        info = {}
        for key in ("config", "corename"):
            for name in (f"openblas_get_{key}", f"scipy_openblas_get_{key}64_", f"scipy_openblas_get_{key}"):
                fn = getattr(lib, name, None)
                if fn is not None:
                    fn.restype = ctypes.c_char_p
                    info["core" if key == "corename" else key] = fn().decode()
                    break
        if info:
            return info
    return {}


class _Pool:
    """A lazily started pool of helper threads, re-made after ``fork``."""

    def __init__(self):
        self.executor, self.size, self.blas_local = None, 0, False
        self.inside = threading.local()     # set while a thread runs band work (no nesting)

    def blas(self):
        """NumPy's per-thread BLAS thread-count setter, or None (looked up once)."""
        if self.blas_local is False:
            self.blas_local = _openblas_set_local()
        return self.blas_local

    def get(self, size):
        if self.executor is None or self.size != size:
            if self.executor is not None:
                self.executor.shutdown(wait=True)
            self.executor = ThreadPoolExecutor(size, "minifcn-band", initializer=lambda: self.blas()(1))
            self.size = size
        return self.executor

    def reset(self):
        self.executor, self.size = None, 0


_POOL = _Pool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL.reset)


def threads_for(like):
    """How many threads :func:`parallel_for` would use for arrays beside ``like``."""
    if not is_numpy(like):
        return 1
    return max(1, THREADS if THREADS is not None else _cpu_count())


def parallel_for(fn, items, like):
    """``[fn(*item) for item in items]``, spread over the CPU cores for NumPy arrays.

    The calling thread and ``THREADS - 1`` helpers take items from one shared queue, so
    a thread that gets no core simply does less, and every thread calls BLAS with one
    thread (a lone item too: on a busy machine a multi-threaded BLAS call on a small
    band stalls waiting for a core). ``fn`` must write only to places no other item
    writes (e.g. disjoint row bands). Results come back in item order. Runs as a plain
    loop on other backends (a GPU runs one big kernel per band), inside another
    ``parallel_for``, or when NumPy's BLAS thread count cannot be set per thread.
    """
    items = list(items)
    if not is_numpy(like) or getattr(_POOL.inside, "active", False) or _POOL.blas() is None:
        return [fn(*item) for item in items]
    threads = min(len(items), threads_for(like))
    results = [None] * len(items)
    queue, lock = iter(range(len(items))), threading.Lock()

    def work():
        _POOL.inside.active = True
        try:
            while True:
                with lock:
                    i = next(queue, None)
                if i is None:
                    return
                results[i] = fn(*items[i])
        finally:
            _POOL.inside.active = False

    helpers = []
    if threads > 1:
        pool = _POOL.get(threads_for(like) - 1)
        helpers = [pool.submit(work) for _ in range(threads - 1)]
    old = _POOL.blas()(1)
    try:
        work()
    finally:
        _POOL.blas()(old)
        for h in helpers:             # wait for every helper before anyone reads the outputs
            h.exception()
    for h in helpers:
        h.result()                    # re-raise a helper's error
    return results


FRAME_MIN_PIXELS = 32 * 32       # smaller images are not worth inspecting
FRAME_MAX_RING = 8               # outer rows/columns that may differ from the frame


def constant_frame(x):
    """Where every (n, c) plane of x (N, C, H, W) is one value v[n, c] around a core.

    Returns ``(box, ring)`` or None: outside ``box = (r0, r1, c0, c1)`` and inside an
    outer ring of ``ring = (a, b)`` rows/columns (a at the top and left, b at the bottom
    and right) every plane equals v = x[:, :, a, a]. The ring holds what saw zero
    padding in earlier layers (it grows by one per 3x3 convolution). None: no such
    frame, a small image, or a backend other than NumPy (finding it reads the data on
    the host, a GPU sync).
    """
    if not is_numpy(x) or x.ndim != 4 or x.shape[2] * x.shape[3] < FRAME_MIN_PIXELS:
        return None
    n, c, h, w = x.shape

    def ring_width(diagonal):      # first 2x2 block along the diagonal holding one value per plane
        for k in range(min(FRAME_MAX_RING, h - 2, w - 2) + 1):
            block = diagonal(k)
            if (block == block[:, :, :1, :1]).all():
                return k
        return None

    a = ring_width(lambda k: x[:, :, k:k + 2, k:k + 2])
    b = ring_width(lambda k: x[:, :, h - 2 - k:h - k, w - 2 - k:w - k])
    if a is None or b is None or a + b + 2 > min(h, w):
        return None
    inner = x[:, :, a:h - b, a:w - b]
    same = np.empty(inner.shape, dtype=bool)
    by_channels(lambda c0, c1: inner[:, c0:c1] == x[:, c0:c1, a:a + 1, a:a + 1], same)
    rows = np.flatnonzero(~same.all(axis=(0, 1, 3)))
    cols = np.flatnonzero(~same.all(axis=(0, 1, 2)))
    hi, wi = inner.shape[2:]
    if rows.size == 0 or (rows[0] == 0 and rows[-1] == hi - 1 and cols[0] == 0 and cols[-1] == wi - 1):
        return None
    box = int(rows[0]) + a, int(rows[-1]) + 1 + a, int(cols[0]) + a, int(cols[-1]) + 1 + a
    return box, (a, b)


def by_channels(fn, out):
    """``out[:, c0:c1] = fn(c0, c1)`` over cache-sized groups of channels (axis 1), on
    all cores for NumPy; a single ``out[...] = fn(0, C)`` where that is all there is.
    Element-wise passes over big activations then run in cache, in parallel."""
    def chunk(c0, c1):
        out[:, c0:c1, ...] = fn(c0, c1)

    c = out.shape[1]
    parallel_for(chunk, row_bands(c, out.size // max(1, c), out), out)
    return out


_SCRATCH = threading.local()


def scratch(shape, dtype, like, slot=0):
    """An uninitialised temporary array of ``shape`` beside ``like``.

    On NumPy it is a view of a buffer kept per thread and per ``slot`` and reused by
    the next call, so band loops do not page-fault fresh memory in every band; it is
    valid only until the next ``scratch`` call with the same slot in the same thread.
    Other backends get a fresh ``empty`` array.
    """
    if not is_numpy(like):
        return namespace(like).empty(shape, dtype=dtype, device=device(like))
    size = 1
    for dim in shape:
        size *= int(dim)
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    key = (slot, np.dtype(dtype))
    buf = buffers.get(key)
    if buf is None or buf.size < size:
        buf = buffers[key] = np.empty(size, dtype)
    return buf[:size].reshape(shape)


def matmul(a, b, out=None):
    """``a @ b``, written into ``out`` where the backend supports it (NumPy), else fresh."""
    if out is not None and is_numpy(out) and is_numpy(a) and is_numpy(b):
        return np.matmul(a, b, out=out)
    return a @ b


def element_strides(x):
    """Strides of ``x`` in elements (NumPy/CuPy), or None where arrays expose none."""
    if is_numpy(x) or is_cupy(x):
        return tuple(s // x.itemsize for s in x.strides)
    return None


def as_strided(x, shape, strides_in_elements):
    """A strided view of ``x`` (NumPy/CuPy only); ``None`` where unsupported."""
    if is_numpy(x):
        item = x.itemsize
        return np.lib.stride_tricks.as_strided(x, shape, [s * item for s in strides_in_elements],
                                               writeable=False)
    if is_cupy(x):
        cupy = importlib.import_module("cupy")
        item = x.itemsize
        return cupy.lib.stride_tricks.as_strided(x, shape, [s * item for s in strides_in_elements])
    return None
