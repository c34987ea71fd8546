"""``minifcn selftest``: gradient-check every layer's backward pass on one backend.

Each case runs :func:`minifcn.gradcheck.check_backward` in float64 on a tiny, awkward
shape (odd sizes, stride > 1, padding, dilation, ceil-mode overhang, ignored labels)
and the table shows the worst absolute error per case.
"""
from __future__ import annotations

import functools

import numpy as np

from . import functional as F
from .backend import BACKEND_NAMES, get_backend
from .gradcheck import check_backward


def cases(backend):
    """Yield ``(name, forward, backward, inputs)`` gradient-check cases on ``backend``."""
    B = get_backend(backend)
    rng = np.random.default_rng(0)

    def arr(*shape):
        return B.asarray(rng.standard_normal(shape))

    def distinct(*shape):  # max pooling needs well-separated values for finite differences
        return B.asarray(rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01)

    yield ("conv2d 3x3 s1 p1", functools.partial(F.conv2d, stride=1, padding=1), F.conv2d_backward,
           [arr(2, 3, 5, 6), arr(4, 3, 3, 3), arr(4)])
    yield ("conv2d 3x2 s2 p(1,2) d(1,2)",
           functools.partial(F.conv2d, stride=2, padding=(1, 2), dilation=(1, 2)), F.conv2d_backward,
           [arr(1, 2, 7, 5), arr(3, 2, 3, 2), arr(3)])
    yield ("conv2d 1x1 no bias", F.conv2d, F.conv2d_backward, [arr(2, 3, 3, 4), arr(2, 3, 1, 1), None])
    yield ("conv_transpose2d k4 s2 p1", functools.partial(F.conv_transpose2d, stride=2, padding=1),
           F.conv_transpose2d_backward, [arr(2, 3, 3, 4), arr(3, 2, 4, 4), arr(2)])
    yield ("conv_transpose2d k3 s(3,2) no bias", functools.partial(F.conv_transpose2d, stride=(3, 2)),
           F.conv_transpose2d_backward, [arr(1, 2, 3, 2), arr(2, 3, 3, 3), None])
    yield ("max_pool2d 2x2 s2 ceil", functools.partial(F.max_pool2d, kernel_size=2, stride=2, ceil_mode=True),
           F.max_pool2d_backward, [distinct(2, 2, 5, 7)])
    yield ("max_pool2d 3x3 s2 p1 ceil", functools.partial(F.max_pool2d, kernel_size=3, stride=2, padding=1,
                                                          ceil_mode=True),
           F.max_pool2d_backward, [distinct(1, 2, 6, 5)])
    yield ("crop (1,2) to 3x4", functools.partial(F.crop, offset=(1, 2), size=(3, 4)), F.crop_backward,
           [arr(2, 2, 5, 7)])
    yield ("relu", F.relu, F.relu_backward, [arr(2, 3, 4, 5)])
    mask_rng_seed = 7

    def dropout_fixed(x):
        from .backend import RNG
        return F.dropout(x, 0.5, True, RNG(mask_rng_seed))

    yield ("dropout p=0.5", dropout_fixed, F.dropout_backward, [arr(2, 3, 4, 5)])
    labels = rng.integers(0, 4, (2, 5, 6))
    labels[0, :2] = 255
    lab = B.asarray(labels)
    for normalize in (True, False):
        yield (f"softmax_cross_entropy normalize={normalize}",
               functools.partial(F.softmax_cross_entropy, labels=lab, normalize=normalize),
               lambda dl, c: F.softmax_cross_entropy_backward(c, dl), [arr(2, 4, 5, 6)])


def run(backend="numpy", verbose=True):
    """Run every case; return the list of reports (printing a table when ``verbose``)."""
    reports = []
    if verbose:
        print(f"minifcn selftest on backend {backend!r} (float64 central differences)")
        print(f"{'case':42s} {'checks':>7s} {'max abs err':>12s} {'max rel err':>12s}  result")
    for name, fwd, bwd, inputs in cases(backend):
        r = check_backward(fwd, bwd, inputs, name=name)
        reports.append(r)
        if verbose:
            print(f"{name:42s} {r.checked:7d} {r.max_error:12.2e} {r.max_rel_error:12.2e}  "
                  f"{'ok' if r.ok else 'FAILED'}")
    if verbose:
        failed = sum(not r.ok for r in reports)
        print(f"{len(reports) - failed} passed, {failed} failed")
    return reports


def add_arguments(p):
    p.add_argument("--backend", default="numpy", choices=BACKEND_NAMES,
                   help="array backend to check (default: numpy)")


def main(args) -> int:
    reports = run(args.backend)
    return 0 if all(r.ok for r in reports) else 1
