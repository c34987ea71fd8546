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
that was never interrupted); it may change only :data:`RESUMABLE` settings (a longer
``iters``, a moved copy of ``data``, how often to validate, log and checkpoint).

Nothing is lost:

* a new run refuses a folder that already holds one (``resume=True`` continues it,
  ``overwrite=True`` replaces it);
* Ctrl-C or SIGTERM (``timeout``, job schedulers, container stops) finishes the current
  iteration, saves and stops; a second one aborts at once;
* any other error in the loop (an unreadable image, a bad val image, ...) saves the
  state after the last completed iteration and is re-raised as :class:`TrainingError`,
  one line saying what failed and where the state is;
* a non-finite loss stops the run with :class:`TrainingDiverged`. A periodic
  checkpoint is written only once the next iteration's loss with those very parameters
  came out finite (and the parameters are finite), so the kept checkpoint is one a
  resumed run can continue from; the message names its iteration.

Temporaries a killed run left behind (``.checkpoint.npz.<pid>.<hex>.tmp``) are removed
by the next run in that folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import functional as F
from .backend import get_backend, one_blas_thread
from .optim import SGD, Schedule


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingError(RuntimeError):
    """An error stopped training; the message says what and where the last good state was saved
    (the original exception is the ``__cause__``)."""


class RunExists(FileExistsError):
    """A new run was asked for in a folder that already holds one."""


# settings a resumed run may change (the others define the run and must match the checkpoint)
RESUMABLE = ("iters", "data", "val_every", "val_limit", "checkpoint_every", "log_every", "backend", "out")
RUN_FILES = ("checkpoint.npz", "log.jsonl", "curves.png")
MAX_CANVAS = 4096     # grid * crop, in pixels: a bigger canvas would not fit in memory anyway
MAX_WIDTH = 2.0       # channel width multiplier (1.0 is the paper's VGG16)


def flag(name: str) -> str:
    """The command-line flag of a :class:`TrainConfig` field (``val_every`` -> ``--val-every``)."""
    return "--" + name.replace("_", "-")


