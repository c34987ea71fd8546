"""Training: the :class:`Trainer` loop and the ``minifcn train`` verb.

One iteration::

    for k in range(iter_size):                  gradient accumulation
        x, labels = next batch                  host -> device once
        scores = model.forward(x)
        loss, cache = softmax_cross_entropy(scores, labels, weight=class_weights, normalize=...)
        model.backward(loss_backward(cache) / iter_size)
    optimizer.step(lr = schedule(iteration))    SGD with momentum (minifcn.optim)

A batch is one canvas of ``grid`` random crops (each at most ``crop`` px, flipped at
random) laid out by :func:`minifcn.data.tile`; the gaps are labelled 255. The
built-in data set trains on fresh images every step (:class:`FreshSamples`); a VOC
folder trains on random images of its train split.

Everything lands in ``out``: ``log.jsonl`` (one JSON row per logged step and per
validation), ``checkpoint.npz`` (model, optimiser under ``optim/``, and the iteration,
RNG states and settings in the metadata; written atomically every ``checkpoint_every``
iterations and at the end), ``curves.png``. A run started again with ``resume=True``
continues exactly where the checkpoint stopped (same parameters bit for bit as a run
that was never interrupted). A non-finite loss stops the run with
:class:`TrainingDiverged`, leaving the last good checkpoint in place; Ctrl-C finishes
the current iteration, saves and stops.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from . import functional as F
from .backend import get_backend
from .optim import SGD, Schedule


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run (stored in the checkpoint; ``resume`` checks it)."""

    out: str = "runs/fcn8s"
    data: str = "builtin"           # a VOC folder or "builtin"
    model: str = "fcn8s"
    width: float = 0.125
    dropout: float = 0.5
    learn_upsampling: bool = False
    iters: int = 1000
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    policy: str = "poly"            # "poly" or "constant"
    warmup: int = 50
    iter_size: int = 1
    normalize: bool = True
    class_weights: bool = True      # weights proportional to class frequency ** -0.5
    grid: int = 2                   # grid x grid crops per canvas
    crop: int = 128
    val_every: int = 250
    val_limit: int | None = None
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    backend: str = "numpy"
    init: str | None = None         # ImageNet VGG16 weights (.npz)
    init_from: str | None = None    # a minifcn checkpoint (e.g. FCN-32s for FCN-16s)

    def check(self):
        if self.iters < 1 or self.iter_size < 1 or self.grid < 1 or self.crop < 1:
            raise ValueError(f"iters, iter_size, grid and crop must be >= 1, got {self.iters}, "
                             f"{self.iter_size}, {self.grid}, {self.crop}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.data != "builtin" and not os.path.isdir(self.data):
            raise ValueError(f"data folder {self.data} does not exist (use a VOC folder or 'builtin')")
        for path in (self.init, self.init_from):
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"initial weights {path} do not exist")


# ----------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------
class Batches:
    """Training canvases from the built-in stream or a VOC train split, resumable.

    ``next()`` -> ``(image, label)``: RGB uint8 (grid*crop, grid*crop, 3) and int64 labels.
    """

    def __init__(self, config: TrainConfig):
        from .data import VOCSegmentation
        from .data.synthetic import CLASS_NAMES, FreshSamples

        self.rng = np.random.default_rng([config.seed, 7])
        self.grid, self.crop = config.grid, config.crop
        if config.data == "builtin":
            self.stream, self.dataset = FreshSamples(config.seed), None
            self.class_names = list(CLASS_NAMES)
        else:
            self.stream, self.dataset = None, VOCSegmentation(config.data, "train")
            self.class_names = list(self.dataset.class_names)
        self.n_class = len(self.class_names)

    def _one(self):
        if self.stream is not None:
            return next(self.stream)
        return self.dataset[int(self.rng.integers(len(self.dataset)))]

    def __next__(self):
        from .data import random_flip, tile

        samples = [random_flip(*self._one(), self.rng) for _ in range(self.grid * self.grid)]
        image, label = tile(samples, grid=(self.grid, self.grid), crop=self.crop, rng=self.rng)
        return image, label.astype(np.int64)

    def class_weights(self, n=64):
        """Weights proportional to freq ** -0.5 from ``n`` samples (absent classes get the
        largest weight), scaled so the pixel-weighted mean weight is 1."""
        counts = np.zeros(self.n_class, np.float64)
        rng = np.random.default_rng([0, 11])
        for _ in range(n):
            if self.stream is not None:
                from .data.synthetic import sample
                _, label = sample(rng)
            else:
                _, label = self.dataset[int(rng.integers(len(self.dataset)))]
            counts += np.bincount(label.ravel(), minlength=256)[: self.n_class]
        freq = counts / max(counts.sum(), 1.0)
        w = np.where(freq > 0, np.maximum(freq, 1e-12) ** -0.5, 0.0)
        w[freq == 0] = w.max() if w.max() > 0 else 1.0
        return w / float((freq * w).sum() or 1.0)

    def state(self):
        return {"rng": self.rng.bit_generator.state,
                "stream": self.stream.state() if self.stream is not None else None}

    def set_state(self, state):
        self.rng.bit_generator.state = state["rng"]
        if self.stream is not None:
            self.stream.set_state(state["stream"])


