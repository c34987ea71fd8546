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
    x = b.asarray(preprocess(image)[None], dtype=np.dtype(str(model.score_fr.weight.data.dtype).split(".")[-1]))
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
        from tqdm import tqdm
        items = tqdm(items, desc=desc, unit="img", leave=False)
    for i in items:
        image, label = dataset[i]
        pred = predict(model, image)
        hist += confusion_matrix(label.astype(np.int64), pred.astype(np.int64), n_class)
        if len(kept) < keep:
            kept.append((image, label, pred))
    return scores(hist), hist, kept


def _model_backend(model):
    from .backend import backend_of

    return backend_of(model.score_fr.weight.data)


def load_checkpoint_model(path, backend="numpy"):
    """``(model, meta)`` from a checkpoint or saved model, with a clear error for a bad path."""
    from .io import load_npz
    from .models import load_model

    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path} does not exist")
    model = load_model(path, backend=backend)
    _, meta = load_npz(path)
    return model.eval(), meta


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
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), f"eval-{args.split}")
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


def predict_main(args) -> int:
    from .data import read_image
    from .viz import overlay, save_label_png

    try:
        model, _ = load_checkpoint_model(args.checkpoint, args.backend)
        images = [(path, read_image(path)) for path in args.images]  # all readable before writing any
    except (ValueError, FileNotFoundError) as exc:
        print(f"minifcn predict: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    for path, image in images:
        stem = Path(path).stem
        pred = predict(model, image)
        save_label_png(pred, out / f"{stem}.png")
        with atomic_path(out / f"{stem}_overlay.png") as tmp:
            Image.fromarray(overlay(image, pred)).save(tmp, format="PNG")
        print(f"{path}: {out / (stem + '.png')} (labels), {out / (stem + '_overlay.png')} (overlay)")
    return 0


# the ``predict`` verb's interface for the command table ("minifcn.evaluate:predict_verb")
predict_verb = SimpleNamespace(add_arguments=add_predict_arguments, main=predict_main)
