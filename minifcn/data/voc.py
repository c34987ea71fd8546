"""Reader for PASCAL VOC segmentation data in the standard VOCdevkit layout.

::

    VOC2012/
      JPEGImages/<id>.jpg                 RGB photographs
      SegmentationClass/<id>.png          palette ("P") PNGs: pixel value = class index,
                                          255 = void (object borders, ambiguous pixels)
      ImageSets/Segmentation/<split>.txt  one id per line (train, val, trainval)
      class_names.txt                     optional: one class name per line, background
                                          first (data sets other than VOC itself)

Labels are read as palette INDICES, never as colours: a VOC label PNG stores the
class id in each pixel and the palette only says how to display it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
IGNORE = 255

_PIL_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


def void_borders(label, width=1):
    """``label`` (H, W) with IGNORE (255) on every pixel that has a pixel of another value
    within ``width`` pixels (its (2 width + 1)^2 neighbourhood): the void band VOC draws
    on both sides of every object outline, about 2 width + 1 pixels wide."""
    label = np.asarray(label)
    h, w = label.shape
    padded = np.pad(label, width, mode="edge")
    edge = np.zeros(label.shape, dtype=bool)
    for dy in range(2 * width + 1):
        for dx in range(2 * width + 1):
            edge |= padded[dy:dy + h, dx:dx + w] != label
    out = label.copy()
    out[edge] = IGNORE
    return out


def find_voc_root(root) -> Path:
    """The folder holding ``JPEGImages``: ``root`` itself, ``root/VOC2012`` or
    ``root/VOCdevkit/VOC2012`` (so both a VOC2012 folder and a VOCdevkit parent work)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise FileNotFoundError(f"{root} is not a VOC data folder: expected {root}/JPEGImages, "
                            f"{root}/VOC2012/JPEGImages or {root}/VOCdevkit/VOC2012/JPEGImages "
                            f"(get VOC with `minifcn download-voc ROOT`)")


def _open(path: Path, what: str) -> Image.Image:
    """Open and decode an image file; errors name the file and what is wrong."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except _PIL_ERRORS as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from exc


def read_image(path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3). Missing file -> FileNotFoundError, unreadable
    or corrupt file -> ValueError; both name the file."""
    return np.asarray(_open(Path(path), "image").convert("RGB"), dtype=np.uint8)


def read_label(path) -> np.ndarray:
    """A label PNG's palette indices as uint8 (H, W). The PNG must be palette-indexed
    ("P", as VOC's) or greyscale ("L"); a colour PNG is refused rather than guessed."""
    im = _open(Path(path), "label")
    if im.mode not in ("P", "L"):
        raise ValueError(f"label {path} has PNG mode {im.mode!r}; expected a palette-indexed "
                         f"('P') PNG whose pixel values are class indices")
    return np.array(im, dtype=np.uint8)


class VOCSegmentation:
    """A VOC-layout segmentation split.

    Parameters
    ----------
    root : VOC2012 folder or a parent of it (see :func:`find_voc_root`).
    split : name of a list in ``ImageSets/Segmentation`` ("train", "val", "trainval").
    limit : keep a reproducible random subset of ``limit`` ids (chosen by ``seed``, kept
        in list order); ``None`` keeps all.
    classes : keep only these class names, remapped to ids 1..k in the given order;
        every other class becomes background 0 and void 255 stays 255.

    ``ds[i]`` is ``(image, label)``: RGB uint8 (H, W, 3) and uint8 (H, W) class ids with
    255 = ignore. ``ds.ids``, ``ds.class_names`` (background first) and ``ds.n_class``
    describe the set.
    """

    def __init__(self, root, split="train", limit=None, classes=None, seed=0):
        self.root = find_voc_root(root)
        self.split = split
        names_file = self.root / "class_names.txt"
        all_names = tuple(_read_lines(names_file)) if names_file.is_file() else VOC_CLASSES
        ids = _read_lines(self.root / "ImageSets" / "Segmentation" / f"{split}.txt")
        if limit is not None:
            if int(limit) < 1:
                raise ValueError(f"limit must be a positive number of images, got {limit}")
            keep = np.random.default_rng(seed).permutation(len(ids))[: int(limit)]
            ids = [ids[i] for i in sorted(keep)]
        self.ids = ids

        # lookup table: stored index -> returned index (255 stays 255)
        self._lut = np.arange(256, dtype=np.uint8)
        if classes is None:
            self.class_names = all_names
        else:
            classes = [classes] if isinstance(classes, str) else list(classes)
            unknown = [c for c in classes if c not in all_names or c == all_names[0]]
            if unknown or len(set(classes)) != len(classes):
                raise ValueError(f"classes must be distinct non-background names from {list(all_names[1:])}, "
                                 f"got {classes}")
            self._lut[: len(all_names)] = 0
            for new, name in enumerate(classes, start=1):
                self._lut[all_names.index(name)] = new
            self.class_names = (all_names[0], *classes)
        self._n_stored = len(all_names)
        self.n_class = len(self.class_names)

    def __len__(self):
        return len(self.ids)

    def image_path(self, i) -> Path:
        return self.root / "JPEGImages" / f"{self.ids[i]}.jpg"

    def label_path(self, i) -> Path:
        return self.root / "SegmentationClass" / f"{self.ids[i]}.png"

    def __getitem__(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images in split {self.split!r}")
        image = read_image(self.image_path(i))
        label = read_label(self.label_path(i))
        if label.shape != image.shape[:2]:
            raise ValueError(f"label {self.label_path(i)} is {label.shape[1]}x{label.shape[0]} (WxH) but "
                             f"image {self.image_path(i)} is {image.shape[1]}x{image.shape[0]}")
        counts = np.bincount(label.ravel(), minlength=256)
        bad = np.flatnonzero(counts[self._n_stored:IGNORE])
        if bad.size:
            raise ValueError(f"label {self.label_path(i)} has values {(bad + self._n_stored).tolist()} outside "
                             f"0..{self._n_stored - 1} (classes) and 255 (void)")
        return image, self._lut[label]

    def __repr__(self):
        return f"VOCSegmentation({str(self.root)!r}, split={self.split!r}, {len(self)} images, {self.n_class} classes)"


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"list file {path} does not exist")
    lines = [s.strip() for s in path.read_text().splitlines()]
    lines = [s for s in lines if s]
    if not lines:
        raise ValueError(f"list file {path} is empty")
    return lines
