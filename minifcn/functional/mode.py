"""Which implementation the ops run: the fast paths (default) or the reference path.

``MINIFCN_REFERENCE=1`` in the environment, or the :func:`use_reference` context
manager, makes conv2d, conv_transpose2d and max_pool2d (and everything built on them)
run the plain functions of :mod:`minifcn.functional.reference`. Both paths compute
the same numbers (to rounding); the reference is what to read, the fast path is what
to run. A backward pass always follows the path its forward took (the cache says which).
"""
from __future__ import annotations

import contextlib
import os

_reference = os.environ.get("MINIFCN_REFERENCE", "").strip() not in ("", "0")


def reference_enabled() -> bool:
    """True when the ops run on the reference path."""
    return _reference


@contextlib.contextmanager
def use_reference(enabled: bool = True):
    """``with use_reference(): ...`` runs the ops inside on the reference path (or, with
    ``enabled=False``, on the fast paths), then restores the previous setting. The
    setting is process-wide, not per thread."""
    global _reference
    previous, _reference = _reference, bool(enabled)
    try:
        yield
    finally:
        _reference = previous
