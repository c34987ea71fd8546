"""CPU parallelism: band sizes, the band-loop thread pool and per-thread BLAS control.

Loops over an image in bands of output rows (:func:`row_bands`) keep their
temporaries small enough to stay in a CPU core's cache; :func:`parallel_for` runs
the bands on all cores (NumPy only), each thread calling NumPy's OpenBLAS with one
thread. :func:`by_channels` applies the same to element-wise passes.

The settings below are read from this module at every call, so assigning them
(``minifcn.backend.threads.THREADS = 2``, or through the package,
``minifcn.backend.THREADS = 2``) takes effect at once.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .arrays import is_numpy

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


@contextlib.contextmanager
def one_blas_thread():
    """Run the block with NumPy's OpenBLAS on one thread (a no-op where it cannot be set),
    then give the caller its thread count back.

    A training or evaluation step uses the cores through :func:`parallel_for`; a BLAS call
    big enough for OpenBLAS to use its own threads leaves them spinning on the cores for
    about 0.1 s afterwards, and the band loops that follow then run at half speed
    (measured: a 2-band GEMM loop 2.3 -> 4.4 ms right after one such call, still 4.7 ms
    50 ms later). Inside this block no call wakes them."""
    setter = _POOL.blas()
    if setter is None:
        yield
        return
    old = setter(1)
    try:
        yield
    finally:
        setter(old)


def blas_threads():
    """The thread count NumPy's OpenBLAS uses for a call from this thread now, or None."""
    for lib in _openblas_libs():
        for name in ("openblas_get_num_threads", "scipy_openblas_get_num_threads64_",
                     "scipy_openblas_get_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_int
                return fn()
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

    # One BLAS thread from before the first helper starts until the last one is done: in
    # OpenBLAS's pthreads builds (NumPy's wheels) the "local" setting is process-wide, so
    # setting it any later, or restoring it while helpers still run, would race with them
    # and could leave the caller's BLAS on one thread after we return.
    old = _POOL.blas()(1)
    helpers = []
    try:
        if threads > 1:
            pool = _POOL.get(threads_for(like) - 1)
            helpers = [pool.submit(work) for _ in range(threads - 1)]
        work()
    finally:
        for h in helpers:             # wait for every helper before anyone reads the outputs
            h.exception()
        _POOL.blas()(old)
    for h in helpers:
        h.result()                    # re-raise a helper's error
    return results


def by_channels(fn, out):
    """``out[:, c0:c1] = fn(c0, c1)`` over cache-sized groups of channels (axis 1), on
    all cores for NumPy; a single ``out[...] = fn(0, C)`` where that is all there is.
    Element-wise passes over big activations then run in cache, in parallel."""
    def chunk(c0, c1):
        out[:, c0:c1, ...] = fn(c0, c1)

    c = out.shape[1]
    parallel_for(chunk, row_bands(c, out.size // max(1, c), out), out)
    return out
