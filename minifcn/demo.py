"""``minifcn demo``: the whole job in one command.

1. build the built-in data set (cached in ``~/.cache/minifcn``; see
   :mod:`minifcn.data.synthetic`),
2. train a small same-padding FCN-8s from scratch on fresh images for a fixed, seeded
   number of iterations (:data:`DEFAULT_ITERS`), so the same command gives the same metrics
   under any load and with any core count (a CPU of another make may round its matrix
   products differently, and over 1400 steps that moves the metrics); ``--seconds S`` instead
   fits the iteration count to a time budget (timed first, so it depends on the machine),
3. evaluate on the built-in val split and write ``OUT/metrics.json`` (four metrics and
   per-class IU), ``OUT/curves.png``, ``OUT/predictions.png`` and ``OUT/per_class_iu.png``.

``--compare`` trains every architecture of the story (:data:`STORY`: FCN-32s, -16s, -8s,
SegNet, DeepLab-LargeFOV, DeepLab-ASPP, the dilation context model; those in
``minifcn.models.MODELS``, or the ``--models`` given) with the same recipe for the same
iterations (or seconds; the FCNs with the same-padding trunk, or with ``--paper-trunk`` the
paper's 100-pixel margin), evaluates each on the val split without and with the dense CRF
(:func:`minifcn.evaluate.evaluate` with ``crf``; theta_alpha scaled to each image), and
writes ``OUT/compare.json`` (per model: the four metrics, per-class IU, the thin classes'
IU, parameters, iterations, seconds, and the same under ``crf``), ``OUT/compare.md`` (the
table) and ``OUT/compare.png`` (image | truth | each model). ``--quick`` is a
seconds-long smoke run on a tiny data set (used by the tests).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np

from .evaluate import METRICS, crf_record, describe_crf, evaluate, format_metrics, predict, write_report
from .io import _duration, write_json
from .models import takes_same_padding
from .train import TrainConfig, Trainer, iterations_for, model_names

# The recipe: width 1/8 (in fixed time it beats 1/4: more steps), 3x3 tiles of crops up
# to 128 px in one 384 px canvas, SGD momentum 0.9 at lr 0.01 with a 50-step warm-up and
# poly decay, class weights freq ** -0.5, frozen bilinear upsampling, fresh images every
# step and no dropout: fresh images already prevent overfitting, and in a few minutes from
# scratch dropout only slows learning (mean IU 0.30 instead of 0.27 after 400-500 steps).
# Nine crops per canvas instead of four: a step costs 1.6x as much (the 100 px padding is
# shared by more crops) and learns more than 1.6x as much (seed 0: mean IU 0.549 after 750
# steps, against 0.490 after 1200 steps of 2x2 canvases, the same time). 4x4 canvases learnt
# less in the same time (0.315 after 250 steps against 0.424 after 376 of 3x3); on 3x3
# canvases lr 0.02 gave 0.390 against 0.424 after 376 steps, lr 0.006 0.415 against 0.479
# after 564 (these with the paper's 100 px margin). The FCNs train with the same-padding
# trunk (``same_padding=True``: conv1_1 pad 1, fc6 pad 3, no margin), which steps about 1.8x
# faster for about the same mean IU per step, so the 1400 steps take less time than 1100 with
# the margin did. Mean IU, seeds 0 / 1 / 2, AMD EPYC VM: 1400 steps (the default) 0.631 /
# 0.660 / 0.620; 1300 steps 0.631 (seed 1), 0.5995 (seed 2); 1100 steps 0.605 (seed 0). With the
# margin, 1100 steps: 0.625 / 0.626 / 0.604 there, 0.606 / 0.618 / 0.598 on an Intel Xeon VM,
# where 1100 same-padding steps gave 0.605 / 0.586 / 0.608 (lr 0.015: 0.612 / 0.596, seeds 0 / 1;
# lr 0.02: 0.530 / 0.603, seeds 1 / 2).
DEFAULT_ITERS = 1400
RECIPE = dict(width=0.125, lr=0.01, momentum=0.9, weight_decay=5e-4, warmup=50, grid=3, crop=128, dropout=0.0)
QUICK = dict(width=0.0625, grid=2, crop=64, iters=12, lr=0.005, warmup=4, checkpoint_every=6, log_every=3)

# the comparison of the papers, coarse to fine: FCN (Long et al. 2015), SegNet (Badrinarayanan
# et al. 2017), DeepLab (Chen et al. 2015/2017), dilated convolutions (Yu & Koltun 2016)
STORY = ("fcn32s", "fcn16s", "fcn8s", "segnet", "deeplab-largefov", "deeplab-aspp", "dilation-context")
THIN_CLASSES = ("ring", "bar")   # the built-in classes a coarse (stride 32) prediction loses first
SHOWN = (2, 3, 5, 8)             # val images with thin and small objects, for compare.png


def compare_models(models=None):
    """The models ``--compare`` trains: ``models`` (names, all registered) or the :data:`STORY`
    models present in the registry at run time. Returns ``(names, skipped)``."""
    registry = model_names()
    if models is not None:
        unknown = [m for m in models if m not in registry]
        if unknown:
            raise ValueError(f"--models {','.join(models)}: {unknown[0]!r} is not a model; expected names "
                             f"from {', '.join(registry)}")
        return tuple(models), ()
    return tuple(m for m in STORY if m in registry), tuple(m for m in STORY if m not in registry)


def parameter_count(model) -> int:
    """Number of parameter entries of ``model`` (frozen ones, e.g. bilinear upsampling, included)."""
    return int(sum(math.prod(p.data.shape) for _, p in model.named_parameters()))


def run_demo(out="minifcn-demo", quick=False, compare=False, seconds=None, backend="numpy",
             seed=0, progress=True, models=None, iters=None, crf=None, paper_trunk=False):
    """Run the demo; returns ``{model name: validation result}`` (the four metrics and per-class IU;
    with ``compare`` also ``crf``, the same with the dense CRF).

    Each model trains ``iters`` iterations (default :data:`DEFAULT_ITERS`, or ``QUICK``'s with
    ``quick``), or as many as fit in ``seconds`` when that is given. ``models``: the names to
    compare (default :func:`compare_models`); ``crf``: dense CRF settings for the comparison
    (default ``{}``, :data:`minifcn.evaluate.CRF_DEFAULTS`). The FCNs train with the
    same-padding trunk (no 100-pixel margin), or with ``paper_trunk`` the paper's."""
    from .data import VOCSegmentation
    from .data.synthetic import CLASS_NAMES, ensure_dataset, make_dataset

    if compare or models is not None:
        names, skipped = compare_models(models)
        for m in skipped:
            print(f"note: {m} is not in this minifcn's model registry (minifcn.models.MODELS); skipped")
        if not names:
            raise ValueError("--compare: none of the models " + ", ".join(STORY) + " is registered")
        compare = True
    else:
        names = ("fcn8s",)
    crf = {} if crf is None else crf
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if quick:
        data_dir = out / "data"
        root = (data_dir / "VOC2012") if (data_dir / "VOC2012").is_dir() else \
            make_dataset(data_dir, n_train=2, n_val=3, seed=seed, progress=False)
    else:
        root = ensure_dataset(seed=seed)
    val = VOCSegmentation(root, "val")
    report = "fcn8s" if "fcn8s" in names else names[0]   # the model of metrics.json, curves.png, ...
    results, preds, spent = {}, {}, []
    n = len(names)
    for k, name in enumerate(names, 1):
        config = TrainConfig(out=str(out / name), data="builtin", model=name, seed=seed, backend=backend,
                             same_padding=takes_same_padding(name) and not paper_trunk, **RECIPE)
        if quick:
            config = dataclasses.replace(config, **QUICK)
        if seconds is not None:
            config.iters, per_iter = iterations_for(seconds, config)
            print(f"{name}: {per_iter:.3f} s per iteration, {config.iters} iterations in {seconds:.0f} s")
        elif iters is not None:
            config.iters = iters
        elif not quick:
            config.iters = DEFAULT_ITERS
        config.val_every = -(-config.iters // 3)  # twice on the way, once at the end
        if compare:
            print(f"[{k}/{n}] {name}: {config.iters} iterations" + _time_left(spent, n - k + 1, seconds), flush=True)
        t0 = time.perf_counter()
        # the demo's own run folders: a new demo replaces the previous one
        trainer = Trainer(config, progress=progress, val_data=val, overwrite=True)
        result = trainer.run()
        took = time.perf_counter() - t0
        print(f"{name}: trained {config.iters} iterations in {took:.0f} s ({config.iters / took:.2f} it/s, "
              f"validation included)")
        kept = None
        if compare:   # again, with the CRF beside the plain prediction (one forward pass per image)
            t1 = time.perf_counter()
            result, _, kept = evaluate(trainer.model, val, keep=4 if name == report else 0, progress=progress,
                                       desc=f"[{k}/{n}] {name} eval", crf=crf)
            result["eval_seconds"] = round(time.perf_counter() - t1, 1)
        result["train_seconds"] = round(took, 1)
        result["iterations"] = config.iters
        result["parameters"] = parameter_count(trainer.model)
        results[name] = result
        preds[name] = [predict(trainer.model, val[i][0]) for i in SHOWN if i < len(val)]
        print(f"{name}: {format_metrics(result)}")
        if compare:
            print(f"{name} + CRF: {format_metrics(result['crf'])} ({result['crf']['seconds_per_image']:.2f} s "
                  f"per image)")
        if name == report:
            from .viz import plot_curves

            if kept is None:
                kept = [(im, lab, predict(trainer.model, im)) for im, lab in (val[i] for i in range(min(4, len(val))))]
            write_report(result, kept, list(CLASS_NAMES), out,
                         {"model": name, "width": config.width, "same_padding": config.same_padding,
                          "iterations": config.iters,
                          "train_seconds": result["train_seconds"], "checkpoint": str(trainer.ckpt_path)},
                         crf=crf if compare else None)
            plot_curves(trainer.history, out / "curves.png")
        spent.append(time.perf_counter() - t0)
        if compare and k < n:
            print(f"[{k}/{n}] {name} done in {_duration(spent[-1])}")
    if compare:
        table = compare_table(results, list(CLASS_NAMES), crf)
        write_json(out / "compare.json", table)
        (out / "compare.md").write_text(format_markdown(table, crf) + "\n")
        plot_comparison([val[i] for i in SHOWN if i < len(val)], preds, out / "compare.png", CLASS_NAMES)
        print(format_table(table))
    wall = time.perf_counter() - start
    print(f"demo finished in {_duration(wall)}. Results in {out}/: metrics.json, curves.png, predictions.png, "
          f"per_class_iu.png" + (", compare.json, compare.md, compare.png" if compare else "")
          + f"; checkpoint {out / report / 'checkpoint.npz'}")
    return results


def _time_left(spent, remaining, seconds=None) -> str:
    """``"; about 12m30s left in total"``: the models still to run times the mean time of those done
    (with ``seconds``, before any is done, at least ``seconds`` per model)."""
    if spent:
        return f"; about {_duration(remaining * sum(spent) / len(spent))} left in total ({remaining} model" \
               f"{'s' if remaining > 1 else ''}, from the mean time of those done)"
    if seconds is not None:
        return f"; at least {_duration(remaining * seconds)} left in total (training only)"
    return "; the total time left is known after this model" if remaining > 1 else ""


def compare_table(results, class_names, crf=None) -> dict:
    """compare.json: per model (story order) the four metrics, per-class and thin-class IU,
    parameters, iterations, seconds, and ``crf``: the same with the dense CRF and its settings."""
    def metrics(r):
        iu = dict(zip(class_names, r["per_class_iu"]))
        return {**{k: r[k] for k in METRICS}, "per_class_iu": iu,
                "thin_class_iu": {c: iu[c] for c in THIN_CLASSES if c in iu}}

    table = {}
    for name, r in _story_order(results):
        row = {**metrics(r), "parameters": r["parameters"], "iterations": r["iterations"],
               "train_seconds": r["train_seconds"]}
        if "crf" in r:
            row["eval_seconds"] = r.get("eval_seconds")
            row["crf"] = {**metrics(r["crf"]), "seconds_per_image": round(r["crf"]["seconds_per_image"], 4),
                          "settings": crf_record(crf)}
        table[name] = row
    return table


_HEADS = ("pixel acc", "mean acc", "mean IU", "f.w. IU")


def _rows(table):
    """(model, CRF?, row dict) per line of the table: each model, then the model + CRF."""
    for name, r in _story_order(table):
        yield name, False, r
        if "crf" in r:
            yield name, True, r["crf"]


def format_table(table) -> str:
    """The comparison as plain text: one line per model and one per model + CRF."""
    thin = [c for c in THIN_CLASSES if any(c in r["thin_class_iu"] for r in table.values())]
    head = (f"{'model':<22}" + "".join(f"{h:>10}" for h in _HEADS) + "".join(f"{'IU ' + c:>9}" for c in thin)
            + f"{'params':>10}{'iters':>7}{'seconds':>9}")
    lines = [head]
    for name, with_crf, r in _rows(table):
        top = table[name]
        seconds = f"{r['seconds_per_image']:.2f}/img" if with_crf else f"{top['train_seconds']:.0f}"
        lines.append(f"{name + (' + CRF' if with_crf else ''):<22}" + "".join(f"{r[k]:>10.3f}" for k in METRICS)
                     + "".join(f"{_num(r['thin_class_iu'].get(c)):>9}" for c in thin)
                     + f"{_params(top['parameters']):>10}{top['iterations']:>7}{seconds:>9}")
    return "\n".join(lines)


def format_markdown(table, crf=None) -> str:
    """compare.md: the same table in Markdown, with the CRF settings under it."""
    thin = [c for c in THIN_CLASSES if any(c in r["thin_class_iu"] for r in table.values())]
    cols = ["model", "CRF", *_HEADS, *(f"IU {c}" for c in thin), "parameters", "iterations", "train s", "CRF s/img"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(cols) - 2)) + "|"]
    for name, with_crf, r in _rows(table):
        top = table[name]
        cells = [name, "yes" if with_crf else "no", *(f"{r[k]:.3f}" for k in METRICS),
                 *(_num(r["thin_class_iu"].get(c)) for c in thin), _params(top["parameters"]), str(top["iterations"]),
                 "" if with_crf else f"{top['train_seconds']:.0f}",
                 f"{r['seconds_per_image']:.2f}" if with_crf else ""]
        lines.append("| " + " | ".join(cells) + " |")
    if any("crf" in r for r in table.values()):
        lines += ["", f"Dense CRF: {describe_crf(crf)}."]
    return "\n".join(lines)


