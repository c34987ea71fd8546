"""Pictures: the VOC colour map, label PNGs, overlays, training curves, prediction
tiles and per-class IU bars. Every file is written atomically (temporary file in the
same folder, then ``os.replace``), so a crash never leaves half a picture.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from .backend import to_numpy
from .io import atomic_path

METRIC_NAMES = ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu")


def voc_palette(n=256) -> np.ndarray:
    """The VOC colour map, (n, 3) uint8: the bits of index i are dealt round-robin to
    R, G, B from the most significant bit down (0 black, 1 dark red, ..., 255 cream)."""
    palette = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, rgb = i, [0, 0, 0]
        for bit in range(7, -1, -1):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << bit
            c >>= 3
        palette[i] = rgb
    return palette


_PALETTE = voc_palette()


def _as_label(label, name="label") -> np.ndarray:
    label = to_numpy(label)
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"{name} must be an integer (H, W) array of class ids, got {label.dtype} {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"{name} values must lie in 0..255, got {label.min()}..{label.max()}")
    return label.astype(np.uint8)


def colorize(label) -> np.ndarray:
    """Class ids (H, W) -> RGB uint8 (H, W, 3) in the VOC colours (255, void, is cream)."""
    return _PALETTE[_as_label(label)]


def save_label_png(label, path) -> Path:
    """Write class ids (H, W) as a palette ("P") PNG, as VOC does, so tools read the
    indices back and viewers show the colours."""
    im = Image.fromarray(_as_label(label), mode="P")
    im.putpalette(_PALETTE.ravel().tolist())
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return Path(path)


def overlay(image, label, alpha=0.5) -> np.ndarray:
    """Blend the label colours into RGB uint8 ``image`` (H, W, 3) with weight ``alpha``
    wherever the label is not background (0); background pixels keep the image."""
    image = np.asarray(image)
    label = _as_label(label)
    if image.shape != (*label.shape, 3):
        raise ValueError(f"image must have shape (H, W, 3) = {(*label.shape, 3)}, got {image.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    blend = (1.0 - alpha) * image + alpha * _PALETTE[label].astype(np.float64)
    out = np.where((label != 0)[..., None], np.round(blend), image)
    return out.astype(np.uint8)


def figure(*args, **kwargs):
    """A matplotlib Figure with constrained layout, made without pyplot (works under any MPLBACKEND)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI window

    return Figure(*args, layout="constrained", **kwargs)


def figure_grid(shapes, ncols, panel_width=3.0, top=0.3, bottom=0.0, dpi=100):
    """``(fig, axes)``: one row per image of ``shapes`` ((H, W) each) and ``ncols`` panels
    per row, each panel ``panel_width`` inches wide; every row is exactly as tall as its
    images at that width (height ratios H / W), plus ``top`` inches for titles and
    ``bottom`` for a legend, so no row has empty bands above or below its pictures."""
    aspects = [max(int(h), 1) / max(int(w), 1) for h, w in shapes]
    if not aspects or ncols < 1:
        raise ValueError(f"figure_grid needs at least one image and one column, got {len(aspects)} and {ncols}")
    fig = figure(figsize=(panel_width * ncols, panel_width * sum(aspects) + top + bottom), dpi=dpi)
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.0, hspace=0.0)
    axes = fig.subplots(len(aspects), ncols, squeeze=False, gridspec_kw={"height_ratios": aspects})
    return fig, axes


