"""Host-side (NumPy) image transforms: the reference preprocessing, training
augmentation, batching, and tiling of crops into one canvas.

Images are RGB uint8 (H, W, 3) until :func:`preprocess` turns them into the network's
input, BGR minus the mean, float32 (3, H, W) — the reference FCN's Caffe convention.
Labels are integer (H, W) class ids with 255 = ignore. Randomness comes from a
``numpy.random.Generator`` the caller owns, so a seed reproduces every crop and flip.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..backend import to_numpy
from .voc import IGNORE

# Mean pixel of the ILSVRC training set in BGR order, as used by the reference FCN.
MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
_MEAN_RGB_UINT8 = np.round(np.array(MEAN_BGR[::-1])).astype(np.uint8)  # (123, 117, 104): padding colour


def _check_image(image, name="image"):
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3):
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"{name} must be a NumPy RGB array of shape (H, W, 3), got {shape}")


def _check_pair(image, label):
    _check_image(image)
    if not (isinstance(label, np.ndarray) and label.shape == image.shape[:2]):
        shape = getattr(label, "shape", type(label).__name__)
        raise ValueError(f"label must be a NumPy array of shape (H, W) = {image.shape[:2]}, got {shape}")


def _pair(v):
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def preprocess(image) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> network input float32 (3, H, W): x[c] = BGR[c] - MEAN_BGR[c]."""
    _check_image(image)
    x = image[:, :, ::-1].transpose(2, 0, 1) - np.asarray(MEAN_BGR)[:, None, None]  # float64, one rounding
    return np.ascontiguousarray(x, dtype=np.float32)


def deprocess(x) -> np.ndarray:
    """Inverse of :func:`preprocess` for display: float (3, H, W) -> RGB uint8 (H, W, 3)."""
    x = to_numpy(x)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"x must have shape (3, H, W), got {x.shape}")
    bgr = x.transpose(1, 2, 0) + np.asarray(MEAN_BGR)
    return np.ascontiguousarray(np.clip(np.round(bgr[:, :, ::-1]), 0, 255).astype(np.uint8))


def random_flip(image, label, rng, p=0.5):
    """Mirror ``image`` (H, W, 3) and ``label`` (H, W) left-right together with probability ``p``."""
    _check_pair(image, label)
    if rng.random() < p:
        return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(label[:, ::-1])
    return image, label


def resize(image, label, size):
    """Resize to ``size`` = (H, W): the image bilinearly, the label by nearest neighbour
    (class ids must never be averaged)."""
    _check_pair(image, label)
    h, w = _pair(size)
    im = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise ValueError(f"label values must lie in 0..255, got {label.min()}..{label.max()}")
    lab = np.asarray(Image.fromarray(label.astype(np.uint8)).resize((w, h), Image.NEAREST))
    return im, lab.astype(label.dtype)


def pad_to(image, label, size):
    """Pad at the bottom/right to at least ``size`` = (H, W): image with the mean colour
    (0 after :func:`preprocess`), label with 255 (ignored by loss and metrics)."""
    _check_pair(image, label)
    h, w = _pair(size)
    ph, pw = max(h - image.shape[0], 0), max(w - image.shape[1], 0)
    if ph == 0 and pw == 0:
        return image, label
    out_im = np.empty((image.shape[0] + ph, image.shape[1] + pw, 3), np.uint8)
    out_im[...] = _MEAN_RGB_UINT8
    out_im[: image.shape[0], : image.shape[1]] = image
    out_lab = np.full(out_im.shape[:2], IGNORE, dtype=label.dtype)
    out_lab[: label.shape[0], : label.shape[1]] = label
    return out_im, out_lab


def random_crop(image, label, rng, size):
    """A random ``size`` = (H, W) window of the pair, padding first where it is smaller."""
    h, w = _pair(size)
    image, label = pad_to(image, label, (h, w))
    y = int(rng.integers(0, image.shape[0] - h + 1))
    x = int(rng.integers(0, image.shape[1] - w + 1))
    return image[y:y + h, x:x + w], label[y:y + h, x:x + w]


