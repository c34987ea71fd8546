"""``minifcn selftest``: gradient-check every op and layer's backward pass on one backend.

Each case runs :func:`minifcn.gradcheck.check_backward` (functional ops) or
:func:`minifcn.gradcheck.check_layer` (layers, w.r.t. the input and every parameter)
in float64 on a tiny, awkward shape (odd sizes, stride > 1, padding, dilation,
ceil-mode overhang, ignored labels), and the table shows the worst errors per case.
"""
from __future__ import annotations

import functools
import time

import numpy as np

from . import functional as F
from .backend import BACKEND_NAMES, RNG, cupy_available, get_backend
from .gradcheck import check_backward, check_layer
from .functional import reference
from .layers import BatchNorm2d, Conv2d, ConvTranspose2d, Crop, Dropout, Interpolate, MaxPool2d, MaxUnpool2d, ReLU


def cases(backend):
    """Yield ``(name, check)`` pairs; ``check()`` runs one gradient check on ``backend``
    and returns its :class:`~minifcn.gradcheck.GradcheckReport`."""
    B = get_backend(backend)
    rng = np.random.default_rng(0)

    def arr(*shape):
        return B.asarray(rng.standard_normal(shape))

    def distinct(*shape):  # max pooling needs well-separated values for finite differences
        return B.asarray(rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01 - 0.5)

    def op(name, forward, backward, inputs):
        return name, functools.partial(check_backward, forward, backward, inputs, name=name)

    def layer(name, lay, x, **kwargs):
        lay.to(B, "float64")
        for p in lay.parameters():      # non-zero values everywhere (biases start at zero)
            p.data = p.data + arr(*p.shape) * 0.1
        return name, functools.partial(check_layer, lay, x, name=name, **kwargs)

    def dropout_fixed_mask(x):
        return F.dropout(x, 0.5, True, RNG(7))

    def loss_backward(dloss, cache):
        return F.softmax_cross_entropy_backward(cache, dloss)

    yield op("conv2d 3x3 s1 p1", functools.partial(F.conv2d, stride=1, padding=1), F.conv2d_backward,
             [arr(2, 3, 5, 6), arr(4, 3, 3, 3), arr(4)])
    yield op("conv2d 3x2 s2 p(1,2) d(1,2)",
             functools.partial(F.conv2d, stride=2, padding=(1, 2), dilation=(1, 2)), F.conv2d_backward,
             [arr(1, 2, 7, 5), arr(3, 2, 3, 2), arr(3)])
    yield op("conv2d 1x1 no bias", F.conv2d, F.conv2d_backward, [arr(2, 3, 3, 4), arr(2, 3, 1, 1), None])
    yield op("conv_transpose2d k4 s2 p1", functools.partial(F.conv_transpose2d, stride=2, padding=1),
             F.conv_transpose2d_backward, [arr(2, 3, 3, 4), arr(3, 2, 4, 4), arr(2)])
    yield op("conv_transpose2d k3 s(3,2) d(1,2) no bias",
             functools.partial(F.conv_transpose2d, stride=(3, 2), dilation=(1, 2)),
             F.conv_transpose2d_backward, [arr(1, 2, 3, 2), arr(2, 3, 3, 3), None])
    yield op("max_pool2d 2x2 s2 ceil", functools.partial(F.max_pool2d, kernel_size=2, stride=2, ceil_mode=True),
             F.max_pool2d_backward, [distinct(2, 2, 5, 7)])
    yield op("max_pool2d 3x3 s2 p1 ceil",
             functools.partial(F.max_pool2d, kernel_size=3, stride=2, padding=1, ceil_mode=True),
             F.max_pool2d_backward, [distinct(1, 2, 6, 5)])
    yield op("crop (1,2) to 3x4", functools.partial(F.crop, offset=(1, 2), size=(3, 4)), F.crop_backward,
             [arr(2, 2, 5, 7)])
    yield op("relu", F.relu, F.relu_backward, [arr(2, 3, 4, 5)])
    yield op("dropout p=0.5", dropout_fixed_mask, F.dropout_backward, [arr(2, 3, 4, 5)])
    labels = rng.integers(0, 4, (2, 5, 6))
    labels[0, :2] = 255
    ignored_image = labels.copy()
    ignored_image[1] = 255
    for normalize in (True, False):
        yield op(f"softmax_cross_entropy normalize={normalize}",
                 functools.partial(F.softmax_cross_entropy, labels=B.asarray(labels), normalize=normalize),
                 loss_backward, [arr(2, 4, 5, 6)])
    yield op("softmax_cross_entropy weighted, 1 image ignored",
             functools.partial(F.softmax_cross_entropy, labels=B.asarray(ignored_image),
                               weight=B.asarray(np.array([0.5, 2.0, 1.0, 1.5]))),
             loss_backward, [arr(2, 4, 5, 6)])
    yield op("reference conv2d 3x3 s2 p1 d(1,2)",
             functools.partial(reference.conv2d, stride=2, padding=1, dilation=(1, 2)), reference.conv2d_backward,
             [arr(1, 2, 6, 7), arr(3, 2, 3, 3), arr(3)])
    yield op("reference conv_transpose2d k4 s2 p1 op1",
             functools.partial(reference.conv_transpose2d, stride=2, padding=1, output_padding=1),
             reference.conv_transpose2d_backward, [arr(1, 2, 3, 3), arr(2, 3, 4, 4), arr(3)])
    yield op("reference max_pool2d 3x3 s2 p1 ceil",
             functools.partial(reference.max_pool2d, kernel_size=3, stride=2, padding=1, ceil_mode=True),
             reference.max_pool2d_backward, [distinct(1, 2, 6, 5)])
    yield op("batch_norm2d (training)", functools.partial(F.batch_norm2d, training=True), F.batch_norm2d_backward,
             [arr(2, 3, 4, 5), arr(3), arr(3)])
    mean, var = arr(3), B.asarray(rng.uniform(0.5, 2.0, 3))
    yield op("batch_norm2d (eval)", functools.partial(F.batch_norm2d, running_mean=mean, running_var=var,
                                                      training=False),
             F.batch_norm2d_backward, [arr(2, 3, 4, 5), arr(3), arr(3)])
    _, indices, _ = F.max_pool2d_with_indices(distinct(2, 2, 5, 7), 2, 2, ceil_mode=True)
    yield op("max_unpool2d to 5x7", functools.partial(F.max_unpool2d, indices=indices, output_size=(5, 7)),
             F.max_unpool2d_backward, [arr(2, 2, 3, 4)])
    for corners in (False, True):
        yield op(f"interpolate_bilinear 4x5 -> 7x3 align_corners={corners}",
                 functools.partial(F.interpolate_bilinear, size=(7, 3), align_corners=corners),
                 F.interpolate_bilinear_backward, [arr(1, 2, 4, 5)])
    yield layer("Conv2d layer 3x3 s2 p1", Conv2d(2, 3, 3, stride=2, padding=1, rng=1), arr(1, 2, 5, 6))
    yield layer("Conv2d layer 3x3 d2 p2 (atrous)", Conv2d(2, 2, 3, padding=2, dilation=2, rng=2), arr(1, 2, 6, 7))
    yield layer("ConvTranspose2d layer k4 s2 bias", ConvTranspose2d(2, 2, 4, stride=2, bias=True), arr(1, 2, 3, 2))
    yield layer("MaxPool2d layer 2x2 ceil", MaxPool2d(2, 2, ceil_mode=True), distinct(1, 2, 5, 5))
    yield layer("BatchNorm2d layer (training)", BatchNorm2d(2), arr(2, 2, 3, 4))
    yield layer("MaxUnpool2d layer 2x2 to 5x7", MaxUnpool2d(2, 2), arr(2, 2, 3, 4),
                forward_kwargs={"indices": indices, "output_size": (5, 7)})
    yield layer("Interpolate layer to 6x9", Interpolate(align_corners=True), arr(1, 2, 3, 4),
                forward_kwargs={"size": (6, 9)})
    yield layer("ReLU layer", ReLU(), arr(1, 2, 3, 4))
    yield layer("Dropout layer (eval)", Dropout(0.5).eval(), arr(1, 2, 3, 4))
    yield layer("Crop layer (2,1) to 3x3", Crop((2, 1)), arr(1, 2, 6, 5), forward_kwargs={"size": (3, 3)})


