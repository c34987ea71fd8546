"""Files written atomically, and checkpoints as .npz files: plain arrays plus JSON
metadata, never pickle.

Every file minifcn writes goes through :func:`atomic_path` (a temporary file in the
same folder, flushed to disk, then ``os.replace``), so a crash leaves either the old
file or the complete new one, never half of one.

Layout of a minifcn .npz (one flat namespace of keys):

====================  ==========================================================
key                   holds
====================  ==========================================================
``conv1_1.weight``    model parameters: every key without a ``/``
``optim/<name>``      optimiser state (e.g. momentum buffers), written by the trainer
``train/<name>``      training state (step counters, ...), written by the trainer
``<section>/<name>``  any other section; model loading ignores keys with a ``/``
``__meta__``          the metadata dict as UTF-8 JSON bytes (a uint8 array)
====================  ==========================================================

``meta["model"]`` is the model's ``config`` (``build(**config)`` rebuilds it); other
meta entries are free for their writers (the trainer stores its state there too).

    >>> save_npz("ckpt.npz", {**model.state_dict(), "optim/fc6.weight": v}, {"model": model.config})
    >>> arrays, meta = load_npz("ckpt.npz")
    >>> model.load_state_dict(model_arrays(arrays))
"""
from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import re
import secrets
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from .backend import to_numpy

META_KEY = "__meta__"
# names np.savez takes as its own arguments: an array stored under one of them would be
# swallowed (``allow_pickle``) or clash with the file argument
_SAVEZ_NAMES = frozenset(n for n in inspect.signature(np.savez).parameters if n not in ("args", "kwds"))

# temporaries of our own naming: ".<name>.<pid>.<12 hex>.tmp" files (atomic_path) and
# ".<name>-<pid>-<12 hex>" folders (temporary_folder)
_TMP_FILE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{12}\.tmp$")
_TMP_DIR = re.compile(r"^\.(?P<name>.+)-(?P<pid>\d+)-[0-9a-f]{12}$")
STALE_SECONDS = 24 * 3600  # a temporary this old is stale even if its pid is alive again (reused)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process
    return True


def clean_stale(folder, name=None) -> list[Path]:
    """Remove the temporaries minifcn left in ``folder`` when it was killed mid-write:
    ``.<name>.<pid>.<hex>.tmp`` files and ``.<name>-<pid>-<hex>`` folders whose process is
    gone (or that are over a day old). Only these names are touched; ``name`` limits the
    clean-up to temporaries of that file or folder. Returns what was removed."""
    import shutil

    folder = Path(folder)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        m = _TMP_FILE.match(e.name) or _TMP_DIR.match(e.name)
        if m is None or (name is not None and m["name"] != name):
            continue
        try:
            old = now - e.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
            if _pid_alive(int(m["pid"])) and not old:
                continue
            if e.is_dir(follow_symlinks=False) and _TMP_DIR.match(e.name):
                shutil.rmtree(e.path)
            elif e.is_file(follow_symlinks=False) and _TMP_FILE.match(e.name):
                os.remove(e.path)
            else:
                continue
        except OSError:
            continue
        removed.append(Path(e.path))
    return removed


def temporary_folder(parent, name) -> Path:
    """Create and return ``parent/.<name>-<pid>-<hex>``, an ordinary (umask) folder that
    :func:`clean_stale` removes once this process is gone; stale ones of the same name
    are removed first. The caller moves it into place (``os.replace``) or removes it."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale(parent, name)
    path = parent / f".{name}-{os.getpid()}-{secrets.token_hex(6)}"
    path.mkdir()
    return path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it is synced and replaces ``path``,
    on error it is removed and ``path`` is left as it was.

        >>> with atomic_path("out/metrics.json") as tmp:
        ...     tmp.write_text(text)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent, path.name)  # what a killed writer of this file left behind
    # A fresh name, not a file made by mkstemp: the writer creates it, so it gets the
    # usual permissions (umask) instead of mkstemp's owner-only 0600.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically (NaN becomes null, as JSON has no NaN)."""
    def clean(o):
        if isinstance(o, float) and o != o:
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(clean(obj), indent=2) + "\n")


def section(arrays: dict, prefix: str) -> dict:
    """The entries under ``prefix/``, with the prefix removed (``section(a, "optim")``)."""
    head = prefix.rstrip("/") + "/"
    return {k[len(head):]: v for k, v in arrays.items() if k.startswith(head)}


def model_arrays(arrays: dict) -> dict:
    """The model parameters of a loaded .npz: every key without a ``/``."""
    return {k: v for k, v in arrays.items() if "/" not in k}


