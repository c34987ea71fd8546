"""The built-in data set: textured shapes on cluttered backgrounds, in VOC format.

Five object classes are told apart by **shape and texture**, never by colour alone:
every class draws its hue from a window of 0.45 of the colour wheel centred on its
own hue, neighbouring windows overlap, and the background and the unlabeled clutter
use every hue.

=========  ==========================================  ======================
class      shape                                       texture
=========  ==========================================  ======================
disk       filled circle, radius 5-30 px               bright centre, shading
ring       annulus 5-8 px thick (a thin part)          flat
bar        rotated bar 5-8 px thick, 24-90 px long     flat
triangle   rotated equilateral triangle                stripes
square     rotated square                              checkerboard
=========  ==========================================  ======================

Images are 96-160 px on each side. About a third of the objects are small
(radius 5-9 px); thin bars and rings and small objects are where FCN-8s's stride-8
skip fusion beats FCN-32s. Labels follow VOC: a palette PNG of class indices with a
255 ("void") band on both sides of every object boundary.

:func:`sample` draws one image in memory (a few ms), so training can see fresh images
every pass; :func:`make_dataset` writes a VOCdevkit tree (``VOC2012/JPEGImages``,
``SegmentationClass``, ``ImageSets/Segmentation``, ``class_names.txt``) that :class:`minifcn.data.VOCSegmentation`
reads like the real thing. Both are deterministic by seed.
"""
from __future__ import annotations

import argparse
import colorsys
import os
import shutil
import sys

import numpy as np
from PIL import Image

from ..viz import voc_palette
from .voc import void_borders

VERSION = 1
CLASS_NAMES = ("background", "disk", "ring", "bar", "triangle", "square")
N_CLASS = len(CLASS_NAMES)
SIZE_RANGE = (96, 160)
HUE_WINDOW = 0.45
DEFAULT_N_TRAIN, DEFAULT_N_VAL = 200, 100