def model_names():
    """The model names of the registry (read at run time, so new models appear by themselves)."""
    from . import models

    registry = getattr(models, "MODELS", None) or {}
    return tuple(registry)


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run (stored in the checkpoint; ``resume`` checks it)."""

    out: str = "runs/fcn8s"
    data: str = "builtin"           # a VOC folder or "builtin"
    model: str = "fcn8s"
    width: float = 0.125
    dropout: float = 0.5
    learn_upsampling: bool = False
    same_padding: bool = False      # FCNs: conv1_1 pad 1 and fc6 pad 3 instead of the 100 px margin
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
        """Raise ValueError naming the first bad setting (by its command-line flag) and what
        was expected; cheap, so it runs before any work starts."""
        def bad(name, expected):
            raise ValueError(f"{flag(name)} {getattr(self, name)!r}: expected {expected}")

        def number(name, lo=None, hi=None, lo_open=False, hi_open=False, integer=False, optional=False):
            v = getattr(self, name)
            if v is None and optional:
                return
            kind = (int,) if integer else (int, float)
            what = "an integer" if integer else "a number"
            lo_s = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
            hi_s = "" if hi is None else f"{'<' if hi_open else '<='} {hi}"
            expected = what + (" " + " and ".join(x for x in (lo_s, hi_s) if x) if lo_s or hi_s else "")
            if isinstance(v, bool) or not isinstance(v, kind) or not math.isfinite(v):
                bad(name, expected)
            if lo is not None and (v < lo or lo_open and v == lo) or hi is not None and (v > hi or hi_open and v == hi):
                bad(name, expected)

        names = model_names()
        if names and self.model not in names:
            bad("model", "one of " + ", ".join(names))
        number("width", 0, MAX_WIDTH, lo_open=True)
        if not isinstance(self.same_padding, bool):
            bad("same_padding", "True or False")
        from .models import same_padding_kwargs

        try:
            same_padding_kwargs(self.model, self.same_padding)
        except ValueError as exc:
            raise ValueError(f"--same-padding: {exc}") from None
        number("dropout", 0, 1, hi_open=True)
        for name in ("iters", "iter_size", "grid", "crop", "checkpoint_every", "log_every"):
            number(name, 1, integer=True)
        number("warmup", 0, integer=True)
        number("val_every", 0, integer=True)
        number("val_limit", 1, integer=True, optional=True)
        number("seed", 0, integer=True)
        number("lr", 0, lo_open=True)
        number("momentum", 0, 1, hi_open=True)
        number("weight_decay", 0)
        if self.grid * self.crop > MAX_CANVAS:
            raise ValueError(f"--grid {self.grid} x --crop {self.crop} = {self.grid * self.crop} px canvas: "
                             f"expected at most {MAX_CANVAS} px")
        if self.policy not in ("poly", "constant"):
            bad("policy", "'poly' or 'constant'")
        if not isinstance(self.out, str) or not self.out.strip():
            bad("out", "a folder name (not empty)")
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            bad("out", "a folder, but it is an existing file")
        if not isinstance(self.data, str) or not self.data:
            bad("data", "a VOC folder or 'builtin'")
        if self.data != "builtin":
            from .data.voc import find_voc_root

            try:
                find_voc_root(self.data)
            except FileNotFoundError as exc:
                raise ValueError(f"--data: {exc}") from None
        for name in ("init", "init_from"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"{flag(name)} {path}: the file does not exist")
        from .backend import get_backend as _get

        try:
            _get(self.backend)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"--backend {self.backend}: {exc}") from None


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
        self._ahead = None   # the next canvas, being drawn (an _Ahead)

    def _one(self):
        if self.stream is not None:
            return next(self.stream)
        return self.dataset[int(self.rng.integers(len(self.dataset)))]

    def _draw(self):
        from .data import random_flip, tile

        samples = [random_flip(*self._one(), self.rng) for _ in range(self.grid * self.grid)]
        image, label = tile(samples, grid=(self.grid, self.grid), crop=self.crop, rng=self.rng)
        return image, label.astype(np.int64)

    def __next__(self):
        """The next canvas. The one after it is drawn meanwhile in a background thread (drawing
        is mostly NumPy and PIL work that releases the GIL, so it overlaps the training step);
        the canvases and the states are exactly those of drawing one after the other."""
        if self._ahead is None:
            self._ahead = _Ahead(self._state(), self._draw)
        ahead, self._ahead = self._ahead, None
        item = ahead.result()  # a drawing error surfaces here, in the step that needed the canvas
        self._ahead = _Ahead(self._state(), self._draw)
        return item

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

    def _state(self):
        return {"rng": self.rng.bit_generator.state,
                "stream": self.stream.state() if self.stream is not None else None}

    def state(self):
        """The RNG states from which the next canvas ``next()`` returns is drawn."""
        return self._state() if self._ahead is None else self._ahead.state

    def set_state(self, state):
        if self._ahead is not None:   # the canvas drawn ahead came from the old state
            self._ahead.wait()
            self._ahead = None
        self.rng.bit_generator.state = state["rng"]
        if self.stream is not None:
            self.stream.set_state(state["stream"])


class _Ahead:
    """``draw()`` running in a daemon thread; ``state`` is the RNG state it started from."""

    def __init__(self, state, draw):
        self.state, self._item, self._error = state, None, None
        self._thread = threading.Thread(target=self._run, args=(draw,), name="minifcn-batches", daemon=True)
        self._thread.start()

    def _run(self, draw):
        try:
            self._item = draw()
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self._error = exc

    def wait(self):
        self._thread.join()

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._item


# ----------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------
class Trainer:
    """Trains one model as configured; ``run()`` returns the final validation result.

    ``progress`` shows a tqdm bar; ``val_data`` is a sequence of ``(image, label)`` for
    periodic validation (default: the val split of ``config.data``).
    """

    def __init__(self, config: TrainConfig, resume=False, progress=True, val_data=None, overwrite=False):
        from .io import clean_stale
        from .models import build, same_padding_kwargs

        config.check()
        self.config, self.progress = config, progress
        self.out = Path(config.out)
        self.ckpt_path = self.out / "checkpoint.npz"
        self.log_path = self.out / "log.jsonl"
        resuming = check_run_folder(config.out, resume, overwrite)
        clean_stale(self.out)
        self.batches = Batches(config)
        self.backend = get_backend(config.backend)
        self.model = build(config.model, self.batches.n_class, config.width, dropout=config.dropout,
                           learn_upsampling=config.learn_upsampling, seed=config.seed,
                           **same_padding_kwargs(config.model, config.same_padding)).to(self.backend, "float32")
        self.optimizer = SGD(self.model.named_parameters(), config.lr, config.momentum, config.weight_decay)
        self.schedule = Schedule(config.lr, config.iters, config.policy, warmup=config.warmup)
        self.iteration = 0
        self.val_data = val_data
        self.history = []
        self._pending = None      # (iteration, arrays, meta) waiting for the next loss to be finite
        self._before_step = None  # RNG states at the start of the running step
        self.saved_iteration = None
        if resuming:
            self._load_checkpoint()
            self._trim_log()
        else:
            if resume:
                print(f"no checkpoint at {self.ckpt_path}; starting a new run", file=sys.stderr)
            if overwrite or resume:  # nothing to continue: the old files describe lost work
                for name in RUN_FILES:
                    if (self.out / name).is_file():
                        (self.out / name).unlink()
            self._initialise()
            self.weights = self.batches.class_weights() if config.class_weights else None
        self._weights_dev = (self.backend.asarray(self.weights, dtype="float32")
                             if self.weights is not None else None)

    # --- state -----------------------------------------------------------------
    def _initialise(self):
        c = self.config
        if c.init:
            self.model.load_vgg16(c.init)
        copied = set()
        if c.init_from:
            copied = set(copy_matching(self.model, c.init_from, names=True))
            fresh = [n for n, _ in self.model.named_parameters() if n not in copied]
            print(f"--init-from {c.init_from}: copied {len(copied)} of {len(copied) + len(fresh)} parameters"
                  + (f"; fresh: {', '.join(fresh)}" if fresh else ""), file=sys.stderr)
        if not c.init and "conv1_1.weight" not in copied:
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

    def _state(self):
        """Host copies of everything a checkpoint holds: ``(arrays, meta)``."""
        from .backend import to_numpy

        arrays = {k: np.array(to_numpy(v)) for k, v in self.model.state_dict().items()}
        arrays.update({f"optim/{k}": np.array(to_numpy(v)) for k, v in self.optimizer.state_dict().items()})
        return arrays, self._meta()

    def save_checkpoint(self, state=None):
        """Write the current state (or ``state``, an ``(iteration, arrays, meta)`` snapshot) to
        ``checkpoint.npz``, atomically; refuses (ValueError) parameters that are not finite."""
        from .io import check_finite, save_npz

        iteration, arrays, meta = state if state is not None else (self.iteration, *self._state())
        check_finite(arrays, f"iteration {iteration}")
        self.out.mkdir(parents=True, exist_ok=True)
        save_npz(self.ckpt_path, arrays, meta)
        self.saved_iteration = iteration

    def _load_checkpoint(self):
        from .io import load_npz, meta_field, model_arrays, section

        path = self.ckpt_path
        arrays, meta = load_npz(path)
        if not isinstance(meta.get("train"), dict):
            raise ValueError(f"{path} holds a model but no training state, so it cannot be resumed; "
                             f"start a new run from it with --init-from {path} and another --out")
        state = meta["train"]
        held = meta_field(state, "config", dict, path, "training state")
        check_resume(held, self.config, path)
        names = meta.get("class_names")
        if isinstance(names, list) and names != list(self.batches.class_names):
            raise ValueError(f"--data {self.config.data} has classes {self.batches.class_names} but {path} "
                             f"was trained on {names}")
        try:
            self.model.load_state_dict(model_arrays(arrays))
            self.optimizer.load_state_dict(section(arrays, "optim"))
            self.iteration = int(meta_field(state, "iteration", int, path, "training state"))
            self.batches.set_state(meta_field(state, "batches", dict, path, "training state"))
            self.model.rng.set_state(state["dropout_rng"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path} has a damaged training state ({type(exc).__name__}: {exc})") from None
        w = state.get("class_weights")
        if w is not None and not (isinstance(w, list) and len(w) == self.batches.n_class
                                  and all(isinstance(v, (int, float)) for v in w)):
            raise ValueError(f"{path}: training state entry 'class_weights' should be a list of "
                             f"{self.batches.n_class} numbers or null")
        self.weights = None if w is None else np.asarray(w, np.float64)
        self.saved_iteration = self.iteration
        if self.config.iters < self.iteration:
            raise ValueError(f"--iters {self.config.iters} is below the {self.iteration} iterations {path} "
                             f"already holds; give a larger --iters (or --seconds) to extend the run")

    def _trim_log(self):
        """Drop log rows past the checkpoint's iteration (they were done again after a kill)."""
        if not self.log_path.is_file():
            return
        from .io import atomic_path

        keep = []
        for line in self.log_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a half-written last line of a killed run
            if isinstance(row, dict) and isinstance(row.get("iteration"), int) and row["iteration"] <= self.iteration:
                keep.append(line)
        with atomic_path(self.log_path) as tmp:
            tmp.write_text("".join(k + "\n" for k in keep))

    def _log(self, row):
        self.history.append(row)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    # --- one iteration -----------------------------------------------------------
    def step(self):
        """One SGD iteration (``iter_size`` forward/backward passes); returns the mean loss.

        Its BLAS calls run on one thread each (:func:`minifcn.backend.one_blas_thread`): the
        cores are shared out by the band loops."""
        with one_blas_thread():
            return self._step()

    def _step(self):
        c, b = self.config, self.backend
        self.model.train()
        self._before_step = (self.batches.state(), self.model.rng.state())
        total = 0.0
        for k in range(c.iter_size):
            image, label = next(self.batches)
            from .data import preprocess

            x = b.asarray(preprocess(image)[None], dtype="float32")
            labels = b.asarray(label[None])
            scores = self.model.forward(x)
            loss, cache = F.softmax_cross_entropy(scores, labels, normalize=c.normalize, weight=self._weights_dev)
            value = float(loss)  # the one host read per pass
            if not math.isfinite(value):
                self._pending = None  # its parameters gave this loss: not a good state
                raise TrainingDiverged(f"loss became {value} at iteration {self.iteration + 1}")
            if k == 0 and self._pending is not None:  # those parameters give a finite loss: keep them
                pending, self._pending = self._pending, None
                self._save_if_finite(pending)
            dscores = F.softmax_cross_entropy_backward(cache, 1.0 / c.iter_size)
            del scores, cache            # the scores and the softmax: not held through the backward
            self.model.backward(dscores, need_dx=False)
            total += value
        self._before_step = "updating"
        self.optimizer.step(self.schedule(self.iteration))
        self.optimizer.zero_grad()
        self.iteration += 1
        self._before_step = None
        return total / c.iter_size

    def _save_if_finite(self, state):
        try:
            self.save_checkpoint(state)
        except ValueError:  # non-finite parameters: keep the previous checkpoint
            pass

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
            from .io import progress
            bar = progress(total=c.iters, initial=self.iteration, desc=f"train {c.model}", unit="it",
                           dynamic_ncols=True)
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
                    if self.iteration % c.checkpoint_every == 0 and self.iteration < c.iters:
                        # written once the next loss shows these parameters are good
                        self._pending = (self.iteration, *self._state())
                    if c.val_every and self.iteration % c.val_every == 0 and self.iteration < c.iters:
                        result = self.validate()
            except TrainingDiverged as exc:
                where = (f"{self.ckpt_path} holds iteration {self.saved_iteration}, the last with a finite loss "
                         f"and finite parameters" if self.saved_iteration is not None
                         else "no checkpoint with a finite loss was written")
                raise TrainingDiverged(f"{exc}; training stopped ({where}). Try a smaller --lr.") from None
            except Exception as exc:
                raise self._failed(exc) from exc
            finally:
                if bar is not None:
                    bar.close()
            try:
                self.save_checkpoint()
            except ValueError as exc:  # the last update made the parameters non-finite
                raise TrainingDiverged(f"{exc}; {self.ckpt_path} holds iteration {self.saved_iteration}") from None
        if stop.requested:
            raise KeyboardInterrupt(f"{stop.what} at iteration {self.iteration}; saved {self.ckpt_path} "
                                    f"(continue with --resume)")
        if c.val_every:
            try:
                result = self.validate()
            except Exception as exc:
                raise TrainingError(f"final validation failed: {_one_line(exc)}; the trained model is saved "
                                    f"in {self.ckpt_path} (iteration {self.iteration})") from exc
        self.plot()
        return result

    def _failed(self, exc):
        """Save the state after the last completed iteration; the one-line TrainingError to raise."""
        where = f"at iteration {self.iteration + 1}" if self._before_step is not None else \
            f"after iteration {self.iteration}"
        self._pending = None
        if self._before_step == "updating":
            saved = (f"the parameters were being updated, so {self.ckpt_path} keeps iteration {self.saved_iteration}"
                     if self.saved_iteration is not None else "nothing was saved")
        else:
            if self._before_step is not None:  # undo the half-drawn batch: resuming redraws it
                batches, dropout = self._before_step
                self.batches.set_state(batches)
                self.model.rng.set_state(dropout)
                self._before_step = None
            self.optimizer.zero_grad()
            try:
                self.save_checkpoint()
                saved = f"saved iteration {self.iteration} to {self.ckpt_path} (continue with --resume)"
            except Exception as save_exc:  # noqa: BLE001 - report both
                saved = f"saving failed too ({_one_line(save_exc)})"
        return TrainingError(f"{_one_line(exc)} ({where}); {saved}")

    def plot(self):
        from .viz import plot_curves

        rows = [json.loads(line) for line in open(self.log_path)] if self.log_path.is_file() else []
        if rows:
            plot_curves(rows, self.out / "curves.png")


