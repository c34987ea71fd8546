"""``minifcn demo``: the whole job in one command.

1. build the built-in data set (cached in ``~/.cache/minifcn``; see
   :mod:`minifcn.data.synthetic`),
2. train a small FCN-8s from scratch on fresh images for a fixed, seeded number of
   iterations (:data:`DEFAULT_ITERS`), so the same command gives the same metrics on
   any machine and under any load; ``--seconds S`` instead fits the iteration count to a
   time budget (timed first, so it depends on the machine),
3. evaluate on the built-in val split and write ``OUT/metrics.json`` (four metrics and
   per-class IU), ``OUT/curves.png``, ``OUT/predictions.png`` and ``OUT/per_class_iu.png``.

``--compare`` also trains FCN-32s and FCN-16s the same way for the same time and
writes ``OUT/compare.json``: the paper's Table 2 at small scale. ``--quick`` is a
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

from .evaluate import METRICS, format_metrics, predict, write_report
from .io import write_json
from .train import TrainConfig, Trainer, iterations_for

# The recipe: width 1/8 (in fixed time it beats 1/4: more steps), 2x2 tiles of crops
# up to 128 px in one 256 px canvas (the 100 px padding makes a lone 128 px image cost
# almost as much), SGD momentum 0.9 at lr 0.01 with a 50-step warm-up and poly decay,
# class weights freq ** -0.5, frozen bilinear upsampling, fresh images every step and
# no dropout: fresh images already prevent overfitting, and in a few minutes from
# scratch dropout only slows learning (mean IU 0.30 instead of 0.27 after 400-500 steps).
# lr 0.02 sometimes sat on a loss plateau (about 1.1) for 700 steps and more; 0.01 left
# it within 300 steps in each of three seeds.
DEFAULT_ITERS = 2500     # about 240 s on a quiet 2-core CPU (0.096 s per iteration)
RECIPE = dict(width=0.125, lr=0.01, momentum=0.9, weight_decay=5e-4, warmup=50, grid=2, crop=128, dropout=0.0)
QUICK = dict(width=0.0625, crop=64, iters=12, lr=0.005, warmup=4, checkpoint_every=6, log_every=3)


def run_demo(out="minifcn-demo", quick=False, compare=False, seconds=None, backend="numpy",
             seed=0, progress=True, models=None, iters=DEFAULT_ITERS):
    """Run the demo; returns ``{model name: validation result}`` (the four metrics and per-class IU).

    Each model trains ``iters`` iterations, or as many as fit in ``seconds`` when that is given."""
    from .data import VOCSegmentation
    from .data.synthetic import CLASS_NAMES, ensure_dataset, make_dataset

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
    names = models or (("fcn8s", "fcn16s", "fcn32s") if compare else ("fcn8s",))
    results, preds = {}, {}
    for name in names:
        config = TrainConfig(out=str(out / name), data="builtin", model=name, seed=seed, backend=backend,
                             **RECIPE)
        if quick:
            config = dataclasses.replace(config, **QUICK)
        elif seconds is not None:
            config.iters, per_iter = iterations_for(seconds, config)
            print(f"{name}: {per_iter:.3f} s per iteration, {config.iters} iterations in {seconds:.0f} s")
        else:
            config.iters = iters
        config.val_every = -(-config.iters // 3)  # twice on the way, once at the end
        t0 = time.perf_counter()
        # the demo's own run folders: a new demo replaces the previous one
        trainer = Trainer(config, progress=progress, val_data=val, overwrite=True)
        result = trainer.run()
        took = time.perf_counter() - t0
        result["train_seconds"] = round(took, 1)
        result["iterations"] = config.iters
        results[name] = result
        print(f"{name}: trained {config.iters} iterations in {took:.0f} s ({config.iters / took:.2f} it/s, "
              f"validation included)")
        shown = [2, 3, 5, 8]  # val images with thin and small objects
        preds[name] = [predict(trainer.model, val[i][0]) for i in shown if i < len(val)]
        print(f"{name}: {format_metrics(result)}")
        if name == names[0]:
            from .viz import plot_curves

            kept = [(im, lab, predict(trainer.model, im)) for im, lab in (val[i] for i in range(min(4, len(val))))]
            write_report(result, kept, list(CLASS_NAMES), out,
                         {"model": name, "width": config.width, "iterations": config.iters,
                          "train_seconds": result["train_seconds"], "checkpoint": str(trainer.ckpt_path)})
            plot_curves(trainer.history, out / "curves.png")
    if len(results) > 1:
        table = {n: {**{k: r[k] for k in METRICS}, "iterations": r["iterations"],
                     "train_seconds": r["train_seconds"],
                     "per_class_iu": dict(zip(CLASS_NAMES, r["per_class_iu"]))} for n, r in results.items()}
        write_json(out / "compare.json", table)
        plot_comparison([val[i] for i in shown if i < len(val)], preds, out / "compare.png")
        print(format_table(table))
    wall = time.perf_counter() - start
    print(f"demo finished in {wall:.0f} s. Results in {out}/: metrics.json, curves.png, predictions.png, "
          f"per_class_iu.png" + (", compare.json, compare.png" if len(results) > 1 else "")
          + f"; checkpoint {out / names[0] / 'checkpoint.npz'}")
    return results


def format_table(table) -> str:
    head = f"{'model':<8} {'pixel acc':>9} {'mean acc':>9} {'mean IU':>8} {'f.w. IU':>8} {'iters':>6}"
    rows = [f"{n:<8} {r['pixel_accuracy']:>9.3f} {r['mean_accuracy']:>9.3f} {r['mean_iu']:>8.3f} "
            f"{r['frequency_weighted_iu']:>8.3f} {r['iterations']:>6}" for n, r in _coarse_to_fine(table)]
    return "\n".join([head, *rows])


def plot_comparison(samples, preds, path):
    """One row per sample: image | ground truth | each model's prediction (coarse to fine).
    The figure is sized from the images' aspect ratios, so the rows have no empty bands."""
    from .viz import colorize, figure_grid, save_figure

    names = [n for n, _ in _coarse_to_fine(preds)]
    fig, axes = figure_grid([np.shape(im)[:2] for im, _ in samples], 2 + len(names), panel_width=2.2)
    for r, (image, label) in enumerate(samples):
        panels = [("image", image), ("ground truth", colorize(label))]
        panels += [(n, colorize(preds[n][r])) for n in names]
        for ax, (title, picture) in zip(axes[r], panels):
            ax.imshow(picture, interpolation="nearest")
            ax.axis("off")
            if r == 0:
                ax.set_title(title)
    return save_figure(fig, path)


