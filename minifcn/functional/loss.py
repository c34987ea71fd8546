"""Pixelwise softmax cross-entropy with an ignore label.

logits: (N, C, H, W) float; labels: (N, H, W) integer in [0, C) or ``ignore_index``.

    logp[n, :, i, j] = logits[n, :, i, j] - logsumexp_c(logits[n, c, i, j])
    loss = -sum over valid pixels of w[label] * logp[label] / Z

with Z = sum of w[label] over valid pixels (``normalize=True``, the mean; plain count
when no class weights) or Z = N (``normalize=False``: Caffe's "unnormalized" loss, a
sum over pixels divided by the batch size). An image batch with no valid pixel gives
loss 0 and zero gradient, never NaN.

    dloss/dlogits = w[label] * (softmax - onehot(label)) / Z     (0 on ignored pixels)
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import device, is_numpy, namespace, to_numpy
from . import reference
from .checks import check_float, check_ndim
from .fast import softmax
from .mode import reference_enabled


class LossCache(NamedTuple):
    prob: object           # softmax (N, C, H, W)
    target: object         # labels with ignored pixels set to class 0, (N, 1, H, W)
    pixel_weight: object   # (N, H, W): class weight of the label, 0 where ignored
    denom: object          # the normaliser Z (0-d)


def _check_labels(logits, labels, ignore_index):
    xp = namespace(logits)
    check_ndim(labels, 3, "labels", "(N, H, W)")
    n, c, h, w = logits.shape
    if tuple(labels.shape) != (n, h, w):
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match logits shape {tuple(logits.shape)}: "
                         f"expected labels of shape (N, H, W) = ({n}, {h}, {w})")
    if not xp.isdtype(labels.dtype, "integral"):
        raise ValueError(f"labels must be an integer array, got dtype {labels.dtype}")
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= c))
    if bool(xp.any(bad)):  # one host sync per call; the error path may copy to the host
        values = sorted(set(to_numpy(labels)[to_numpy(bad)].tolist()))[:10]
        raise ValueError(f"labels must lie in [0, {c}) or equal ignore_index={ignore_index}; "
                         f"found {values}")


def softmax_cross_entropy(logits, labels, ignore_index=255, normalize=True, weight=None):
    """Mean (or Caffe-unnormalized) pixelwise cross-entropy; see the module docstring.

    ``weight``: optional per-class weights (C,). Returns ``(loss, cache)``; ``loss`` is a
    0-d array (no host sync), ``cache`` holds the softmax (N, C, H, W), the labels with
    ignored pixels set to class 0 (N, 1, H, W), the pixel weights (N, H, W) and the
    normaliser.
    """
    check_ndim(logits, 4, "logits", "(N, C, H, W)")
    check_float(logits, "logits")
    _check_labels(logits, labels, ignore_index)
    xp = namespace(logits)
    dev = device(logits)
    n, c, h, w = logits.shape
    if weight is not None:
        if tuple(weight.shape) != (c,):
            raise ValueError(f"class weight must have shape ({c},), got {tuple(weight.shape)}")
        weight = xp.astype(weight, logits.dtype)  # float64 weights must not promote a float32 loss
        if not bool(xp.all(xp.isfinite(weight) & (weight >= 0))):     # one host sync (C values)
            raise ValueError(f"class weights must be finite and >= 0, got {to_numpy(weight).tolist()}")
    valid = labels != ignore_index
    # ignored pixels point at class 0 before any gather (a GPU would wrap 255 silently)
    target = xp.where(valid, labels, xp.zeros((), dtype=labels.dtype, device=dev))   # (N, H, W)
    zero = xp.zeros((), dtype=logits.dtype, device=dev)
    pixel_w = xp.astype(valid, logits.dtype)                                   # (N, H, W)
    if weight is not None:
        pixel_w = pixel_w * xp.reshape(xp.take(weight, xp.reshape(target, (-1,))), (n, h, w))
    target = xp.expand_dims(target, axis=1)                                    # (N, 1, H, W)
    plan = softmax if _fast(logits) else reference
    prob, logp_label = plan.softmax_logp(logits, target)                       # (N, C, H, W), (N, 1, H, W)
    # select, not multiply: an ignored pixel's -inf must not turn 0 * -inf into NaN
    logp_label = xp.where(xp.expand_dims(valid, axis=1), logp_label, zero)[:, 0, ...]
    if normalize:
        denom = xp.sum(pixel_w)
        denom = xp.where(denom > 0, denom, xp.ones((), dtype=logits.dtype, device=dev))
    else:
        denom = xp.asarray(float(n), dtype=logits.dtype, device=dev)
    loss = -xp.sum(pixel_w * logp_label) / denom
    return loss, LossCache(prob, target, pixel_w, denom)


def softmax_cross_entropy_backward(cache, dloss=1.0):
    """Gradient of :func:`softmax_cross_entropy` w.r.t. the logits, scaled by ``dloss``."""
    prob, target, pixel_w, denom = cache
    if not isinstance(cache, LossCache):
        raise ValueError(f"softmax_cross_entropy_backward got a {type(cache).__name__}, not its cache")
    xp = namespace(prob)
    scale = xp.expand_dims(pixel_w, axis=1) / denom * dloss                  # (N, 1, H, W)
    return (softmax if _fast(prob) else reference).softmax_grad(prob, target, scale)


def _fast(x):
    """The banded plan (:mod:`.fast.softmax`) on NumPy, off the reference path."""
    return is_numpy(x) and not reference_enabled()