def _one_line(exc) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, (ValueError, OSError, TrainingError)) and text else \
        f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _StopFlag:
    """While active, the first Ctrl-C or SIGTERM only sets ``requested`` (the loop then
    saves and stops at the end of the iteration); a second one interrupts at once."""

    requested = False
    what = "interrupted"
    SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM") if hasattr(signal, n))

    def __enter__(self):
        self._old = {}
        for sig in self.SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave the signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} again: aborted without saving the "
                                    f"current iteration")
        self.requested = True
        name = signal.Signals(signum).name
        self.what = "interrupted" if name == "SIGINT" else f"stopped by {name}"
        print(f"\n{name}: finishing this iteration and saving a checkpoint (again to abort)", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def check_run_folder(out, resume=False, overwrite=False) -> bool:
    """Whether ``out`` holds a checkpoint to resume. Raises :class:`RunExists` when a new
    run (neither ``resume`` nor ``overwrite``) would replace a run already there."""
    out = Path(out)
    held = [n for n in RUN_FILES[:2] if (out / n).is_file()]
    if resume:
        return (out / "checkpoint.npz").is_file()
    if held and not overwrite:
        raise RunExists(f"--out {out} already holds a run ({', '.join(held)}); continue it with --resume, "
                        f"choose a new --out, or pass --overwrite to replace it")
    return False


def check_resume(held: dict, config: TrainConfig, path) -> None:
    """Raise ValueError naming every setting of ``config`` that differs from the checkpoint's
    (``held``) and may not change on resume (see :data:`RESUMABLE`)."""
    mine = dataclasses.asdict(config)
    changed = [k for k in mine if k not in RESUMABLE and k in held and held[k] != mine[k]]
    if changed:
        raise ValueError("cannot change " + ", ".join(f"{flag(k)} (the run has {held[k]!r}, asked {mine[k]!r})"
                                                     for k in changed)
                         + f" when resuming {path}; with --resume only "
                         + ", ".join(flag(k) for k in RESUMABLE if k != "out") + ", --seconds may change")


def copy_matching(model, path, names=False):
    """Copy every parameter of ``path`` (a minifcn checkpoint) whose name matches one of
    ``model``'s (e.g. an FCN-32s into an FCN-16s: all but the new skip scores and the
    final upsampling, whose kernel size differs by design); returns how many (or, with
    ``names``, their names).

    Raises ValueError when the checkpoint scores another number of classes, was built at
    another width (a shared trunk parameter of another shape), or nothing matches.
    """
    from .backend import backend_of
    from .io import load_npz, model_arrays

    arrays, meta = load_npz(path)
    held = model_arrays(arrays)
    score = held.get("score_fr.weight")
    if score is not None and score.shape[0] != model.n_class:
        raise ValueError(f"checkpoint {path} scores {score.shape[0]} classes but the model has "
                         f"{model.n_class}; it cannot initialise this model")
    params = dict(model.named_parameters())
    other = [n for n in params if n in held and tuple(held[n].shape) != params[n].shape
             and not n.startswith("upscore")]  # upsampling kernels differ between 32s/16s/8s by design
    if other:
        width = (meta.get("model") or {}).get("width") if isinstance(meta.get("model"), dict) else None
        raise ValueError(f"checkpoint {path}" + (f" (width {width})" if width is not None else "")
                         + f" does not fit {model.name} at width {model.width}: {len(other)} of its parameters "
                         f"have other shapes (e.g. {other[0]} {tuple(held[other[0]].shape)}, the model's is "
                         f"{params[other[0]].shape}); use the checkpoint's --width")
    copied = []
    for name, p in params.items():
        if name in held and tuple(held[name].shape) == p.shape:
            b = backend_of(p.data)
            p.data = b.xp.astype(b.asarray(held[name]), p.data.dtype)
            copied.append(name)
    if not copied:
        raise ValueError(f"checkpoint {path} shares no parameter of matching name and shape with "
                         f"{model.name} at width {model.width}")
    return copied if names else len(copied)


def iterations_for(seconds, config: TrainConfig, trials=3):
    """How many iterations of ``config`` fit in ``seconds`` on this machine (timed on a
    throwaway model after one warm-up step)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="minifcn-timing-") as tmp:
        probe = dataclasses.replace(config, out=tmp, iters=10 ** 9, class_weights=False, init=None,
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
    """The flags; those that set a :class:`TrainConfig` field have no argparse default, so
    ``main`` knows which ones were given (a resumed run applies or refuses exactly those)."""
    d = TrainConfig()
    S = argparse.SUPPRESS

    def opt(name, help_="", **kw):
        default = getattr(d, name.lstrip("-").replace("-", "_"))
        p.add_argument(name, default=S, help=f"{help_} (default {default})".strip(), **kw)

    opt("--data", "VOC folder, or 'builtin' (fresh images every step)")
    names = model_names()
    opt("--model", "one of " + ", ".join(names) if names else "model name", metavar="NAME")
    opt("--width", "channel width multiplier", type=float)
    p.add_argument("--init", default=S, help="ImageNet VGG16 weights (.npz, see `minifcn convert`)")
    p.add_argument("--init-from", default=S, help="a minifcn checkpoint to start from (staged 32s -> 16s -> 8s)")
    opt("--iters", "iterations to train in all (with --resume: the new total)", type=int)
    p.add_argument("--seconds", type=float, default=None,
                   help="train for about this long instead of --iters (iterations are timed first; with "
                        "--resume: this much longer)")
    opt("--lr", "base learning rate", type=float)
    opt("--momentum", type=float)
    opt("--weight-decay", type=float)
    opt("--policy", "lr policy", choices=("poly", "constant"))
    opt("--warmup", "linear warm-up iterations", type=int)
    opt("--iter-size", "gradient accumulation passes per step", type=int)
    opt("--normalize", "average the loss over pixels or sum it (Caffe; needs a tiny lr, e.g. 1e-10 at full "
                       "width with momentum 0.99)", action=argparse.BooleanOptionalAction)
    opt("--class-weights", "weight the loss by class frequency ** -0.5", action=argparse.BooleanOptionalAction)
    opt("--dropout", "dropout probability in [0, 1)", type=float)
    p.add_argument("--learn-upsampling", action="store_true", default=S)
    p.add_argument("--same-padding", action="store_true", default=S,
                   help="FCNs: pad conv1_1 by 1 and fc6 by 3 instead of conv1_1 by 100 (2.3x fewer trunk "
                        "pixels at 384 px; the heads crop the upsampled scores instead of the skips)")
    opt("--grid", "GRID x GRID random crops per canvas", type=int)
    opt("--crop", "crop size in pixels", type=int)
    opt("--val-every", "validate every N iterations and at the end (0: never)", type=int)
    p.add_argument("--val-limit", type=int, default=S, help="validate on a subset of this many images")
    opt("--checkpoint-every", "write a checkpoint every N iterations", type=int)
    opt("--log-every", "log the mean loss every N iterations", type=int)
    opt("--seed", type=int)
    opt("--out", "run folder (log, checkpoint, curves)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT (OUT/checkpoint.npz)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in OUT")
    opt("--backend", choices=("numpy", "cupy"))


def given_fields(args) -> dict:
    """The :class:`TrainConfig` fields given on the command line."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in fields}


def config_from_args(args) -> TrainConfig:
    return TrainConfig(**given_fields(args))


def stored_config(config: TrainConfig, given=None) -> TrainConfig:
    """The settings saved in ``config.out``'s checkpoint, with the :data:`RESUMABLE` ones of
    ``given`` (default: all of ``config``'s resumable fields) applied; ``config`` if there
    is no checkpoint. Raises ValueError naming a given flag that may not change."""
    from .io import load_npz, meta_field

    path = os.path.join(config.out, "checkpoint.npz")
    if not os.path.isfile(path):
        return config
    meta = load_npz(path)[1]
    if not isinstance(meta.get("train"), dict):
        raise ValueError(f"{path} holds a model but no training state, so it cannot be resumed; "
                         f"start a new run from it with --init-from {path} and another --out")
    held = meta_field(meta["train"], "config", dict, path, "training state")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: getattr(config, k) for k in RESUMABLE} if given is None else given
    check_resume(held, dataclasses.replace(TrainConfig(**{k: v for k, v in held.items() if k in fields}),
                                           **given), path)
    merged = {**{k: v for k, v in held.items() if k in fields},
              **{k: v for k, v in given.items() if k in RESUMABLE}, "out": config.out}
    try:
        return TrainConfig(**merged)
    except TypeError as exc:
        raise ValueError(f"{path} has a damaged training config: {exc}") from None