def _num(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _params(n) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def plot_comparison(samples, preds, path, class_names):
    """One row per sample: image | ground truth | each model's prediction (story order),
    with a legend of the classes shown. The figure is sized from the images' aspect
    ratios, so the rows have no empty bands."""
    from .viz import class_legend, colorize, figure_grid, save_figure

    names = [n for n, _ in _story_order(preds)]
    fig, axes = figure_grid([np.shape(im)[:2] for im, _ in samples], 2 + len(names), panel_width=2.2, bottom=0.5)
    shown = {int(c) for _, label in samples for c in np.unique(label)}
    shown |= {int(c) for n in names for p in preds[n] for c in np.unique(p)}
    class_legend(fig, shown, list(class_names))
    for r, (image, label) in enumerate(samples):
        panels = [("image", image), ("ground truth", colorize(label))]
        panels += [(n, colorize(preds[n][r])) for n in names]
        for ax, (title, picture) in zip(axes[r], panels):
            ax.imshow(picture, interpolation="nearest")
            ax.axis("off")
            if r == 0:
                ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def _story_order(table):
    order = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce", "segnet", "deeplab-largefov", "deeplab-aspp",
             "dilation-frontend", "dilation-context")
    return sorted(table.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="minifcn-demo", help="results folder (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run on a tiny data set")
    p.add_argument("--compare", action="store_true",
                   help="train every architecture (" + ", ".join(STORY) + "; those registered) the same way, "
                        "evaluate each without and with the dense CRF, write compare.json, compare.md, compare.png")
    p.add_argument("--models", default=None, metavar="A,B,C",
                   help="with --compare: train these models (comma-separated registry names) instead")
    p.add_argument("--iters", type=int, default=None,
                   help=f"training iterations per model (default {DEFAULT_ITERS}, with --quick "
                        f"{QUICK['iters']}: the same result under any load)")
    p.add_argument("--seconds", type=float, default=None,
                   help="instead of --iters, train each model for about this many seconds (timed first: the "
                        "result then depends on the machine and its load)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paper-trunk", action="store_true",
                   help="the FCNs keep the paper's 100-pixel margin instead of the same-padding trunk "
                        "(about 1.8x slower per step)")
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))


def main(args) -> int:
    from .evaluate import check_backend, check_out

    if args.iters is not None and args.iters < 1:
        raise ValueError(f"--iters {args.iters}: expected a positive number of iterations")
    if args.seconds is not None and not (math.isfinite(args.seconds) and args.seconds > 0):
        raise ValueError(f"--seconds {args.seconds}: expected a positive number of seconds")
    if args.seed < 0:
        raise ValueError(f"--seed {args.seed}: expected an integer >= 0")
    models = None
    if args.models is not None:
        if not args.compare:
            raise ValueError(f"--models {args.models}: needs --compare")
        models = [m.strip() for m in args.models.split(",")]
        if not all(models) or len(set(models)) != len(models):
            raise ValueError(f"--models {args.models!r}: expected distinct comma-separated model names")
        compare_models(models)   # unknown names: one line, before any work
    check_out(args.out)
    check_backend(args.backend)
    try:
        run_demo(args.out, args.quick, args.compare, args.seconds, args.backend, args.seed, models=models,
                 iters=args.iters, paper_trunk=args.paper_trunk)
    except KeyboardInterrupt as exc:
        print(str(exc) or "interrupted", file=sys.stderr)
        return 130
    return 0
