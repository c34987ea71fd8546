"""Every lesson in tutorials/ runs as a script, checks its claims and draws its figures.

Each lesson is run in a fresh interpreter from an unrelated working folder (lessons
must find minifcn and their helper on their own), with ``MINIFCN_FIGURES`` pointing at
a temporary folder; the test asserts exit status 0 and that every figure the lesson
names was written. A second, cheap test checks that every lesson steps cleanly as
notebook cells: percent-format cells that each compile on their own.
"""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
LESSONS = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
FIGURE = re.compile(r"""["'](\d\d_[\w]+\.png)["']""")


def test_lessons_present():
    numbers = [int(p.name[:2]) for p in LESSONS]
    assert numbers == list(range(1, 9)), [p.name for p in LESSONS]


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
