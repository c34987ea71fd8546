"""The ``minifcn`` command. Each verb lives in its own module, which provides
``add_arguments(parser)`` and ``main(args) -> int``; this table is the only list of verbs."""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

# verb -> (module, one-line help)
COMMANDS = {
    "selftest": ("minifcn.selftest", "gradient-check every layer on a backend and print a table"),
    "make-dataset": ("minifcn.data.synthetic", "write the built-in shapes data set as a VOCdevkit tree"),
    "train": ("minifcn.train", "train an FCN on the built-in data set or a VOC folder"),
    "eval": ("minifcn.evaluate", "evaluate a checkpoint: the four metrics, per-class IU chart, prediction tiles"),
    "predict": ("minifcn.evaluate:predict_verb", "segment images: palette PNG label maps and overlays"),
    "demo": ("minifcn.demo", "build the built-in data set, train a small FCN-8s, evaluate, draw pictures"),
    "bench": ("minifcn.bench", "time a training step (forward, backward, SGD) per layer type, optionally against PyTorch"),
    "convert": ("minifcn.convert", "turn a PyTorch state dict (VGG16 or torchfcn FCN) into a minifcn .npz"),
    "download-voc": ("minifcn.data.download", "download PASCAL VOC 2012 (resumable, checksummed) and extract it safely"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minifcn", description="Fully Convolutional Networks from scratch "
                                     "(NumPy/CuPy, hand-written backward passes).")
    parser.add_argument("--version", action="version", version=f"minifcn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        module, _, attr = module.partition(":")  # "package.module" or "package.module:object"
        mod = importlib.import_module(module)
        mod = getattr(mod, attr) if attr else mod
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