def random_scale_crop(image, label, rng, scale=(0.75, 1.25), crop=None):
    """Rescale by a factor drawn uniformly from ``scale`` (image bilinear, label nearest),
    then, if ``crop`` (int or (H, W)) is given, take a random crop of that size, padding
    with the mean colour / label 255 where the scaled image is smaller."""
    _check_pair(image, label)
    s = float(rng.uniform(scale[0], scale[1]))
    h, w = max(1, round(image.shape[0] * s)), max(1, round(image.shape[1] * s))
    image, label = resize(image, label, (h, w))
    if crop is not None:
        image, label = random_crop(image, label, rng, crop)
    return image, label


def pad_batch(samples):
    """Stack ``(image, label)`` pairs of different sizes into one batch.

    ``image`` is RGB uint8 (H, W, 3) (preprocessed here) or an already preprocessed
    float (3, H, W). Returns ``x`` float32 (N, 3, H, W) and ``labels`` int64 (N, H, W)
    with H, W the largest in the batch; images are padded at the bottom/right with 0
    (the mean colour after preprocessing) and labels with 255.
    """
    if not samples:
        raise ValueError("pad_batch needs at least one (image, label) sample")
    xs = [preprocess(im) if im.dtype == np.uint8 else np.asarray(im, dtype=np.float32) for im, _ in samples]
    for x, (_, lab) in zip(xs, samples):
        if x.ndim != 3 or x.shape[0] != 3 or np.shape(lab) != x.shape[1:]:
            raise ValueError(f"each sample must be an image (H, W, 3) uint8 or (3, H, W) float with a label "
                             f"(H, W); got image {x.shape} and label {np.shape(lab)}")
    h = max(x.shape[1] for x in xs)
    w = max(x.shape[2] for x in xs)
    batch = np.zeros((len(xs), 3, h, w), np.float32)
    labels = np.full((len(xs), h, w), IGNORE, np.int64)
    for i, (x, (_, lab)) in enumerate(zip(xs, samples)):
        batch[i, :, : x.shape[1], : x.shape[2]] = x
        labels[i, : x.shape[1], : x.shape[2]] = lab
    return batch, labels


def tile(samples, grid=(2, 2), crop=128, rng=None):
    """Random crops of several ``(image, label)`` pairs laid out in one canvas.

    The canvas is a ``grid`` = (rows, cols) of cells ``crop`` (int or (H, W)) pixels
    each; sample k goes to cell k in row-major order, as a random crop of at most one
    cell, at a random place inside its cell. Gaps and unused cells are the mean colour
    with label 255, so they cost compute but never loss. Returns RGB uint8
    (rows*H, cols*W, 3) and a label (rows*H, cols*W) of the samples' label dtype.

    Why: the reference network pads its input by 100 pixels, so a 128 px image costs
    almost as much as a 256 px one; four 128 px crops in one 256 px canvas train about
    three times more images per second.
    """
    rows, cols = _pair(grid)
    ch, cw = _pair(crop)
    if not 1 <= len(samples) <= rows * cols:
        raise ValueError(f"tile needs 1..{rows * cols} samples for a {rows}x{cols} grid, got {len(samples)}")
    if rng is None:
        raise ValueError("tile needs rng, a numpy.random.Generator")
    dtype = samples[0][1].dtype
    canvas = np.empty((rows * ch, cols * cw, 3), np.uint8)
    canvas[...] = _MEAN_RGB_UINT8
    labels = np.full(canvas.shape[:2], IGNORE, dtype)
    for k, (image, label) in enumerate(samples):
        _check_pair(image, label)
        h, w = min(ch, image.shape[0]), min(cw, image.shape[1])
        y = int(rng.integers(0, image.shape[0] - h + 1))
        x = int(rng.integers(0, image.shape[1] - w + 1))
        oy = (k // cols) * ch + int(rng.integers(0, ch - h + 1))
        ox = (k % cols) * cw + int(rng.integers(0, cw - w + 1))
        canvas[oy:oy + h, ox:ox + w] = image[y:y + h, x:x + w]
        labels[oy:oy + h, ox:ox + w] = label[y:y + h, x:x + w]
    return canvas, labels