def save_npz(path, arrays: dict, meta: dict | None = None) -> None:
    """Write ``arrays`` ({key: array of any backend}) and ``meta`` (JSON-able) to ``path``.

    Everything is validated and copied to the host first; the file is written to a
    temporary file in the same folder and moved into place with ``os.replace``, so
    ``path`` holds either the old or the complete new file, never a partial one.
    """
    path = os.fspath(path)
    host = {}
    for key, a in arrays.items():
        if not isinstance(key, str) or not key or key == META_KEY:
            raise ValueError(f"array keys must be non-empty strings other than {META_KEY!r}, got {key!r}")
        if key in _SAVEZ_NAMES:
            raise ValueError(f"array key {key!r} is one of np.savez's own argument names "
                             f"({', '.join(sorted(_SAVEZ_NAMES))}) and would be lost; rename it")
        a = np.asarray(to_numpy(a))
        if a.dtype.hasobject:
            raise ValueError(f"array {key!r} has dtype object, which .npz cannot store without pickle")
        host[key] = a
    try:
        text = json.dumps(meta or {}, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta must be JSON-serialisable: {exc}") from None
    host[META_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **host)
        with zipfile.ZipFile(tmp) as z:  # every key arrived (nothing swallowed or merged)
            stored = {n[:-4] if n.endswith(".npy") else n for n in z.namelist()}
        lost = sorted(set(host) - stored)
        if lost:
            raise ValueError(f"cannot write {path}: keys {lost} were not stored by np.savez; rename them")


def load_npz(path, allow_nonfinite=False) -> tuple[dict, dict]:
    """Read a file written by :func:`save_npz` (or any pickle-free .npz) -> ``(arrays, meta)``.

    ``arrays`` are NumPy arrays; ``meta`` is ``{}`` when the file has none (and always a
    dict). Raises FileNotFoundError for a missing file and ValueError for a file that is
    not an .npz, is corrupt, has metadata that is not a JSON object, or (unless
    ``allow_nonfinite``) holds a floating-point array with NaN or inf values: such a
    checkpoint would evaluate silently wrong, so the error names the array.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is a corrupt or unsupported .npz: {exc}") from None
    meta = {}
    if META_KEY in arrays:
        try:
            meta = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} has unreadable metadata: {exc}") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{path} has metadata of the wrong type: expected a JSON object, got "
                             f"{type(meta).__name__}")
    if not allow_nonfinite:
        check_finite(arrays, path)
    return arrays, meta


def check_finite(arrays: dict, path="arrays") -> None:
    """Raise ValueError naming the first floating-point array of ``arrays`` that holds NaN
    or inf (and how many such values it has)."""
    for key, a in arrays.items():
        a = np.asarray(to_numpy(a))
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            bad = a.size - int(np.count_nonzero(np.isfinite(a)))
            raise ValueError(f"{path}: {key} holds {bad} NaN/inf value{'s' if bad != 1 else ''} "
                             f"(of {a.size}); refusing a poisoned checkpoint")


def meta_field(meta, key, kind, path, where="metadata"):
    """``meta[key]`` checked to be of ``kind`` (a type or tuple of types); a one-line
    ValueError naming the file and field otherwise (metadata is read from files users may
    have edited). Missing -> ValueError too."""
    if not isinstance(meta, dict) or key not in meta:
        raise ValueError(f"{path}: {where} has no {key!r} entry")
    value = meta[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ValueError(f"{path}: {where} entry {key!r} should be {names}, got {type(value).__name__} "
                         f"{str(value)[:60]!r}")
    return value


# ----------------------------------------------------------------------------
# Progress on the console
# ----------------------------------------------------------------------------
class LineProgress:
    """A progress report for logs and pipes: one plain line every ``every`` fraction of
    the total or every ``seconds`` (whichever comes first) and one at the end, instead
    of carriage-return frames. The interface is the part of tqdm's minifcn uses."""

    def __init__(self, iterable=None, total=None, desc="", unit="it", initial=0, every=0.1, seconds=60.0,
                 file=None, quiet=False, **_):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.n, self.every, self.seconds = desc, unit, initial, every, seconds
        self.file = file or sys.stderr
        self.start = self.last_time = time.perf_counter()
        self.first, self.last_n, self.postfix, self.closed = initial, initial, "", False
        self.quiet = quiet

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def set_postfix(self, **kwargs):
        self.postfix = " ".join(f"{k}={v}" for k, v in kwargs.items())

    def update(self, n=1):
        self.n += n
        now = time.perf_counter()
        step = self.every * self.total if self.total else math.inf
        if self.n - self.last_n >= max(step, 1) or now - self.last_time >= self.seconds:
            self._line(now)

    def _line(self, now):
        self.last_n, self.last_time = self.n, now
        if self.quiet:
            return
        rate = (self.n - self.first) / max(now - self.start, 1e-9)
        done = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        left = ""
        if self.total and rate > 0 and self.n < self.total:
            left = f", {_duration((self.total - self.n) / rate)} left"
        print(f"{self.desc}: {done} {self.unit}, {rate:.3g} {self.unit}/s, {_duration(now - self.start)} "
              f"elapsed{left}" + (f"  {self.postfix}" if self.postfix else ""), file=self.file, flush=True)

    def close(self):
        if not self.closed:
            self.closed = True
            if self.n != self.last_n or self.n == self.first:
                self._line(time.perf_counter())


def _duration(s):
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def progress(iterable=None, **kwargs):
    """A tqdm bar when stderr is a terminal, else a :class:`LineProgress` (a line every
    10 % or 60 s), so logs and pipes stay short and readable. ``disable=True`` gives a
    silent stand-in. Same keyword arguments as tqdm (``total``, ``desc``, ``unit``, ...)."""
    if kwargs.pop("disable", False):
        return LineProgress(iterable, **{**kwargs, "quiet": True})
    stream = kwargs.get("file") or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        from tqdm import tqdm
        return tqdm(iterable, **kwargs)
    for k in ("dynamic_ncols", "leave", "unit_scale", "unit_divisor", "mininterval"):
        kwargs.pop(k, None)
    return LineProgress(iterable, **kwargs)
