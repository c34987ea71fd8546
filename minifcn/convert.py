"""``minifcn convert IN.pth OUT.npz``: a PyTorch state dict to a minifcn .npz (needs torch).

Two kinds of input are recognised by their keys:

* a torchvision VGG16 classifier (``features.0.weight``, ``classifier.0.weight``, ...):
  written as is, for ``model.load_vgg16(OUT.npz)``;
* an FCN in torchfcn naming (``conv1_1.weight``, ``score_fr.weight``, ``upscore*.weight``):
  written with the model config (name, n_class and width read from the shapes), so
  ``minifcn.models.load_model(OUT.npz)`` rebuilds it. FCN-8s and FCN-8s-at-once have
  the same keys: ``--model fcn8s-atonce`` picks the latter.

PyTorch is only needed here; it is imported when the command runs.
"""
from __future__ import annotations

import os
import sys

from .io import save_npz
from .models.vgg import FC_CHANNELS, STAGES, channels

# final upsampling layer -> model name
_FCN_BY_FINAL = {"upscore.weight": "fcn32s", "upscore16.weight": "fcn16s", "upscore8.weight": "fcn8s"}


def add_arguments(parser):
    parser.add_argument("input", help="PyTorch state dict (.pth): torchvision VGG16 or a torchfcn FCN")
    parser.add_argument("output", help="the .npz to write")
    parser.add_argument("--model", choices=["fcn8s", "fcn8s-atonce"],
                        help="which of the two nets an FCN-8s state dict is (default fcn8s)")


def _state_dict(obj):
    """The {name: tensor} dict inside a loaded .pth (a bare state dict or a training checkpoint)."""
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def describe(arrays: dict, model_name=None) -> dict:
    """The metadata for a converted state dict: its kind and, for an FCN, its model config."""
    if "features.0.weight" in arrays:
        return {"kind": "vgg16-torchvision"}
    final = [k for k in _FCN_BY_FINAL if k in arrays]
    if "conv1_1.weight" not in arrays or "score_fr.weight" not in arrays or len(final) != 1:
        raise ValueError("state dict is neither a torchvision VGG16 (features.0.weight) nor a torchfcn "
                         "FCN (conv1_1.weight, score_fr.weight, one of upscore/upscore16/upscore8); "
                         f"first keys: {', '.join(list(arrays)[:6])}")
    name = _FCN_BY_FINAL[final[0]]
    if model_name is not None:
        if name != "fcn8s":
            raise ValueError(f"--model {model_name} given but the state dict is an {name}")
        name = model_name
    needed = [f"conv{b}_1.weight" for b in range(1, len(STAGES) + 1)] + ["fc6.weight"]
    if any(k not in arrays for k in needed):
        raise ValueError(f"FCN state dict lacks {', '.join(k for k in needed if k not in arrays)}")
    width = arrays["conv1_1.weight"].shape[0] / STAGES[0][0]
    found = [arrays[k].shape[0] for k in needed]
    wanted = [channels(c, width) for c, _ in STAGES] + [channels(FC_CHANNELS, width)]
    if found != wanted:
        raise ValueError(f"channel counts {found} of conv1_1 ... conv5_1, fc6 do not follow one width "
                         f"multiplier (width {width} would give {wanted})")
    config = {"name": name, "n_class": int(arrays["score_fr.weight"].shape[0]), "width": width,
              "learn_upsampling": False, "dropout": 0.5, "seed": 0}
    return {"kind": "fcn-torchfcn", "model": config}


def convert(src, dst, model_name=None) -> dict:
    """Convert ``src`` (.pth) to ``dst`` (.npz); returns the metadata written."""
    try:
        import torch
    except ImportError:
        raise RuntimeError("minifcn convert reads PyTorch .pth files and needs PyTorch: "
                           "pip install torch (the CPU build is enough)") from None
    if not os.path.isfile(src):
        raise FileNotFoundError(f"no such file: {src}")
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{src} is not a PyTorch state dict that loads without pickled code: {exc}") from None
    state = _state_dict(obj)
    if not isinstance(state, dict):
        raise ValueError(f"{src} holds a {type(state).__name__}, not a state dict")
    arrays = {k: v.detach().cpu().numpy() for k, v in state.items() if isinstance(v, torch.Tensor)}
    meta = describe(arrays, model_name)
    meta["source"] = os.path.basename(src)
    save_npz(dst, arrays, meta)
    return meta


def main(args) -> int:
    try:
        meta = convert(args.input, args.output, args.model)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"minifcn convert: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    what = meta.get("model", {}).get("name", meta["kind"])
    print(f"wrote {args.output} ({what})")
    return 0