def run(backend="numpy", verbose=True):
    """Run every case; return the list of reports (printing a table when ``verbose``)."""
    reports = []
    start = time.perf_counter()
    if verbose:
        print(f"minifcn selftest on backend {backend!r} (float64 central differences)")
        print(f"{'case':46s} {'checks':>7s} {'max abs err':>12s} {'max rel err':>12s}  result")
    for name, check in cases(backend):
        r = check()
        reports.append(r)
        if verbose:
            print(f"{name:46s} {r.checked:7d} {r.max_error:12.2e} {r.max_rel_error:12.2e}  "
                  f"{'ok' if r.ok else 'FAILED'}")
    if verbose:
        failed = sum(not r.ok for r in reports)
        print(f"{len(reports) - failed} passed, {failed} failed in {time.perf_counter() - start:.1f} s")
    return reports


def add_arguments(p):
    p.add_argument("--backend", default="numpy", choices=BACKEND_NAMES + ("all",),
                   help="array backend to check; 'all' checks numpy, strict, strict:device1 "
                        "and cupy when a GPU is present (default: numpy)")


def main(args) -> int:
    names = [args.backend]
    if args.backend == "all":
        names = [b for b in BACKEND_NAMES if b != "cupy" or cupy_available()]
    ok = True
    for i, name in enumerate(names):
        if i:
            print()
        ok = all(r.ok for r in run(name)) and ok
    return 0 if ok else 1
