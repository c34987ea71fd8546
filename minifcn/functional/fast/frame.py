"""Constant frames: FCN's padding-100 specialty. Equals :func:`..reference.conv2d`.

The 100-pixel zero padding of conv1_1 leaves, on every trunk activation up to conv3
or conv4, a wide frame where each (n, c) plane holds one value v[n, c] (the response
to zeros, propagated). A stride-1 window that lies wholly in the frame therefore
outputs the same number everywhere:

    y[n, o] = sum_c v[n, c] * sum_{ky, kx} weight[o, c, ky, kx] + bias[o]

Why faster: that value is computed once per channel; only the windows that see the
non-constant core, the thin outer ring (rows/columns that saw zero padding in earlier
layers) or the zero padding are convolved: the core by Winograd F(4x4, 3x3)
(:mod:`.winograd4`) where that pays, else like the ring in bands (:mod:`.bands`). The weight
gradient likewise adds v[n, c] * (dy summed over the frame). Finding the frame reads
the data on the host, so the plan runs on NumPy only (on a GPU it would be a sync).
"""
from __future__ import annotations

from typing import NamedTuple

from ...backend import constant_frame, device, namespace, parallel_for
from . import bands, winograd4
from .bands import backward_bands
from ..im2col import pad2d

# A frame pays when the windows that must be computed cover at most this share of the output.
FRAME_MAX_SHARE = 0.7


class ConvCache(NamedTuple):
    x: object
    weight: object
    has_bias: bool
    stride: tuple
    padding: tuple
    dilation: tuple
    regions: list          # output boxes (r0, r1, c0, c1) computed by convolution
    frame_value: object    # v (N, C_in)


def frame_plan(x, s, p, d, k):
    """Where x (N, C, H, W) is constant outside a box, the output regions to compute.

    Returns ``(regions, v)`` -- v: (N, C) the frame value; regions: output boxes
    (r0, r1, c0, c1) whose windows see x's non-constant core, its outer ring
    (:func:`minifcn.backend.constant_frame`) or the zero padding; the first is the
    core -- or None when there is no frame (on backends other than NumPy the data is
    never inspected), the stride is not 1, or the frame is too thin to pay.
    """
    if s != (1, 1):
        return None
    frame = constant_frame(x)
    if frame is None:
        return None
    (b0, b1, e0, e1), (a, b) = frame
    h, w = x.shape[2:]
    (ph, pw), (rh, rw) = p, (d[0] * (k[0] - 1), d[1] * (k[1] - 1))
    oh, ow = h + 2 * ph - rh, w + 2 * pw - rw
    core = (max(0, b0 + ph - rh), min(oh, b1 + ph), max(0, e0 + pw - rw), min(ow, e1 + pw))
    # output rows/columns whose windows reach the ring or the padding: the first a + P, the last b + P
    top, bottom, left, right = a + ph, oh - b - ph, a + pw, ow - b - pw
    # the core must stay clear of that outer band, so that the regions do not overlap
    if core[0] < top or core[1] > bottom or core[2] < left or core[3] > right or core[0] >= core[1] \
            or core[2] >= core[3]:
        return None
    ring = [(0, top, 0, ow), (bottom, oh, 0, ow), (top, bottom, 0, left), (top, bottom, right, ow)]
    regions = [core] + [r for r in ring if r[0] < r[1] and r[2] < r[3]]
    if sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in regions) > FRAME_MAX_SHARE * oh * ow:
        return None
    return regions, x[:, :, a, a]


def conv2d(x, weight, bias, s, p, d, plan):
    """The frame plan for validated arguments and ``plan = frame_plan(...)``: ``(y, ConvCache)``."""
    xp = namespace(x, weight)
    regions, v = plan
    n, (c_out, _, kh, kw), (h, w) = x.shape[0], weight.shape, x.shape[2:]
    oh, ow = h + 2 * p[0] - d[0] * (kh - 1), w + 2 * p[1] - d[1] * (kw - 1)
    xpad = pad2d(x, p, slot=2)
    const = v @ xp.matrix_transpose(xp.sum(weight, axis=(2, 3)))          # (N, C_out)
    if bias is not None:
        const = const + bias
    y = xp.empty((n, c_out, oh, ow), dtype=x.dtype, device=device(x))
    y[...] = xp.reshape(const, (n, c_out, 1, 1))

    def region(r0, r1, c0, c1):
        sub = xpad[:, :, r0:r1 + d[0] * (kh - 1), c0:c1 + d[1] * (kw - 1)]
        if winograd4.pays(sub, weight.shape, s, (0, 0), d):
            y[:, :, r0:r1, c0:c1] = winograd4.correlate(sub, weight, bias, (r1 - r0, c1 - c0))
        else:
            y[:, :, r0:r1, c0:c1] = bands.correlate(sub, weight, bias, s, d, (r1 - r0, c1 - c0))

    region(*regions[0])                      # the core, in bands on all cores
    parallel_for(region, regions[1:], x)     # the thin ring pieces, one per core
    return y, ConvCache(x, weight, bias is not None, s, p, d, regions, v)


def conv2d_backward(dy, cache, need_dx=True, need_dweight=True):
    """Gradients of the frame plan; equals :func:`..reference.conv2d_backward`."""
    x, weight, has_bias, s, p, d, regions, v = cache
    xp = namespace(dy, weight)
    c_out, c_in, kh, kw = weight.shape
    dy_sum = xp.sum(dy, axis=(2, 3))                                          # (N, C_out)
    dbias = xp.sum(dy_sum, axis=0) if has_bias else None
    dweight = None
    if need_dweight:
        xpad = pad2d(x, p, slot=2)
        dw2 = xp.zeros((c_out, c_in * kh * kw), dtype=dy.dtype, device=device(dy))
        dy_frame = dy_sum

        def region(r0, r1, c0, c1):
            sub = xpad[:, :, r0:r1 + d[0] * (kh - 1), c0:c1 + d[1] * (kw - 1)]
            return backward_bands(sub, dy[:, :, r0:r1, c0:c1], weight, s, d, None)

        shares = [region(*regions[0])] + parallel_for(region, regions[1:], dy)
        for (r0, r1, c0, c1), share in zip(regions, shares):
            dw2 = dw2 + share
            dy_frame = dy_frame - xp.sum(dy[:, :, r0:r1, c0:c1], axis=(2, 3))
        # windows inside the frame all hold v[n, c]: they add v[n, c] * (dy summed over them)
        dweight = xp.reshape(dw2, weight.shape) + xp.reshape(
            xp.matrix_transpose(dy_frame) @ v, (c_out, c_in, 1, 1))
    dx = None
    if need_dx and winograd4.pays(x, weight.shape, s, p, d):        # dx has no frame to exploit
        dx = winograd4.input_gradient(dy, weight, p, x.shape[2:])
    elif need_dx:
        dx = bands.input_gradient(dy, weight, s, p, d, x.shape[2:])
    return dx, dweight, dbias
