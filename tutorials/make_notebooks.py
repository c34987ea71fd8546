"""Write the lessons as Jupyter notebooks (and optionally run them).

    pip install -e ".[tutorials]"                      # jupytext, nbclient, ipykernel
    python tutorials/make_notebooks.py                 # tutorials/NN_name.ipynb for every lesson
    python tutorials/make_notebooks.py 10 --execute    # lesson 10 only, run top to bottom, outputs saved

The lessons stay the source of truth: plain ``.py`` files in the percent format, which
jupytext reads cell by cell (``# %%`` code, ``# %% [markdown]`` prose). The notebooks
are written beside them in ``tutorials/`` (git ignores them) because a notebook's kernel
starts in the notebook's folder, and the lessons' first cell, ``from _lesson import
...``, needs ``tutorials/_lesson.py`` there. ``--out DIR`` writes elsewhere; DIR's
notebooks then find the helper because this script adds ``tutorials/`` to the kernel's
``sys.path`` in a first, hidden set-up cell only when DIR is not ``tutorials/``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def lessons(selected=()):
    """Lesson files, all or those whose number or name starts with one of ``selected``."""
    paths = sorted(HERE.glob("[0-9][0-9]_*.py"))
    if selected:
        paths = [p for p in paths if any(p.name.startswith(s.zfill(2)) or p.stem == s for s in selected)]
    return paths


def to_notebook(path, out_dir=HERE):
    """Read lesson ``path`` with jupytext and return the notebook (nbformat)."""
    import jupytext
    import nbformat

    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    if Path(out_dir).resolve() != HERE:
        setup = nbformat.v4.new_code_cell(f"import sys; sys.path.insert(0, {str(HERE)!r})  # find _lesson.py")
        setup.metadata["tags"] = ["remove-cell"]
        nb.cells.insert(0, setup)
    return nb


def execute(nb, cwd, timeout=600):
    """Run every cell of ``nb`` in a fresh kernel started in ``cwd``; raises on the first error."""
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name=KERNELSPEC["name"],
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all)")
    p.add_argument("--out", default=str(HERE), help="folder for the .ipynb files (default tutorials/)")
    p.add_argument("--execute", action="store_true", help="run each notebook and keep its outputs")
    args = p.parse_args(argv)
    try:
        import jupytext  # noqa: F401
        if args.execute:
            import nbclient  # noqa: F401
    except ImportError as exc:
        print(f"make_notebooks: {exc.name} is missing; pip install -e \".[tutorials]\"", file=sys.stderr)
        return 2
    import nbformat

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = lessons(args.lessons)
    if not paths:
        print(f"make_notebooks: no lesson matches {args.lessons}", file=sys.stderr)
        return 2
    for path in paths:
        nb = to_notebook(path, out)
        if args.execute:
            execute(nb, out)
        target = out / (path.stem + ".ipynb")
        nbformat.write(nb, target)
        print(f"wrote {target}" + (" (executed)" if args.execute else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