# ----------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------
class Trainer:
    """Trains one model as configured; ``run()`` returns the final validation result.

    ``progress`` shows a tqdm bar; ``val_data`` is a sequence of ``(image, label)`` for
    periodic validation (default: the val split of ``config.data``).
    """

    def __init__(self, config: TrainConfig, resume=False, progress=True, val_data=None):
        from .models import build

        config.check()
        self.config, self.progress = config, progress
        self.out = Path(config.out)
        self.ckpt_path = self.out / "checkpoint.npz"
        self.log_path = self.out / "log.jsonl"
        self.batches = Batches(config)
        self.backend = get_backend(config.backend)
        self.model = build(config.model, self.batches.n_class, config.width, dropout=config.dropout,
                           learn_upsampling=config.learn_upsampling, seed=config.seed).to(self.backend, "float32")
        self.optimizer = SGD(self.model.named_parameters(), config.lr, config.momentum, config.weight_decay)
        self.schedule = Schedule(config.lr, config.iters, config.policy, warmup=config.warmup)
        self.iteration = 0
        self.val_data = val_data
        self.history = []
        if resume and self.ckpt_path.is_file():
            self._load_checkpoint()
        else:
            if resume:
                print(f"no checkpoint at {self.ckpt_path}; starting a new run", file=sys.stderr)
            self._initialise()
            self.weights = self.batches.class_weights() if config.class_weights else None
        self._weights_dev = (self.backend.asarray(self.weights, dtype="float32")
                             if self.weights is not None else None)

    # --- state -----------------------------------------------------------------
    def _initialise(self):
        c = self.config
        if c.init:
            self.model.load_vgg16(c.init)
        if c.init_from:
            copy_matching(self.model, c.init_from)
        if not (c.init or c.init_from):
            self._scale_first_layer()

    def _scale_first_layer(self, n=8):
        """He init assumes inputs of unit variance, but the reference preprocessing only
        subtracts the mean (pixel std about 50): from scratch, every activation would start
        about 50x too large and the first steps blow up. Dividing conv1_1's initial weights
        by the input std is the same as feeding unit-variance inputs (the biases are zero).
        The draws come from a separate generator, so the batches are not disturbed."""
        from .data import preprocess

        probe = Batches(dataclasses.replace(self.config, seed=self.config.seed + 1))
        std = float(np.std([preprocess(next(probe)[0]) for _ in range(n)]))
        w = self.model.conv1_1.weight
        w.data = w.data * (1.0 / std)

    def _meta(self):
        return {"model": self.model.config, "class_names": self.batches.class_names,
                "train": {"iteration": self.iteration, "config": dataclasses.asdict(self.config),
                          "batches": self.batches.state(), "dropout_rng": self.model.rng.state(),
                          "class_weights": None if self.weights is None else list(map(float, self.weights))}}

    def save_checkpoint(self):
        from .io import save_npz

        self.out.mkdir(parents=True, exist_ok=True)
        arrays = dict(self.model.state_dict())
        arrays.update({f"optim/{k}": v for k, v in self.optimizer.state_dict().items()})
        save_npz(self.ckpt_path, arrays, self._meta())

    def _load_checkpoint(self):
        from .io import load_npz, model_arrays, section

        arrays, meta = load_npz(self.ckpt_path)
        held = meta.get("train", {}).get("config", {})
        mine = dataclasses.asdict(self.config)
        changed = [k for k in ("data", "model", "width", "grid", "crop", "seed", "dropout")
                   if k in held and held[k] != mine[k]]
        if changed:
            raise ValueError(f"cannot resume {self.ckpt_path}: it was trained with "
                             + ", ".join(f"{k}={held[k]!r}" for k in changed)
                             + " but this run asks for " + ", ".join(f"{k}={mine[k]!r}" for k in changed))
        self.model.load_state_dict(model_arrays(arrays))
        self.optimizer.load_state_dict(section(arrays, "optim"))
        state = meta["train"]
        self.iteration = int(state["iteration"])
        self.batches.set_state(state["batches"])
        self.model.rng.set_state(state["dropout_rng"])
        w = state["class_weights"]
        self.weights = None if w is None else np.asarray(w, np.float64)

    def _log(self, row):
        self.history.append(row)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    # --- one iteration -----------------------------------------------------------
    def step(self):
        """One SGD iteration (``iter_size`` forward/backward passes); returns the mean loss."""
        c, b = self.config, self.backend
        self.model.train()
        total = 0.0
        for _ in range(c.iter_size):
            image, label = next(self.batches)
            from .data import preprocess

            x = b.asarray(preprocess(image)[None], dtype="float32")
            labels = b.asarray(label[None])
            scores = self.model.forward(x)
            loss, cache = F.softmax_cross_entropy(scores, labels, normalize=c.normalize, weight=self._weights_dev)
            value = float(loss)  # the one host read per pass
            if not math.isfinite(value):
                raise TrainingDiverged(f"loss became {value} at iteration {self.iteration + 1}")
            self.model.backward(F.softmax_cross_entropy_backward(cache, 1.0 / c.iter_size), need_dx=False)
            total += value
        self.optimizer.step(self.schedule(self.iteration))
        self.optimizer.zero_grad()
        self.iteration += 1
        return total / c.iter_size

    def validate(self):
        from .evaluate import METRICS, evaluate, open_split

        if self.val_data is None:
            self.val_data = open_split(self.config.data, "val", self.config.val_limit)
        result, _, _ = evaluate(self.model, self.val_data, progress=self.progress, desc="validate")
        self._log({"iteration": self.iteration, **{f"val_{k}": result[k] for k in METRICS}})
        return result

    # --- the loop ------------------------------------------------------------------
    def run(self):
        """Train to ``config.iters``; returns the last validation result (None if none ran)."""
        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        stop = _StopFlag()
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=c.iters, initial=self.iteration, desc=f"train {c.model}", unit="it", dynamic_ncols=True)
        result, losses = None, []
        with stop:
            try:
                while self.iteration < c.iters and not stop.requested:
                    lr = self.schedule(self.iteration)
                    losses.append(self.step())
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2g}")
                    if self.iteration % c.log_every == 0 or self.iteration == c.iters:
                        self._log({"iteration": self.iteration, "loss": float(np.mean(losses)), "lr": lr,
                                   "time": time.time()})
                        losses = []
                    if self.iteration % c.checkpoint_every == 0:
                        self.save_checkpoint()
                    if c.val_every and self.iteration % c.val_every == 0 and self.iteration < c.iters:
                        result = self.validate()
            except TrainingDiverged as exc:
                where = (f"the last good checkpoint {self.ckpt_path} is kept" if self.ckpt_path.is_file()
                         else "no checkpoint was written yet")
                raise TrainingDiverged(f"{exc}; training stopped ({where}). Try a smaller --lr.") from None
            finally:
                if bar is not None:
                    bar.close()
            self.save_checkpoint()
        if stop.requested:
            raise KeyboardInterrupt(f"interrupted at iteration {self.iteration}; saved {self.ckpt_path} "
                                    f"(continue with --resume)")
        if c.val_every:
            result = self.validate()
        self.plot()
        return result

    def plot(self):
        from .viz import plot_curves

        rows = [json.loads(line) for line in open(self.log_path)] if self.log_path.is_file() else []
        if rows:
            plot_curves(rows, self.out / "curves.png")