def default_root(seed: int = 0) -> str:
    """Cache folder of the default built-in set (``$MINIFCN_CACHE`` or ``~/.cache/minifcn``)."""
    base = os.environ.get("MINIFCN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "minifcn")
    return os.path.join(base, f"builtin-v{VERSION}-seed{seed}")


# ----------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------
def _smooth_noise(rng, h, w, cells):
    """(h, w) float32 noise in [0, 1], smooth at the scale of ``h / cells`` (bilinear upsampling)."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BILINEAR))


def _colour(rng, hue_centre=None):
    """An RGB colour in [0, 1]^3; its hue within ``HUE_WINDOW`` of ``hue_centre`` (any hue if None)."""
    hue = rng.random() if hue_centre is None else hue_centre + (rng.random() - 0.5) * HUE_WINDOW
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.35, 0.9), rng.uniform(0.35, 0.95)),
                    dtype=np.float32)


def _shape_mask(cls, rng, yy, xx, small):
    """Boolean mask and texture (both (H, W)) of one object of class ``cls``."""
    h, w = yy.shape
    r = rng.uniform(5, 9) if small else rng.uniform(12, 30)
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    theta = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(theta) + dy * np.sin(theta)      # object-aligned coordinates
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    rad = np.hypot(dy, dx)
    name = CLASS_NAMES[cls]
    if name == "disk":
        return rad < r, 1.25 - 0.5 * np.clip(rad / r, 0, 1)
    if name == "ring":
        thick = rng.uniform(5, 8)
        r = max(r, thick + 3)
        return np.abs(rad - r) < thick / 2, np.ones_like(rad)
    if name == "bar":
        thick, length = rng.uniform(5, 8), rng.uniform(24, 90) * (0.5 if small else 1.0)
        return (np.abs(u) < length / 2) & (np.abs(v) < thick / 2), np.ones_like(rad)
    if name == "triangle":
        mask = np.ones_like(rad, dtype=bool)
        for k in range(3):  # inside three half-planes at distance r/2 from the centre
            a = theta + 2 * np.pi * k / 3
            mask &= dx * np.cos(a) + dy * np.sin(a) < r / 2
        return mask, 0.8 + 0.35 * (np.sin(2 * np.pi * u / 5.0) > 0)
    if name == "square":
        s = r * 0.8
        checker = ((np.floor(u / 4) + np.floor(v / 4)) % 2).astype(np.float32)
        return (np.abs(u) < s) & (np.abs(v) < s), 0.75 + 0.45 * checker
    raise ValueError(f"unknown class {cls}")


def sample(rng, size=None, n_objects=(1, 4), clutter=(0, 1), noise=6.0, grain=0.3):
    """Draw one image and its label map.

    rng: a ``numpy.random.Generator``. size: (H, W) or None for a random size in
    ``SIZE_RANGE``. n_objects / clutter: inclusive ranges of labelled objects and of
    unlabeled blotches (irregular shapes in any colour). noise: pixel noise std (0-255);
    grain: contrast of the background's fine texture.
    Returns ``(image, label)``: uint8 (H, W, 3) RGB and uint8 (H, W) in
    {0..5, 255}.
    """
    h, w = size if size is not None else rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, size=2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # the image is built as (3, H, W) colour planes (each operation then runs along whole rows,
    # not along the 3 channels of a pixel) and returned as (H, W, 3)
    # background: two random colours mixed by smooth noise, plus a fine texture
    t = _smooth_noise(rng, h, w, int(rng.integers(2, 6)))
    img = _paint(_colour(rng), t) + _paint(_colour(rng), 1 - t)
    img *= 1 - grain / 2 + grain * _smooth_noise(rng, h, w, int(rng.integers(12, 24)))
    label = np.zeros((h, w), dtype=np.uint8)
    for _ in range(int(rng.integers(clutter[0], clutter[1] + 1))):  # unlabeled blotches
        blob = _smooth_noise(rng, h, w, 6) * np.exp(-((yy - rng.uniform(0, h)) ** 2 + (xx - rng.uniform(0, w)) ** 2)
                                                    / (2 * rng.uniform(8, 20) ** 2))
        img = np.where(blob > 0.35, _paint(_colour(rng), 0.8 + 0.4 * t), img)
    for _ in range(int(rng.integers(n_objects[0], n_objects[1] + 1))):
        cls = int(rng.integers(1, N_CLASS))
        mask, texture = _shape_mask(cls, rng, yy, xx, small=rng.random() < 0.35)
        if not mask.any():
            continue
        hue = (cls - 1) / (N_CLASS - 1)
        colour = _colour(rng, hue)
        img = np.where(mask, _paint(colour, texture), img)
        label[mask] = cls
    img = img * 255.0 + rng.normal(0, noise, size=(h, w, 3)).transpose(2, 0, 1)
    return np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0)), void_borders(label)


def _paint(colour, shade):
    """(3, H, W) colour planes: an RGB ``colour`` (3,) times a ``shade`` (H, W)."""
    return colour[:, None, None] * shade


# ----------------------------------------------------------------------------
# The VOCdevkit tree
# ----------------------------------------------------------------------------
def _split_rng(seed, split, i):
    return np.random.default_rng([seed, {"train": 1, "val": 2}[split], i])


def make_dataset(out_dir, n_train=DEFAULT_N_TRAIN, n_val=DEFAULT_N_VAL, seed=0, progress=True, **sample_kwargs):
    """Write the built-in set as ``out_dir/VOC2012`` and return that path.

    Sample i of a split depends only on (seed, split, i). The tree is built in a
    temporary folder beside ``out_dir`` and moved into place at the end, so an
    interrupted build leaves nothing half-written. An existing ``out_dir/VOC2012``
    raises ValueError.
    """
    if n_train < 1 or n_val < 1:
        raise ValueError(f"n_train and n_val must be >= 1, got {n_train} and {n_val}")
    out_dir = os.path.abspath(out_dir)
    final = os.path.join(out_dir, "VOC2012")
    if os.path.exists(final):
        raise ValueError(f"{final} already exists; remove it or choose another folder")
    from ..io import temporary_folder

    # ".VOC2012-<pid>-<hex>": an ordinary (umask) folder; one left by a killed build is
    # removed here, by the next build in the same folder
    tmp = str(temporary_folder(out_dir, "VOC2012"))
    try:
        for sub in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
            os.makedirs(os.path.join(tmp, sub))
        palette = voc_palette().ravel().tolist()
        jobs = [(split, i) for split, n in (("train", n_train), ("val", n_val)) for i in range(n)]
        if progress:
            from ..io import progress as bar
            jobs = bar(jobs, desc="built-in data set", unit="img", leave=False)
        ids = {"train": [], "val": []}
        for split, i in jobs:
            image, label = sample(_split_rng(seed, split, i), **sample_kwargs)
            name = f"{split}_{i:05d}"
            Image.fromarray(image).save(os.path.join(tmp, "JPEGImages", name + ".jpg"), quality=92)
            png = Image.fromarray(label, mode="P")
            png.putpalette(palette)
            png.save(os.path.join(tmp, "SegmentationClass", name + ".png"))
            ids[split].append(name)
        with open(os.path.join(tmp, "class_names.txt"), "w") as f:
            f.write("\n".join(CLASS_NAMES) + "\n")
        lists = os.path.join(tmp, "ImageSets", "Segmentation")
        for split, names in (("train", ids["train"]), ("val", ids["val"]), ("trainval", ids["train"] + ids["val"])):
            with open(os.path.join(lists, split + ".txt"), "w") as f:
                f.write("\n".join(names) + "\n")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def ensure_dataset(root=None, seed=0, **kwargs):
    """Path of the built-in set's VOC2012 folder under ``root`` (default :func:`default_root`),
    building it first if it is not there yet."""
    root = default_root(seed) if root is None else root
    path = os.path.join(root, "VOC2012")
    if not os.path.isfile(os.path.join(path, "ImageSets", "Segmentation", "trainval.txt")):
        path = make_dataset(root, seed=seed, **kwargs)
    return path


class FreshSamples:
    """An endless stream of new training samples: ``next()`` gives ``(image, label)``.

    Deterministic by seed; ``state()``/``set_state()`` let a resumed run continue the
    same stream.
    """

    def __init__(self, seed=0, **sample_kwargs):
        self.rng = np.random.default_rng([seed, 3])
        self.kwargs = sample_kwargs

    def __next__(self):
        return sample(self.rng, **self.kwargs)

    def __iter__(self):
        return self

    def state(self):
        return self.rng.bit_generator.state

    def set_state(self, state):
        self.rng.bit_generator.state = state


# ----------------------------------------------------------------------------
# ``minifcn make-dataset``
# ----------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="folder to write; the tree goes to OUT/VOC2012")
    p.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN, help="training images (default %(default)s)")
    p.add_argument("--n-val", type=int, default=DEFAULT_N_VAL, help="validation images (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")


def main(args) -> int:
    if not str(args.out).strip():
        raise ValueError("OUT is empty: expected a folder name")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"OUT {args.out} is an existing file: expected a folder")
    try:
        path = make_dataset(args.out, args.n_train, args.n_val, args.seed)
    except ValueError as exc:
        print(f"minifcn make-dataset: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.n_train} train + {args.n_val} val images ({N_CLASS} classes: "
          f"{', '.join(CLASS_NAMES)}) to {path}")
    return 0
