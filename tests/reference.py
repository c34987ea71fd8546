"""Naive references for the tests: plain Python loops over output pixels, written
from the definitions, sharing no code with minifcn.

Every function takes and returns float64 NumPy arrays. They are slow on purpose:
use them on inputs of a few hundred elements.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from minifcn.backend import to_numpy


def _pair(v):
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """y[n, o, i, j] = b[o] + sum_{c, ky, kx} x[n, c, i*S - P + ky*D, j*S - P + kx*D] * w[o, c, ky, kx],
    with x read as zero outside the image. The output keeps every (i, j) whose
    dilated window fits inside the zero-padded input."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    n, c, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    oh = sum(1 for i in range(h + 2 * ph) if i * sh + dh * (kh - 1) < h + 2 * ph)
    ow = sum(1 for j in range(w + 2 * pw) if j * sw + dw * (kw - 1) < w + 2 * pw)
    y = np.zeros((n, c_out, oh, ow))
    for b, o, i, j in itertools.product(range(n), range(c_out), range(oh), range(ow)):
        total = 0.0 if bias is None else float(bias[o])
        for ci, ky, kx in itertools.product(range(c), range(kh), range(kw)):
            r, s = i * sh - ph + ky * dh, j * sw - pw + kx * dw
            if 0 <= r < h and 0 <= s < w:
                total += x[b, ci, r, s] * weight[o, ci, ky, kx]
        y[b, o, i, j] = total
    return y


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """The scatter definition: input pixel (i, j) adds x[n, c, i, j] * w[c, o] into the
    output at rows i*S + ky*D, columns j*S + kx*D of the uncropped output; then P rows
    and columns are cut from every side."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    n, c, h, w = x.shape
    _, c_out, kh, kw = weight.shape
    full = np.zeros((n, c_out, (h - 1) * sh + dh * (kh - 1) + 1, (w - 1) * sw + dw * (kw - 1) + 1))
    for b, ci, i, j in itertools.product(range(n), range(c), range(h), range(w)):
        for o, ky, kx in itertools.product(range(c_out), range(kh), range(kw)):
            full[b, o, i * sh + ky * dh, j * sw + kx * dw] += x[b, ci, i, j] * weight[ci, o, ky, kx]
    y = full[:, :, ph:full.shape[2] - ph, pw:full.shape[3] - pw]
    if bias is not None:
        y = y + np.asarray(bias).reshape(1, -1, 1, 1)
    return y


def pool_windows(size, kernel, stride, padding, ceil_mode):
    """Start rows (in input coordinates, may be negative) of the pooling windows along one axis.

    In padded coordinates the last window that fits starts at L = size + 2*padding - kernel.
    Floor mode keeps the starts o*stride <= L. Ceil mode keeps the starts o*stride < L + stride
    (one more window hanging over the far edge), but only those that begin inside the
    input or its near padding (Caffe and PyTorch)."""
    last = size + 2 * padding - kernel
    starts = []
    for o in itertools.count():
        keep = o * stride < last + stride and o * stride - padding < size if ceil_mode else o * stride <= last
        if not keep:
            return starts
        starts.append(o * stride - padding)


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """Max over the in-image part of every window (padding never wins). Returns
    ``(y, winners)``; winners[n, c, i, j] = (row, col) of the first maximum in row-major order."""
    (kh, kw) = _pair(kernel_size)
    (sh, sw) = _pair(kernel_size if stride is None else stride)
    (ph, pw) = _pair(padding)
    n, c, h, w = x.shape
    rows = pool_windows(h, kh, sh, ph, ceil_mode)
    cols = pool_windows(w, kw, sw, pw, ceil_mode)
    y = np.zeros((n, c, len(rows), len(cols)))
    winners = {}
    for b, ch, (i, r0), (j, c0) in itertools.product(range(n), range(c), enumerate(rows), enumerate(cols)):
        best, at = -math.inf, None
        for r, s in itertools.product(range(r0, r0 + kh), range(c0, c0 + kw)):
            if 0 <= r < h and 0 <= s < w and x[b, ch, r, s] > best:
                best, at = x[b, ch, r, s], (r, s)
        y[b, ch, i, j] = best
        winners[b, ch, i, j] = at
    return y, winners


def max_pool2d_backward(dy, x_shape, winners):
    """dx: each dy[n, c, i, j] added at its window's winner."""
    dx = np.zeros(x_shape)
    for (b, ch, i, j), (r, s) in winners.items():
        dx[b, ch, r, s] += dy[b, ch, i, j]
    return dx


def crop(x, offset, size):
    oy, ox = _pair(offset)
    h, w = _pair(size)
    y = np.zeros(x.shape[:2] + (h, w))
    for i, j in itertools.product(range(h), range(w)):
        y[:, :, i, j] = x[:, :, oy + i, ox + j]
    return y


def softmax_cross_entropy(logits, labels, ignore_index=255, normalize=True, weight=None):
    """Loss and d loss / d logits, pixel by pixel with Python floats.

    loss = sum over valid pixels of -w[t] log softmax(z)[t], divided by the summed
    weights of the valid pixels (normalize) or by N (not), and 0 when nothing is valid."""
    n, c, h, w = logits.shape
    weight = np.ones(c) if weight is None else np.asarray(weight, dtype=float)
    total, wsum = 0.0, 0.0
    grad = np.zeros(logits.shape)
    for b, i, j in itertools.product(range(n), range(h), range(w)):
        t = int(labels[b, i, j])
        if t == ignore_index:
            continue
        z = [float(logits[b, k, i, j]) for k in range(c)]
        m = max(z)
        lse = m + math.log(sum(math.exp(v - m) for v in z))
        total += -weight[t] * (z[t] - lse)
        wsum += weight[t]
        for k in range(c):
            grad[b, k, i, j] = weight[t] * (math.exp(z[k] - lse) - (k == t))
    denom = (wsum if wsum > 0 else 1.0) if normalize else float(n)
    return total / denom, grad / denom


def assert_close(actual, expected, atol=1e-12, rtol=1e-12):
    """``actual`` (any backend) equals ``expected`` (NumPy) in shape and value."""
    a = to_numpy(actual)
    assert a.shape == np.shape(expected), f"shape {a.shape} != expected {np.shape(expected)}"
    np.testing.assert_allclose(a, expected, atol=atol, rtol=rtol)