class _StopFlag:
    """While active, the first Ctrl-C only sets ``requested`` (the loop then saves and
    stops at the end of the iteration); a second Ctrl-C interrupts at once."""

    requested = False

    def __enter__(self):
        self._old = None
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            pass
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: finishing this iteration and saving a checkpoint (Ctrl-C again to abort)",
              file=sys.stderr)

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def copy_matching(model, path):
    """Copy every parameter of ``path`` (a minifcn checkpoint) whose name and shape match
    ``model``'s (e.g. an FCN-32s into an FCN-16s: all but the new skip scores).

    Raises ValueError when the checkpoint scores another number of classes or nothing matches.
    """
    from .backend import backend_of
    from .io import load_npz, model_arrays

    arrays, meta = load_npz(path)
    held = model_arrays(arrays)
    score = held.get("score_fr.weight")
    if score is not None and score.shape[0] != model.n_class:
        raise ValueError(f"checkpoint {path} scores {score.shape[0]} classes but the model has "
                         f"{model.n_class}; it cannot initialise this model")
    copied = 0
    for name, p in model.named_parameters():
        if name in held and tuple(held[name].shape) == p.shape:
            b = backend_of(p.data)
            p.data = b.xp.astype(b.asarray(held[name]), p.data.dtype)
            copied += 1
    if copied == 0:
        raise ValueError(f"checkpoint {path} shares no parameter of matching name and shape with "
                         f"{model.name} at width {model.width}")
    return copied


