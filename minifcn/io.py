"""Checkpoints as .npz files: plain arrays plus JSON metadata, never pickle, written atomically.

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

import json
import os
import tempfile
import zipfile

import numpy as np

from .backend import to_numpy

META_KEY = "__meta__"


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
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **host)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
