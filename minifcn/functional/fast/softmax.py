"""Softmax cross-entropy band by band of pixel rows: equals :func:`..reference.softmax_logp`
and :func:`..reference.softmax_grad`.

Why faster: the reference makes some ten passes over the whole (N, C, H, W) scores, each
a fresh full-size array (the shifted scores, their exponentials, the one-hot labels,
...). Here a band of rows of one image (C x rows x W values, sized for a core's cache)
goes through all of them while it is in cache, on all cores
(:func:`minifcn.backend.parallel_for`), and only the results are full-size. Every value
is computed by the same operations in the same order as in the reference, so the
results are identical, not just close. :mod:`..loss` takes this plan on NumPy.
"""
from __future__ import annotations

from ...backend import device, namespace, parallel_for, row_bands


def _bands(a):
    n, c, h, w = a.shape
    return [(i,) + r for i in range(n) for r in row_bands(h, c * w, a)]


def softmax_logp(logits, target):
    """prob (N, C, H, W) and logp (N, 1, H, W) of :func:`..reference.softmax_logp`."""
    xp = namespace(logits)
    prob = xp.empty(logits.shape, dtype=logits.dtype, device=device(logits))
    logp = xp.empty(target.shape, dtype=logits.dtype, device=device(logits))

    def band(i, r0, r1):
        scores = logits[i, :, r0:r1, :]                                          # (C, rows, W)
        z = scores - xp.max(scores, axis=0, keepdims=True)
        e = xp.exp(z)
        total = xp.sum(e, axis=0, keepdims=True)
        prob[i, :, r0:r1, :] = e / total
        logp[i, :, r0:r1, :] = xp.take_along_axis(z, target[i, :, r0:r1, :], axis=0) - xp.log(total)

    parallel_for(band, _bands(logits), logits)
    return prob, logp


def softmax_grad(prob, target, scale):
    """(prob - onehot(target)) * scale of :func:`..reference.softmax_grad`, band by band."""
    xp = namespace(prob)
    dx = xp.empty(prob.shape, dtype=prob.dtype, device=device(prob))
    classes = xp.reshape(xp.arange(prob.shape[1], dtype=target.dtype, device=device(prob)), (-1, 1, 1))

    def band(i, r0, r1):
        onehot = xp.astype(target[i, :, r0:r1, :] == classes, prob.dtype)       # (C, rows, W)
        dx[i, :, r0:r1, :] = (prob[i, :, r0:r1, :] - onehot) * scale[i, :, r0:r1, :]

    parallel_for(band, _bands(prob), prob)
    return dx