def save_figure(fig, path) -> Path:
    """Write ``fig`` as a PNG at its own dpi, atomically; returns the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi, bbox_inches="tight")
    return Path(path)


def plot_curves(records, path) -> Path:
    """Training curves from log rows (dicts, as in a JSON-lines training log).

    Rows with ``loss`` give the loss (and ``lr``, if present, on a second axis) vs
    ``iteration``; rows with metrics (the four metric names, optionally prefixed
    e.g. ``val_mean_iu``) give a second panel of metrics vs ``iteration``.
    """
    records = list(records)
    if not records:
        raise ValueError("plot_curves needs at least one record")
    metric_keys = sorted({k for r in records for k in r if k != "iteration"
                          and any(k.endswith(m) for m in METRIC_NAMES) and _is_number(r[k])})
    fig = figure(figsize=(11 if metric_keys else 6, 4), dpi=100)
    axes = fig.subplots(1, 2 if metric_keys else 1, squeeze=False)[0]
    ax = axes[0]
    rows = [r for r in records if _is_number(r.get("loss")) and "iteration" in r]
    ax.plot([r["iteration"] for r in rows], [r["loss"] for r in rows], color="C0", lw=1, label="loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss", color="C0")
    ax.set_title("training loss")
    lr_rows = [r for r in rows if _is_number(r.get("lr"))]
    if lr_rows:
        ax2 = ax.twinx()
        ax2.plot([r["iteration"] for r in lr_rows], [r["lr"] for r in lr_rows], color="C1", lw=1, ls="--")
        ax2.set_ylabel("learning rate", color="C1")
    if metric_keys:
        ax = axes[1]
        for k in metric_keys:
            pts = [(r["iteration"], r[k]) for r in records if _is_number(r.get(k)) and "iteration" in r]
            ax.plot(*zip(*pts), marker="o", ms=3, label=k.replace("_", " "))
        ax.set_xlabel("iteration")
        ax.set_ylim(0, 1)
        ax.set_title("validation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v)


def save_prediction_tiles(images, labels, preds, path, class_names, crf_preds=None) -> Path:
    """One row per sample: image | ground truth | prediction (| prediction + CRF), in VOC
    colours, with a legend of the classes that appear. ``images`` RGB uint8 (H, W, 3);
    ``labels`` and ``preds`` (H, W) class ids (``labels`` may be ``None`` when there is no
    truth); ``crf_preds`` None or the (H, W) class ids after the dense CRF, one per image,
    drawn in a fourth column. Each row is as tall as its image at the panel width
    (:func:`figure_grid`): no empty bands."""
    images = list(images)
    preds = list(preds)
    labels = [None] * len(images) if labels is None else list(labels)
    crf_preds = None if crf_preds is None else list(crf_preds)
    if not images or not len(images) == len(labels) == len(preds) or \
            crf_preds is not None and len(crf_preds) != len(images):
        raise ValueError(f"need the same positive number of images, labels and preds"
                         f"{' and crf_preds' if crf_preds is not None else ''}, got "
                         f"{len(images)}, {len(labels)}, {len(preds)}"
                         f"{'' if crf_preds is None else f', {len(crf_preds)}'}")
    ncols = 3 if crf_preds is None else 4
    fig, axes = figure_grid([np.shape(im)[:2] for im in images], ncols, panel_width=3.0, bottom=0.6)
    present = set()
    for i, (im, lab, pred) in enumerate(zip(images, labels, preds)):
        panels = [("image", np.asarray(im)), ("ground truth", None if lab is None else colorize(lab)),
                  ("prediction", colorize(pred))]
        shown = [pred]
        if crf_preds is not None:
            panels.append(("prediction + CRF", colorize(crf_preds[i])))
            shown.append(crf_preds[i])
        if lab is not None:
            shown.append(lab)
        for m in shown:
            present.update(np.unique(_as_label(m)).tolist())
        for ax, (title, picture) in zip(axes[i], panels):
            ax.axis("off")
            if picture is not None:
                ax.imshow(picture, interpolation="nearest")
            if i == 0:
                ax.set_title(title)
    class_legend(fig, present, class_names)
    return save_figure(fig, path)


def class_legend(fig, ids, class_names):
    """A legend below ``fig`` of the classes ``ids`` (255 = void) in their VOC colours;
    the figure needs room at the bottom (``figure_grid(..., bottom=0.6)``)."""
    handles = _legend_handles(sorted(ids), class_names)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8,
               frameon=False)


def _legend_handles(ids, class_names):
    from matplotlib.patches import Patch

    def name(i):
        if i == 255:
            return "void"
        return class_names[i] if i < len(class_names) else str(i)

    return [Patch(facecolor=_PALETTE[i] / 255.0, edgecolor="grey", label=name(i)) for i in ids]


def plot_per_class_iu(per_class_iu, class_names, path) -> Path:
    """Bar chart of IU per class in the VOC colours; classes with nan IU (absent from
    truth and prediction) are marked "n/a" and the mean IU is a dashed line."""
    iu = np.asarray(per_class_iu, dtype=np.float64)
    if iu.ndim != 1 or len(class_names) != iu.size:
        raise ValueError(f"per_class_iu ({iu.size} values) and class_names ({len(class_names)}) must match")
    fig = figure(figsize=(max(4.0, 0.45 * iu.size + 1.5), 3.5), dpi=100)
    ax = fig.subplots()
    x = np.arange(iu.size)
    ax.bar(x, np.nan_to_num(iu), color=_PALETTE[: iu.size] / 255.0, edgecolor="grey")
    for i in np.flatnonzero(np.isnan(iu)):
        ax.text(i, 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
    if np.any(~np.isnan(iu)):
        mean = np.nanmean(iu)
        ax.axhline(mean, color="k", ls="--", lw=1, label=f"mean IU {mean:.3f}")
        ax.legend(fontsize=8)
    ax.set_xticks(x, list(class_names), rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("IU")
    ax.set_title("per-class intersection over union")
    return save_figure(fig, path)
