"""The ``minifcn`` command. Each verb lives in its own module, which provides
``add_arguments(parser)`` and ``main(args) -> int``; this table is the only list of verbs.

Errors: a bad flag, a bad data file, a bad checkpoint, a missing CuPy ... end in ONE
line on stderr, ``minifcn VERB: error: ...`` naming the file or flag and what was
expected, with exit code 2. A traceback is shown only with ``--debug`` (before or after
the verb) or ``MINIFCN_DEBUG=1``. An error that is a bug in minifcn itself also gets one
line (exit code 1) that says how to see the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__

# verb -> (module, one-line help)
COMMANDS = {
    "selftest": ("minifcn.selftest", "gradient-check every layer on a backend and print a table"),
    "make-dataset": ("minifcn.data.synthetic", "write the built-in shapes data set as a VOCdevkit tree"),
    "train": ("minifcn.train", "train an FCN on the built-in data set or a VOC folder"),
    "eval": ("minifcn.evaluate", "evaluate a checkpoint: the four metrics, per-class IU chart, prediction tiles "
                                 "(--crf: also after the dense CRF, side by side)"),
    "predict": ("minifcn.evaluate:predict_verb", "segment images: palette PNG label maps and overlays "
                                                 "(--crf: refined by the dense CRF)"),
    "demo": ("minifcn.demo", "build the built-in data set, train a small FCN-8s, evaluate, draw pictures "
                             "(--compare: every architecture, without and with the dense CRF)"),
    "bench": ("minifcn.bench", "time a training step (forward, backward, SGD) per layer type, optionally against PyTorch"),
    "convert": ("minifcn.convert", "turn a PyTorch state dict (VGG16 or torchfcn FCN) into a minifcn .npz"),
    "download-voc": ("minifcn.data.download", "download PASCAL VOC 2012 (resumable, checksummed) and extract it safely"),
}

# what counts as the user's problem (bad input, file, flag, environment): one line, exit 2
USER_ERRORS = (ValueError, OSError, RuntimeError, MemoryError, LookupError)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``minifcn VERB: error: MESSAGE (see --help)``, exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="minifcn", description="Fully Convolutional Networks from scratch "
                     "(NumPy/CuPy, hand-written backward passes).")
    parser.add_argument("--version", action="version", version=f"minifcn {__version__}")
    debug = dict(action="store_true", default=argparse.SUPPRESS,
                 help="show the full traceback of an error (also: MINIFCN_DEBUG=1)")
    parser.add_argument("--debug", **debug)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        module, _, attr = module.partition(":")  # "package.module" or "package.module:object"
        mod = importlib.import_module(module)
        mod = getattr(mod, attr) if attr else mod
        mod.add_arguments(p)
        p.add_argument("--debug", **debug)
        p.set_defaults(_main=mod.main)
    return parser


def debugging(args=None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("MINIFCN_DEBUG", "") not in ("", "0")


def one_line(exc) -> str:
    """The message of ``exc`` on one line (FileNotFoundError's "[Errno 2] ..." kept short)."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        text = f"{exc.filename}: {exc.strerror}"
    text = " ".join(text.split())
    if isinstance(exc, MemoryError):
        text = "out of memory" + (f" ({text})" if text else "") + "; try a smaller --width, --crop or image"
    elif isinstance(exc, KeyError):
        text = f"missing entry {text}"
    return text or type(exc).__name__


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    prog = f"minifcn {args.command}"
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt as exc:
        if debugging(args):
            raise
        print(str(exc) or "interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if debugging(args):
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: still one line, the traceback on request
        if debugging(args):
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {one_line(exc)} (a bug in minifcn; rerun with "
              f"--debug or MINIFCN_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
