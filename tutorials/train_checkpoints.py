"""Train the small checkpoints the lessons load: FCN-32s, FCN-16s, FCN-8s (lessons 6, 7, 12),
DeepLab-LargeFOV (lesson 11) and SegNet (lesson 9).

    python tutorials/train_checkpoints.py                          # the three FCNs
    python tutorials/train_checkpoints.py deeplab-largefov segnet  # the other two
    python tutorials/train_checkpoints.py fcn8s                    # just one
    python tutorials/train_checkpoints.py segnet --iters 4500 --suffix -4500   # lesson 9's longer run

About 3-8 minutes per net on a quiet 2-core CPU (measured 184 s for DeepLab-LargeFOV,
358 s for SegNet, 479-1004 s for the FCNs on a shared one).

Each net is trained from scratch on the built-in data set with minifcn's own trainer
(:class:`minifcn.train.Trainer`) and the demo's recipe (``minifcn.demo.RECIPE``: width
1/8, SGD momentum 0.9, lr 0.01 with a 50-step warm-up and poly decay, class weights, no
dropout) but 2 x 2 crops of up to 128 px per canvas (:data:`GRID`; the demo has since
moved to 3 x 3, and its FCNs to the same-padding trunk; these FCNs keep the paper's
100-pixel margin), for a fixed number of iterations and a fixed seed, so the same
command gives the same nets (up to the last bits of multi-threaded float32 sums). All
nets get the same recipe and the same number of iterations: the lessons compare them
like for like.

The parameters are stored as float16 in ``tutorials/checkpoints/<name>.npz`` (4.2-4.5 MB
for the FCNs, under 1 MB for the others) with the usual minifcn metadata, so ``minifcn.models.load_model(path,
dtype="float32")`` rebuilds the net in float32 (without ``dtype`` the net would stay
float16). The training settings, iterations, seconds and final loss are in
``meta["train"]``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    import minifcn  # noqa: F401
except ImportError:  # run from a checkout without pip install -e .
    sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

from minifcn.demo import RECIPE  # noqa: E402
from minifcn.io import save_npz  # noqa: E402
from minifcn.train import TrainConfig, Trainer  # noqa: E402

CHECKPOINTS = HERE / "checkpoints"
NAMES = ("fcn32s", "fcn16s", "fcn8s")
OPTIONAL = ("deeplab-largefov", "segnet")      # later lessons; trained only when named
ITERS = 1500
SEED = 0
GRID = 2      # the checkpoints in tutorials/checkpoints/ were trained with 2 x 2 canvases


def train_one(name, iters=ITERS, seed=SEED, out_dir=CHECKPOINTS, progress=True, suffix=""):
    """Train ``name`` and write ``out_dir/<name><suffix>.npz`` (float16); returns the path."""
    with tempfile.TemporaryDirectory(prefix=f"minifcn-{name}-") as work:
        config = TrainConfig(out=work, data="builtin", model=name, seed=seed, iters=iters, val_every=0,
                             checkpoint_every=10 ** 9, log_every=25, **{**RECIPE, "grid": GRID})
        start = time.perf_counter()
        trainer = Trainer(config, progress=progress)
        trainer.run()
        seconds = time.perf_counter() - start
    losses = [(r["iteration"], r["loss"]) for r in trainer.history if "loss" in r]
    arrays = {k: np.asarray(v, dtype=np.float16) for k, v in trainer.model.state_dict().items()}
    meta = {"model": trainer.model.config, "class_names": trainer.batches.class_names,
            "train": {"config": dataclasses.asdict(config), "iterations": iters, "seconds": round(seconds, 1),
                      "losses": losses,
                      "command": f"python tutorials/train_checkpoints.py {name}"
                                 + (f" --iters {iters}" if iters != ITERS else "")
                                 + (f" --suffix {suffix}" if suffix else "")}}
    meta["train"]["config"]["out"] = None
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}{suffix}.npz"
    save_npz(path, arrays, meta)
    print(f"{name}: {iters} iterations in {seconds:.0f} s, loss {losses[0][1]:.3f} -> {losses[-1][1]:.3f}, "
          f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", flush=True)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help=f"any of {', '.join(NAMES + OPTIONAL)} (default: the three FCNs)")
    p.add_argument("--iters", type=int, default=ITERS, help="iterations per net (default %(default)s)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--out", default=str(CHECKPOINTS), help="folder (default tutorials/checkpoints)")
    p.add_argument("--suffix", default="", help="file name suffix, e.g. -4500 for segnet-4500.npz")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    bad = [m for m in args.models if m not in NAMES + OPTIONAL]
    if bad:
        p.error(f"unknown model {bad[0]!r}; expected one of {', '.join(NAMES + OPTIONAL)}")
    for name in args.models or NAMES:
        train_one(name, args.iters, args.seed, Path(args.out), progress=not args.no_progress, suffix=args.suffix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