def main(args) -> int:
    from .evaluate import format_metrics

    given = given_fields(args)
    if args.seconds is not None:
        if "iters" in given:
            raise ValueError("give --iters or --seconds, not both")
        if not (math.isfinite(args.seconds) and args.seconds > 0):
            raise ValueError(f"--seconds {args.seconds}: expected a positive number of seconds")
    if args.resume and args.overwrite:
        raise ValueError("give --resume or --overwrite, not both")
    config = config_from_args(args)
    config.check()
    resuming = check_run_folder(config.out, args.resume, args.overwrite)
    done = 0
    if resuming:
        config = stored_config(config, given)
        config.check()
        from .io import load_npz

        done = int(load_npz(os.path.join(config.out, "checkpoint.npz"))[1]["train"].get("iteration", 0))
    if args.seconds is not None:
        n, per_iter = iterations_for(args.seconds, config)
        config.iters = done + n
        print(f"{per_iter:.3f} s per iteration: training {n} iterations" + (f" (to {config.iters})" if done else ""))
    if resuming and config.iters < done:
        raise ValueError(f"--iters {config.iters} is below the {done} iterations {config.out} already holds; "
                         f"give a larger --iters (or --seconds) to extend the run")
    if resuming and done >= config.iters:
        print(f"{config.out} already holds all {done} iterations; nothing to train (extend it with --iters N "
              f"above {done}, or --seconds S)")
        return 0
    trainer = Trainer(config, resume=args.resume, overwrite=args.overwrite)
    first, started = trainer.iteration, time.perf_counter()
    try:
        result = trainer.run()
    except TrainingDiverged as exc:
        print(f"minifcn train: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(str(exc), file=sys.stderr)
        return 130
    took = time.perf_counter() - started
    from .io import _duration
    print(f"trained iterations {first + 1}-{trainer.iteration} in {_duration(took)} "
          f"({(trainer.iteration - first) / max(took, 1e-9):.2f} it/s"
          + (", validation included)" if config.val_every else ")"))
    if result is not None:
        print(format_metrics(result))
    print(f"checkpoint {trainer.ckpt_path}, log {trainer.log_path}, curves {trainer.out / 'curves.png'}")
    return 0
