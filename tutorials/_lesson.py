"""Set-up shared by the lessons: where figures go, and minifcn importable from a checkout.

Every lesson starts with ``from _lesson import savefig, FIGURES``. This works when a
lesson runs as a script (``python tutorials/01_....py`` from any folder) and when it is
stepped as a notebook whose working folder is ``tutorials/``.

Figures go to the folder named by the environment variable ``MINIFCN_FIGURES``
(default ``tutorials/figures/``). ``MINIFCN_FULL=1`` asks the lessons that train for
the long runs (``FULL``).

Also here: :func:`load_checkpoint` (the small trained nets in ``tutorials/checkpoints/``,
made by ``python tutorials/train_checkpoints.py``), :func:`val_samples` (the lessons'
validation images of the built-in data set) and :func:`class_legend` (the colour key
that every label picture carries).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

try:  # an installed minifcn (pip install -e .) wins; otherwise use this checkout
    import minifcn  # noqa: F401
except ImportError:
    sys.path.insert(0, str(HERE.parent))

os.environ.setdefault("MPLBACKEND", "Agg")  # scripts draw into files; notebooks keep their own backend
import matplotlib  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

FIGURES = Path(os.environ.get("MINIFCN_FIGURES") or HERE / "figures")
CHECKPOINTS = Path(os.environ.get("MINIFCN_CHECKPOINTS") or HERE / "checkpoints")
FULL = os.environ.get("MINIFCN_FULL", "") not in ("", "0")


def savefig(fig, name: str) -> Path:
    """Write ``fig`` as ``FIGURES/name`` (PNG) and return the path.

    In a notebook with the inline backend the figure stays open so it is shown
    under the cell; in a script it is closed to free memory.
    """
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / name
    fig.savefig(path, dpi=90, bbox_inches="tight")
    if "inline" not in matplotlib.get_backend().lower():
        plt.close(fig)
    print(f"figure: {path}")
    return path


def load_checkpoint(name: str):
    """The trained ``name`` ("fcn32s", "fcn16s", "fcn8s") from ``tutorials/checkpoints/``, in
    float32 and eval mode, and the checkpoint's metadata.

    The files hold float16 parameters; ``load_model(..., dtype="float32")`` casts them
    (without ``dtype`` the model would be built in float16).
    """
    from minifcn.io import load_npz
    from minifcn.models import load_model

    path = CHECKPOINTS / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python tutorials/train_checkpoints.py {name}`")
    _, meta = load_npz(path)
    return load_model(path, dtype="float32").eval(), meta


def val_samples(n: int):
    """``n`` validation images of the built-in data set, drawn in memory: sample i comes
    from the generator seeded ``[1, i]``, never seen in training (the trainer's stream is
    seeded ``[seed, 3]``). Returns a list of ``(image uint8 (H, W, 3), label uint8 (H, W))``."""
    import numpy as np
    from minifcn.data.synthetic import sample

    return [sample(np.random.default_rng([1, i])) for i in range(n)]


def class_legend(fig, class_names=None, void=True, **kwargs):
    """Add the colour key of the label pictures (minifcn.viz.colorize's VOC palette) below ``fig``."""
    from matplotlib.patches import Patch
    from minifcn.data.synthetic import CLASS_NAMES
    from minifcn.viz import voc_palette

    names = list(class_names or CLASS_NAMES)
    palette = voc_palette() / 255.0
    handles = [Patch(facecolor=palette[i], edgecolor="0.5", label=f"{i} {n}") for i, n in enumerate(names)]
    if void:
        handles.append(Patch(facecolor=palette[255], edgecolor="0.5", label="255 void (ignored)"))
    options = dict(loc="lower center", ncol=len(handles), bbox_to_anchor=(0.5, -0.02), frameon=False,
                   fontsize=9)
    options.update(kwargs)
    return fig.legend(handles=handles, **options)