def _coarse_to_fine(table):
    order = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")
    return sorted(table.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="minifcn-demo", help="results folder (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run on a tiny data set")
    p.add_argument("--compare", action="store_true",
                   help="also train FCN-16s and FCN-32s the same way for the same time")
    p.add_argument("--iters", type=int, default=DEFAULT_ITERS,
                   help="training iterations per model (default %(default)s: the same result on any machine)")
    p.add_argument("--seconds", type=float, default=None,
                   help="instead of --iters, train each model for about this many seconds (timed first: the "
                        "result then depends on the machine and its load)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))


def main(args) -> int:
    from .evaluate import check_backend, check_out

    if args.iters < 1:
        raise ValueError(f"--iters {args.iters}: expected a positive number of iterations")
    if args.seconds is not None and not (math.isfinite(args.seconds) and args.seconds > 0):
        raise ValueError(f"--seconds {args.seconds}: expected a positive number of seconds")
    if args.seed < 0:
        raise ValueError(f"--seed {args.seed}: expected an integer >= 0")
    check_out(args.out)
    check_backend(args.backend)
    try:
        run_demo(args.out, args.quick, args.compare, args.seconds, args.backend, args.seed, iters=args.iters)
    except KeyboardInterrupt as exc:
        print(str(exc) or "interrupted", file=sys.stderr)
        return 130
    return 0
