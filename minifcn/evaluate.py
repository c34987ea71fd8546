"""Evaluation and prediction: ``minifcn eval`` and ``minifcn predict``.

Evaluation follows the reference ``score.py``: every image of the split goes through
the network whole (any size), the predictions (argmax over classes) are accumulated
into ONE confusion matrix over the set (ground-truth 255 dropped), and the four metrics
come from that matrix (:mod:`minifcn.metrics`).

Dense CRF post-processing (``--crf``): the network's scores (C, H, W) become softmax
probabilities, and :func:`minifcn.crf.dense_crf` refines them with the ORIGINAL RGB
uint8 image (the network itself sees the BGR, mean-subtracted copy); the prediction is
the argmax of the CRF's Q. The kernel settings are :data:`CRF_DEFAULTS`, DeepLab's
(Chen et al., "Semantic Image Segmentation with Deep Convolutional Nets and Fully
Connected CRFs", ICLR 2015: w_appearance 4, theta_alpha 121, theta_beta 5, w_smooth 3,
theta_gamma 3, 10 mean-field rounds), except that theta_alpha, a distance in pixels
tuned on 500 x 375 VOC images, is scaled to each image: theta_alpha = 121 * max(H, W) /
500 (121 on a VOC image, 23 to 39 px on the 96 to 160 px built-in images), unless a
value is given (:func:`crf_settings`).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .backend import get_backend, namespace, one_blas_thread, to_numpy
from .io import atomic_path, write_json
from .metrics import confusion_matrix, scores

METRICS = ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu")

# dense CRF settings (keyword arguments of minifcn.crf.dense_crf); theta_alpha None = scaled to the image
CRF_DEFAULTS = dict(iterations=10, w_appearance=4.0, theta_alpha=None, theta_beta=5.0, w_smooth=3.0,
                    theta_gamma=3.0)
CRF_REFERENCE_ALPHA, CRF_REFERENCE_SIZE = 121.0, 500   # DeepLab's theta_alpha, for a 500 px VOC image


def crf_settings(shape, settings=None) -> dict:
    """The :func:`minifcn.crf.dense_crf` keyword arguments for an image of ``shape`` (H, W, ...):
    :data:`CRF_DEFAULTS` updated by ``settings``, with theta_alpha None replaced by
    121 * max(H, W) / 500 (DeepLab's value scaled from a 500 px VOC image to this one)."""
    out = {**CRF_DEFAULTS, **(settings or {})}
    if out["theta_alpha"] is None:
        out["theta_alpha"] = CRF_REFERENCE_ALPHA * max(int(shape[0]), int(shape[1])) / CRF_REFERENCE_SIZE
    return out


def describe_crf(settings=None) -> str:
    """One line naming the CRF settings (theta_alpha "scaled" when it follows the image)."""
    s = {**CRF_DEFAULTS, **(settings or {})}
    alpha = (f"121 * max(H, W) / {CRF_REFERENCE_SIZE}" if s["theta_alpha"] is None else f"{s['theta_alpha']:g}")
    return (f"{s['iterations']} iterations, w_appearance {s['w_appearance']:g}, theta_alpha {alpha}, "
            f"theta_beta {s['theta_beta']:g}, w_smooth {s['w_smooth']:g}, theta_gamma {s['theta_gamma']:g}")


def crf_record(settings=None) -> dict:
    """The CRF settings for a JSON report (theta_alpha "scaled" when it follows the image)."""
    s = {**CRF_DEFAULTS, **(settings or {})}
    if s["theta_alpha"] is None:
        s["theta_alpha"] = f"scaled: {CRF_REFERENCE_ALPHA:g} * max(H, W) / {CRF_REFERENCE_SIZE}"
    return s


def predict_scores(model, image, backend=None):
    """The network's class scores (C, H, W) for one RGB uint8 image (H, W, 3), on the
    model's backend (``backend`` overrides) and in its dtype; the input is preprocessed
    (BGR, mean-subtracted) here. The model should be in eval mode."""
    from .data.transforms import preprocess

    b = get_backend(backend) if backend is not None else _model_backend(model)
    x = b.asarray(preprocess(image)[None], dtype=np.dtype(str(_model_array(model).dtype).split(".")[-1]))
    with one_blas_thread():           # the band loops share the cores (see Trainer.step)
        return model.forward(x)[0, ...]


def crf_refine(scores_, image, settings=None):
    """Class map (H, W) uint8 after the dense CRF: softmax of ``scores_`` (C, H, W) over
    classes -> :func:`minifcn.crf.dense_crf` with the RGB uint8 ``image`` (H, W, 3) and
    :func:`crf_settings` -> argmax of Q."""
    from .crf import dense_crf

    xp = namespace(scores_)
    e = xp.exp(scores_ - xp.max(scores_, axis=0, keepdims=True))
    probs = e / xp.sum(e, axis=0, keepdims=True)
    Q = dense_crf(probs, np.asarray(image), **crf_settings(np.shape(image), settings))
    return to_numpy(xp.argmax(Q, axis=0)).astype(np.uint8)


def predict(model, image, backend=None, crf=None):
    """Class map (H, W) uint8 of one RGB uint8 image (H, W, 3) of any size.

    The model should be in eval mode; ``backend`` defaults to the model's. One host
    transfer each way. ``crf``: None, or a dict of dense CRF settings (``{}`` for
    :data:`CRF_DEFAULTS`): the map is then the CRF's (:func:`crf_refine`).
    """
    scores_ = predict_scores(model, image, backend)
    if crf is not None:
        return crf_refine(scores_, image, crf)
    return to_numpy(namespace(scores_).argmax(scores_, axis=0)).astype(np.uint8)


def evaluate(model, dataset, keep=0, progress=True, desc="eval", crf=None):
    """The four metrics of ``model`` on ``dataset`` (a sequence of ``(image, label)``).

    Returns ``(result, hist, kept)``: ``result`` the dict of :func:`minifcn.metrics.scores`
    (four metrics and ``per_class_iu``), ``hist`` the (n_class, n_class) confusion matrix
    and ``kept`` the first ``keep`` ``(image, label, prediction)`` triples for pictures.
    Leaves the model in eval mode.

    ``crf`` (None, or a dict of dense CRF settings, ``{}`` for :data:`CRF_DEFAULTS`): each
    image's scores are ALSO refined by the dense CRF (:func:`crf_refine`), from the same
    forward pass; ``result["crf"]`` then holds the metrics with the CRF (same keys, plus
    ``hist`` its confusion matrix and ``seconds_per_image`` the mean CRF time), and the
    ``kept`` entries are ``(image, label, prediction, prediction_with_crf)``.
    """
    import time

    model.eval()
    n_class = model.n_class
    hist = np.zeros((n_class, n_class), np.int64)
    hist_crf = np.zeros_like(hist)
    crf_time = 0.0
    kept = []
    items = range(len(dataset))
    if progress:
        from .io import progress as bar
        items = bar(items, desc=desc + (" (+ dense CRF)" if crf is not None else ""), unit="img", leave=False)
    for i in items:
        image, label = dataset[i]
        scores_ = predict_scores(model, image)
        pred = to_numpy(namespace(scores_).argmax(scores_, axis=0)).astype(np.uint8)
        truth = label.astype(np.int64)
        hist += confusion_matrix(truth, pred.astype(np.int64), n_class)
        entry = (image, label, pred)
        if crf is not None:
            t0 = time.perf_counter()
            pred_crf = crf_refine(scores_, image, crf)
            crf_time += time.perf_counter() - t0
            hist_crf += confusion_matrix(truth, pred_crf.astype(np.int64), n_class)
            entry += (pred_crf,)
        if len(kept) < keep:
            kept.append(entry)
    result = scores(hist)
    if crf is not None:
        result["crf"] = {**scores(hist_crf), "hist": hist_crf,
                         "seconds_per_image": crf_time / max(len(dataset), 1)}
    return result, hist, kept


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


def write_report(result, kept, class_names, out_dir, extra=None, crf=None):
    """Write ``metrics.json``, ``per_class_iu.png`` and ``predictions.png`` into ``out_dir``.

    With a CRF result (``result["crf"]``, see :func:`evaluate`) ``metrics.json`` also holds
    ``crf``: the four metrics and per-class IU with the CRF, its settings (``crf``, the
    dict given to :func:`evaluate`) and seconds per image; the tiles get a fourth column,
    prediction + CRF."""
    from .viz import plot_per_class_iu, save_prediction_tiles

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {**{k: result[k] for k in METRICS},
              "per_class_iu": dict(zip(class_names, result["per_class_iu"])), **(extra or {})}
    if "crf" in result:
        r = result["crf"]
        record["crf"] = {**{k: r[k] for k in METRICS}, "per_class_iu": dict(zip(class_names, r["per_class_iu"])),
                         "seconds_per_image": round(r["seconds_per_image"], 4), "settings": crf_record(crf)}
    write_json(out / "metrics.json", record)
    plot_per_class_iu(result["per_class_iu"], class_names, out / "per_class_iu.png")
    if kept:
        with_crf = [k[3] for k in kept] if all(len(k) > 3 for k in kept) else None
        save_prediction_tiles([k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept],
                              out / "predictions.png", class_names, crf_preds=with_crf)
    return record


def format_metrics(result) -> str:
    return "  ".join(f"{k.replace('_', ' ')} {result[k]:.3f}" for k in METRICS)


def format_crf_table(result) -> str:
    """The four metrics without and with the CRF side by side, and the change."""
    heads = ("pixel acc", "mean acc", "mean IU", "f.w. IU")
    rows = [("without CRF", result), ("with CRF", result["crf"])]
    lines = [f"{'':<12}" + "".join(f"{h:>10}" for h in heads)]
    lines += [f"{name:<12}" + "".join(f"{r[k]:>10.3f}" for k in METRICS) for name, r in rows]
    lines.append(f"{'CRF change':<12}" + "".join(f"{result['crf'][k] - result[k]:>+10.3f}" for k in METRICS))
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# ``minifcn eval``
# ----------------------------------------------------------------------------
CRF_FLAGS = {  # option -> (dense_crf argument, type, what it is)
    "--crf-iterations": ("iterations", int, "mean-field rounds"),
    "--crf-w-appearance": ("w_appearance", float, "appearance kernel weight"),
    "--crf-theta-alpha": ("theta_alpha", float, "appearance kernel position scale, pixels"),
    "--crf-theta-beta": ("theta_beta", float, "appearance kernel colour scale, 0..255 RGB"),
    "--crf-w-smooth": ("w_smooth", float, "smoothness kernel weight"),
    "--crf-theta-gamma": ("theta_gamma", float, "smoothness kernel position scale, pixels"),
}


def add_crf_arguments(p: argparse.ArgumentParser) -> None:
    """``--crf`` and the kernel settings (see :data:`CRF_DEFAULTS` and :func:`crf_settings`)."""
    p.add_argument("--crf", action="store_true",
                   help="refine the predictions with the fully connected CRF (minifcn.crf.dense_crf, "
                        "Kraehenbuehl & Koltun 2011, as DeepLab does)")
    for option, (key, kind, what) in CRF_FLAGS.items():
        default = CRF_DEFAULTS[key]
        shown = (f"{CRF_REFERENCE_ALPHA:g} * max(H, W) / {CRF_REFERENCE_SIZE} per image, i.e. DeepLab's "
                 f"{CRF_REFERENCE_ALPHA:g} for a {CRF_REFERENCE_SIZE} px VOC image, scaled to smaller ones"
                 if default is None else f"{default:g}")
        p.add_argument(option, type=kind, default=None, metavar="N" if kind is int else "X",
                       help=f"{what} (default {shown}; needs --crf)")


def crf_from_args(args):
    """The CRF settings the flags ask for (None without ``--crf``), checked before any work:
    iterations an integer >= 0, the other settings positive finite numbers; a CRF flag
    without ``--crf`` is an error too."""
    import math

    given = {option: getattr(args, key_of(option)) for option in CRF_FLAGS}
    if not getattr(args, "crf", False):
        extra = [o for o, v in given.items() if v is not None]
        if extra:
            raise ValueError(f"{extra[0]} {given[extra[0]]}: a CRF setting needs --crf")
        return None
    settings = {}
    for option, value in given.items():
        key, kind, _ = CRF_FLAGS[option]
        if value is None:
            continue
        if kind is int:
            if value < 0:
                raise ValueError(f"{option} {value}: expected an integer >= 0")
        elif not (math.isfinite(value) and value > 0):
            raise ValueError(f"{option} {value}: expected a positive finite number")
        settings[key] = value
    return settings


def key_of(option: str) -> str:
    """argparse's attribute name of ``option`` (``--crf-w-smooth`` -> ``crf_w_smooth``)."""
    return option.lstrip("-").replace("-", "_")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model or training checkpoint (.npz)")
    p.add_argument("--data", default="builtin", help="VOC folder, or 'builtin' (default)")
    p.add_argument("--split", default="val", help="split to evaluate (default %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="evaluate a reproducible subset of this many images")
    p.add_argument("--out", default=None, help="output folder (default: beside the checkpoint, eval-SPLIT)")
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))
    add_crf_arguments(p)


