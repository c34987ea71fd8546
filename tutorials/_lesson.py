"""Set-up shared by the lessons: where figures go, and minifcn importable from a checkout.

Every lesson starts with ``from _lesson import savefig, FIGURES``. This works when a
lesson runs as a script (``python tutorials/01_....py`` from any folder) and when it is
stepped as a notebook whose working folder is ``tutorials/``.

Figures go to the folder named by the environment variable ``MINIFCN_FIGURES``
(default ``tutorials/figures/``).
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
