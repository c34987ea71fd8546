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
import json
import os
import secrets
import zipfile
from pathlib import Path

import numpy as np

from .backend import to_numpy

META_KEY = "__meta__"


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it is synced and replaces ``path``,
    on error it is removed and ``path`` is left as it was.

        >>> with atomic_path("out/metrics.json") as tmp:
        ...     tmp.write_text(text)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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


def load_npz(path) -> tuple[dict, dict]:
    """Read a file written by :func:`save_npz` (or any pickle-free .npz) -> ``(arrays, meta)``.

    ``arrays`` are NumPy arrays; ``meta`` is ``{}`` when the file has none. Raises
    FileNotFoundError for a missing file and ValueError for a file that is not an .npz
    or is corrupt.
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
    return arrays, meta