def main(args) -> int:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}: expected a positive number of images")
    crf = crf_from_args(args)
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
    result, _, kept = evaluate(model, dataset, keep=4, crf=crf)
    write_report(result, kept, list(dataset.class_names), out,
                 {"checkpoint": os.path.abspath(args.checkpoint), "split": args.split, "images": len(dataset)},
                 crf=crf)
    if crf is None:
        print(format_metrics(result))
    else:
        print(format_crf_table(result))
        print(f"dense CRF: {describe_crf(crf)}; {result['crf']['seconds_per_image']:.2f} s per image")
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
    add_crf_arguments(p)


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
    name chosen before the model runs. With ``--crf`` the label maps and overlays are the
    dense CRF's (:func:`crf_refine`)."""
    from PIL import Image

    from .data import read_image
    from .data.voc import _PIL_ERRORS
    from .viz import overlay, save_label_png

    crf = crf_from_args(args)
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
        pred = predict(model, image, crf=crf)
        save_label_png(pred, label_png)
        with atomic_path(overlay_png) as tmp:
            Image.fromarray(overlay(image, pred)).save(tmp, format="PNG")
        del image, pred
        print(f"{path}: {label_png} (labels{', dense CRF' if crf is not None else ''}), {overlay_png} (overlay)")
    if failed:
        print(f"minifcn predict: error: {failed} of {len(paths)} images could not be read", file=sys.stderr)
        return 2
    return 0


# the ``predict`` verb's interface for the command table ("minifcn.evaluate:predict_verb")
predict_verb = SimpleNamespace(add_arguments=add_predict_arguments, main=predict_main)
