"""Every lesson in tutorials/ runs as a script, checks its claims and draws its figures.

Each lesson is run in a fresh interpreter from an unrelated working folder (lessons
must find minifcn and their helper on their own), with ``MINIFCN_FIGURES`` pointing at
a temporary folder; the test asserts exit status 0 and that every figure the lesson
names was written. A second, cheap test checks that every lesson steps cleanly as
notebook cells: percent-format cells that each compile on their own. When jupytext,
nbclient and ipykernel are installed (``pip install -e ".[tutorials]"``), every lesson
is converted to a notebook and one short lesson is executed in a Jupyter kernel, cell
by cell, as a learner would step through it. The trained checkpoints the lessons load
are checked to load in float32 through ``minifcn.models.load_model``.
"""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
LESSONS = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
FIGURE = re.compile(r"""["'](\d\d_[\w]+\.png)["']""")


def test_lessons_present():
    numbers = [int(p.name[:2]) for p in LESSONS]
    assert len(set(numbers)) == len(numbers), [p.name for p in LESSONS]
    assert numbers == list(range(1, 13)), [p.name for p in LESSONS]
    order = [p.stem for p in LESSONS[:7]]
    assert order.index("06_loss_metrics_training") < order.index("07_skip_fusion")   # loss and metrics first


@pytest.mark.parametrize("name", sorted(p.stem for p in (TUTORIALS / "checkpoints").glob("*.npz")))
def test_checkpoints_load(name):
    from minifcn.io import load_npz
    from minifcn.models import load_model

    path = TUTORIALS / "checkpoints" / f"{name}.npz"
    assert path.is_file(), f"{path} missing: python tutorials/train_checkpoints.py {name}"
    assert path.stat().st_size < 6e6
    arrays, meta = load_npz(path)
    assert name == meta["model"]["name"] or name.startswith(meta["model"]["name"] + "-")   # e.g. segnet-4500
    assert meta["train"]["iterations"] > 0
    assert all(a.dtype == np.float16 for k, a in arrays.items() if "/" not in k)
    model = load_model(path, dtype="float32")
    params = dict(model.named_parameters())
    assert params and all(str(p.data.dtype) == "float32" for p in params.values())
    key = next(iter(params))
    assert np.array_equal(np.asarray(params[key].data), arrays[key].astype(np.float32))


def test_checkpoints_present():
    have = {p.stem for p in (TUTORIALS / "checkpoints").glob("*.npz")}
    assert {"fcn32s", "fcn16s", "fcn8s", "deeplab-largefov"} <= have, sorted(have)


def test_notebooks_convert(tmp_path):
    pytest.importorskip("jupytext")
    sys.path.insert(0, str(TUTORIALS))
    import make_notebooks

    assert make_notebooks.main(["--out", str(tmp_path)]) == 0
    import nbformat

    for path in LESSONS:
        nb = nbformat.read(tmp_path / (path.stem + ".ipynb"), as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert len(code) == 1 + sum(kind == "code" for kind, _ in cells(path))    # + the sys.path cell
        assert "from _lesson import" in code[1].source


def test_lesson_runs_as_notebook(tmp_path, monkeypatch):
    for module in ("jupytext", "nbclient", "ipykernel"):
        pytest.importorskip(module)
    sys.path.insert(0, str(TUTORIALS))
    import make_notebooks

    figures = tmp_path / "figures"
    monkeypatch.setenv("MINIFCN_FIGURES", str(figures))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    lesson = TUTORIALS / "10_dilated_convolution.py"
    nb = make_notebooks.execute(make_notebooks.to_notebook(lesson, tmp_path), tmp_path, timeout=170)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "max |shift-and-stitch - a trous|" in text
    assert {"10_receptive_field.png", "10_shift_and_stitch.png", "10_gridding.png"} <= \
        {p.name for p in figures.glob("*.png")}


def cells(path):
    """Split a percent-format file into (kind, source) cells."""
    out, kind, lines = [], None, []
    for line in path.read_text().splitlines():
        if line.startswith("# %%"):
            if kind is not None:
                out.append((kind, "\n".join(lines)))
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        else:
            lines.append(line)
    out.append((kind, "\n".join(lines)))
    return out


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_cells(path):
    parts = cells(path)
    assert parts[0][0] == "markdown", "a lesson opens with a markdown cell saying what it shows"
    assert parts[-1][0] == "markdown", "a lesson closes with a markdown summary"
    code = [src for kind, src in parts if kind == "code"]
    for kind, src in parts:
        if kind == "markdown":
            assert all(not line.strip() or line.startswith("#") for line in src.splitlines()), \
                "markdown cells hold only comment lines"
        else:
            compile(src, f"{path.name} cell", "exec")          # each cell compiles on its own
    source = path.read_text()
    assert "from _lesson import" in code[0]
    assert sum(isinstance(n, ast.Assert) for n in ast.walk(ast.parse(source))) >= 5, "claims are asserted"
    assert "import torch" not in source


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs(path, tmp_path):
    figures = tmp_path / "figures"
    env = {**os.environ, "MINIFCN_FIGURES": str(figures), "MPLBACKEND": "Agg", "MINIFCN_FULL": "0"}
    for var in ("MINIFCN_VOC_ROOT", "MINIFCN_VGG16"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, f"{path.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    expected = set(FIGURE.findall(path.read_text()))
    assert expected, f"{path.name} names no figure"
    written = {p.name for p in figures.glob("*.png")}
    assert expected <= written, f"missing figures: {sorted(expected - written)}"
    assert all((figures / name).stat().st_size > 1000 for name in expected)
