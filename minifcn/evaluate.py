"""Evaluation and prediction: ``minifcn eval`` and ``minifcn predict``.

Evaluation follows the reference ``score.py``: every image of the split goes through
the network whole (any size), the predictions (argmax over classes) are accumulated
into ONE confusion matrix over the set (ground-truth 255 dropped), and the four metrics
come from that matrix (:mod:`minifcn.metrics`).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .backend import get_backend, to_numpy
from .io import atomic_path, write_json
from .metrics import confusion_matrix, scores

METRICS = ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu")


def predict(model, image, backend=None):
    """Class map (H, W) uint8 of one RGB uint8 image (H, W, 3) of any size.

    The model should be in eval mode; ``backend`` defaults to the model's. One host
    transfer each way.
    """
    from .data.transforms import preprocess

    b = get_backend(backend) if backend is not None else _model_backend(model)
    x = b.asarray(preprocess(image)[None], dtype=np.dtype(str(_model_array(model).dtype).split(".")[-1]))
    scores_ = model.forward(x)
    return to_numpy(b.xp.argmax(scores_[0, ...], axis=0)).astype(np.uint8)


def evaluate(model, dataset, keep=0, progress=True, desc="eval"):
    """The four metrics of ``model`` on ``dataset`` (a sequence of ``(image, label)``).

    Returns ``(result, hist, kept)``: ``result`` the dict of :func:`minifcn.metrics.scores`
    (four metrics and ``per_class_iu``), ``hist`` the (n_class, n_class) confusion matrix
    and ``kept`` the first ``keep`` ``(image, label, prediction)`` triples for pictures.
    Leaves the model in eval mode.
    """
    model.eval()
    n_class = model.n_class
    hist = np.zeros((n_class, n_class), np.int64)
    kept = []
    items = range(len(dataset))
    if progress:
        from .io import progress as bar
        items = bar(items, desc=desc, unit="img", leave=False)
    for i in items:
        image, label = dataset[i]
        pred = predict(model, image)
        hist += confusion_matrix(label.astype(np.int64), pred.astype(np.int64), n_class)
        if len(kept) < keep:
            kept.append((image, label, pred))
    return scores(hist), hist, kept


def _model_array(model):
    """One parameter array of ``model`` (any model: FCN, SegNet, ...), for its backend and dtype."""
    return next(iter(model.named_parameters()))[1].data


def _model_backend(model):
    from .backend import backend_of

    return backend_of(_model_array(model))


def check_model_meta(meta, path):
    """Check ``meta["model"]`` (the config a model is rebuilt from) before building anything:
    a dict whose name is a registered model, n_class a positive integer and width a positive
    number; ValueError naming the file and the entry otherwise."""
    from .io import meta_field
    from .train import MAX_WIDTH, model_names

    config = meta.get("model")
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds no model config (meta['model'] is {type(config).__name__}): not a "
                         f"minifcn model checkpoint (VGG16 ImageNet weights load with --init)")
    name = meta_field(config, "name", str, path, "model config")
    names = model_names()
    if names and name not in names:
        raise ValueError(f"{path}: model config names {name!r}, expected one of {', '.join(names)}")
    n_class = meta_field(config, "n_class", int, path, "model config")
    width = meta_field(config, "width", (int, float), path, "model config")
    if not 1 <= n_class <= 255 or not 0 < width <= MAX_WIDTH:
        raise ValueError(f"{path}: model config has n_class {n_class} (expected 1..255) and width {width} "
                         f"(expected > 0 and <= {MAX_WIDTH})")
    return config


def load_checkpoint_model(path, backend="numpy"):
    """``(model, meta)`` from a checkpoint or saved model, with a clear error for a bad path,
    bad metadata or non-finite weights (:func:`minifcn.io.load_npz` refuses those)."""
    from .io import load_npz
    from .models import load_model

    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path} does not exist")
    _, meta = load_npz(path)
    check_model_meta(meta, path)
    try:
        model = load_model(path, backend=backend)
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"checkpoint {path} cannot be rebuilt: {type(exc).__name__}: {exc}") from None
    return model.eval(), meta


def check_out(out, flag="--out"):
    """An output folder given by the user: not empty, not an existing file."""
    if out is None:
        return None
    if not str(out).strip():
        raise ValueError(f"{flag} is empty: expected a folder name")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"{flag} {out} is an existing file: expected a folder")
    return out


def check_backend(name):
    from .backend import get_backend as _get

    try:
        _get(name)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"--backend {name}: {exc}") from None


def class_names_of(meta, n_class):
    names = meta.get("class_names")
    return list(names) if names and len(names) == n_class else [str(i) for i in range(n_class)]


def open_split(data, split, limit=None):
    """A :class:`VOCSegmentation` split of ``data`` (a VOC folder or "builtin")."""
    from .data import VOCSegmentation
    from .data.synthetic import ensure_dataset

    root = ensure_dataset() if data == "builtin" else data
    return VOCSegmentation(root, split=split, limit=limit)


def write_report(result, kept, class_names, out_dir, extra=None):
    """Write ``metrics.json``, ``per_class_iu.png`` and ``predictions.png`` into ``out_dir``."""
    from .viz import plot_per_class_iu, save_prediction_tiles

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {**{k: result[k] for k in METRICS},
              "per_class_iu": dict(zip(class_names, result["per_class_iu"])), **(extra or {})}
    write_json(out / "metrics.json", record)
    plot_per_class_iu(result["per_class_iu"], class_names, out / "per_class_iu.png")
    if kept:
        save_prediction_tiles([k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept],
                              out / "predictions.png", class_names)
    return record


def format_metrics(result) -> str:
    return "  ".join(f"{k.replace('_', ' ')} {result[k]:.3f}" for k in METRICS)


# ----------------------------------------------------------------------------
# ``minifcn eval``
# ----------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model or training checkpoint (.npz)")
    p.add_argument("--data", default="builtin", help="VOC folder, or 'builtin' (default)")
    p.add_argument("--split", default="val", help="split to evaluate (default %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="evaluate a reproducible subset of this many images")
    p.add_argument("--out", default=None, help="output folder (default: beside the checkpoint, eval-SPLIT)")
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))


def main(args) -> int:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}: expected a positive number of images")
    check_out(args.out)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), f"eval-{args.split}")
    check_out(out)
    check_backend(args.backend)
    try:
        model, meta = load_checkpoint_model(args.checkpoint, args.backend)
        dataset = open_split(args.data, args.split, args.limit)
        if dataset.n_class != model.n_class:
            raise ValueError(f"checkpoint {args.checkpoint} predicts {model.n_class} classes but "
                             f"{args.data} split {args.split!r} has {dataset.n_class} ({', '.join(dataset.class_names)})")
    except (ValueError, FileNotFoundError) as exc:
        print(f"minifcn eval: error: {exc}", file=sys.stderr)
        return 2
    result, _, kept = evaluate(model, dataset, keep=4)
    write_report(result, kept, list(dataset.class_names), out,
                 {"checkpoint": os.path.abspath(args.checkpoint), "split": args.split, "images": len(dataset)})
    print(format_metrics(result))
    print(f"wrote {out}/metrics.json, per_class_iu.png, predictions.png")
    return 0


# ----------------------------------------------------------------------------
# ``minifcn predict``
# ----------------------------------------------------------------------------
def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any size)")
    p.add_argument("--checkpoint", required=True, help="model or training checkpoint (.npz)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))


def output_names(paths) -> list[str]:
    """Output base names (relative to the output folder, without ``.png``) for ``paths``,
    distinct from each other: the file's stem where that is unique; for stems shared by
    several inputs, the path from the inputs' common folder (``a/x``, ``b/x``); where even
    that is shared (``b/x.png``, ``b/x.jpg``), the file name with its suffix (``b/x.jpg``).
    Labels go to ``NAME.png`` and overlays to ``NAME_overlay.png``; the names are chosen so
    that no two of these coincide."""
    paths = [Path(os.path.abspath(p)) for p in paths]
    base = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path(".")

    def rel(p, keep_suffix):
        r = p.relative_to(base)
        return (r.parent / (r.name if keep_suffix else r.stem)).as_posix()

    levels = [lambda p: p.stem, lambda p: rel(p, False), lambda p: rel(p, True)]
    names = [levels[0](p) for p in paths]

    def clashes():
        seen = {}
        for i, n in enumerate(names):
            for out in (n.lower(), n.lower() + "_overlay"):  # case-insensitive file systems too
                seen.setdefault(out, set()).add(i)
        return {i for ids in seen.values() if len(ids) > 1 for i in ids}

    for level in levels[1:]:
        bad = clashes()
        if not bad:
            break
        for i in bad:
            names[i] = level(paths[i])
    bad = clashes()
    if bad:
        i = min(bad)
        raise ValueError(f"cannot name the outputs of {paths[i]} apart from those of another input "
                         f"({names[i]}.png); rename one of them")
    return names


def predict_main(args) -> int:
    """Predict the images one at a time (only one decoded image in memory), never writing
    over an input: every input is checked (exists, has an image header) and every output
    name chosen before the model runs."""
    from PIL import Image

    from .data import read_image
    from .data.voc import _PIL_ERRORS
    from .viz import overlay, save_label_png

    check_out(args.out, "-o/--out")
    check_backend(args.backend)
    model, _ = load_checkpoint_model(args.checkpoint, args.backend)
    paths, seen = [], set()
    for path in args.images:
        real = os.path.realpath(path)
        if real in seen:
            continue  # the same file twice: predicted once
        seen.add(real)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image {path} does not exist")
        try:
            with Image.open(path) as im:  # the header only: nothing decoded yet
                im.size
        except _PIL_ERRORS as exc:
            raise ValueError(f"cannot read image {path}: {exc}") from None
        paths.append(path)
    out = Path(args.out)
    names = output_names(paths)
    targets = [(out / f"{n}.png", out / f"{n}_overlay.png") for n in names]
    for path, pair in zip(paths, targets):
        for t in pair:
            if os.path.realpath(t) in seen:
                raise ValueError(f"-o {args.out} would write {t} over the input image {t}; choose another "
                                 f"output folder")
    failed = 0
    for path, (label_png, overlay_png) in zip(paths, targets):
        try:
            image = read_image(path)
        except (ValueError, OSError) as exc:  # decodes badly although its header was fine
            print(f"minifcn predict: error: {exc}; skipped", file=sys.stderr)
            failed += 1
            continue
        pred = predict(model, image)
        save_label_png(pred, label_png)
        with atomic_path(overlay_png) as tmp:
            Image.fromarray(overlay(image, pred)).save(tmp, format="PNG")
        del image, pred
        print(f"{path}: {label_png} (labels), {overlay_png} (overlay)")
    if failed:
        print(f"minifcn predict: error: {failed} of {len(paths)} images could not be read", file=sys.stderr)
        return 2
    return 0


# the ``predict`` verb's interface for the command table ("minifcn.evaluate:predict_verb")
predict_verb = SimpleNamespace(add_arguments=add_predict_arguments, main=predict_main)