def iterations_for(seconds, config: TrainConfig, trials=3):
    """How many iterations of ``config`` fit in ``seconds`` on this machine (timed on a
    throwaway model after one warm-up step)."""
    probe = dataclasses.replace(config, out=os.devnull, iters=10 ** 9, class_weights=False, init=None,
                                init_from=None)
    t = Trainer(probe, progress=False)
    t.step()
    start = time.perf_counter()
    for _ in range(trials):
        t.step()
    per_iter = (time.perf_counter() - start) / trials
    return max(1, int(seconds / per_iter)), per_iter


def train(config: TrainConfig, resume=False, progress=True, val_data=None):
    """Build a :class:`Trainer` and run it; returns ``(trainer, last validation result)``."""
    trainer = Trainer(config, resume=resume, progress=progress, val_data=val_data)
    return trainer, trainer.run()


# ----------------------------------------------------------------------------
# ``minifcn train``
# ----------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--data", default=d.data, help="VOC folder, or 'builtin' (default; fresh images every step)")
    p.add_argument("--model", default=d.model, choices=("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"))
    p.add_argument("--width", type=float, default=d.width, help="channel width multiplier (default %(default)s)")
    p.add_argument("--init", default=None, help="ImageNet VGG16 weights (.npz, see `minifcn convert`)")
    p.add_argument("--init-from", default=None, help="a minifcn checkpoint to start from (staged 32s -> 16s -> 8s)")
    p.add_argument("--iters", type=int, default=d.iters)
    p.add_argument("--seconds", type=float, default=None,
                   help="train for about this long instead of --iters (iterations are timed first)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--policy", default=d.policy, choices=("poly", "constant"))
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear warm-up iterations")
    p.add_argument("--iter-size", type=int, default=d.iter_size, help="gradient accumulation passes per step")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=d.normalize,
                   help="average the loss over pixels (default) or sum it (Caffe; needs a tiny lr, e.g. "
                        "1e-10 at full width with momentum 0.99)")
    p.add_argument("--class-weights", action=argparse.BooleanOptionalAction, default=d.class_weights,
                   help="weight the loss by class frequency ** -0.5")
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--learn-upsampling", action="store_true")
    p.add_argument("--grid", type=int, default=d.grid, help="GRID x GRID random crops per canvas")
    p.add_argument("--crop", type=int, default=d.crop, help="crop size in pixels")
    p.add_argument("--val-every", type=int, default=d.val_every, help="validate every N iterations (0: never)")
    p.add_argument("--val-limit", type=int, default=None, help="validate on a subset of this many images")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=d.out, help="run folder (log, checkpoint, curves)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    p.add_argument("--backend", default=d.backend, choices=("numpy", "cupy"))


def config_from_args(args) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})


def stored_config(config: TrainConfig) -> TrainConfig:
    """The settings saved in ``config.out``'s checkpoint (keeping ``out`` and ``backend``), so that a
    resumed run continues with exactly the settings it started with; ``config`` if there is none."""
    from .io import load_npz

    path = os.path.join(config.out, "checkpoint.npz")
    if not os.path.isfile(path):
        return config
    held = load_npz(path)[1].get("train", {}).get("config", {})
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{**{k: v for k, v in held.items() if k in fields}, "out": config.out,
                          "backend": config.backend})


def main(args) -> int:
    from .evaluate import format_metrics

    try:
        config = config_from_args(args)
        if args.resume:
            config = stored_config(config)
        if args.seconds is not None and not (args.resume and os.path.isfile(os.path.join(config.out, "checkpoint.npz"))):
            config.iters, per_iter = iterations_for(args.seconds, config)
            print(f"{per_iter:.3f} s per iteration: training {config.iters} iterations")
        trainer = Trainer(config, resume=args.resume)
    except (ValueError, FileNotFoundError) as exc:
        print(f"minifcn train: error: {exc}", file=sys.stderr)
        return 2
    try:
        result = trainer.run()
    except TrainingDiverged as exc:
        print(f"minifcn train: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(str(exc), file=sys.stderr)
        return 130
    if result is not None:
        print(format_metrics(result))
    print(f"checkpoint {trainer.ckpt_path}, log {trainer.log_path}, curves {trainer.out / 'curves.png'}")
    return 0
