"""Files and downloads: save_npz refuses keys np.savez would swallow; a URL without a file
name, an HTML page instead of a tar and a truncated tar leave nothing that blocks a rerun;
progress in a pipe is a few plain lines; prediction pictures have no empty bands."""
import io
import os

import numpy as np
import pytest

from minifcn.cli import main as cli
from minifcn.data.download import download_voc
from minifcn.io import LineProgress, load_npz, progress, save_npz
from test_download import server, voc_tar  # noqa: F401 - the loopback server fixture


@pytest.mark.parametrize("key", ["allow_pickle", "file"])
def test_save_npz_refuses_keys_savez_would_lose(tmp_path, key):
    with pytest.raises(ValueError, match=f"array key '{key}'.*would be lost"):
        save_npz(tmp_path / "a.npz", {key: np.zeros(3), "b": np.ones(2)})
    assert not (tmp_path / "a.npz").exists()
    save_npz(tmp_path / "a.npz", {"allow_pickle_x": np.zeros(3), "optim/allow_pickle": np.ones(2)})
    assert sorted(load_npz(tmp_path / "a.npz")[0]) == ["allow_pickle_x", "optim/allow_pickle"]


def test_html_instead_of_a_tar_is_not_kept(server, tmp_path, capsys):  # noqa: F811
    server.files["/voc/VOC.tar"] = b"<!DOCTYPE html><html><body>Index of /voc</body></html>"
    assert cli(["download-voc", str(tmp_path), "--url", server.url + "/voc/VOC.tar", "--md5", "none"]) == 2
    err = capsys.readouterr().err
    assert "HTML page" in err.splitlines()[-1] and "not a tar" in err and err.count("error") == 1
    assert os.listdir(tmp_path) == []  # nothing reused by the next run
    server.files["/voc/VOC.tar"] = voc_tar()
    assert cli(["download-voc", str(tmp_path), "--url", server.url + "/voc/VOC.tar", "--md5", "none"]) == 0


def test_truncated_tar_leaves_nothing_that_blocks_a_rerun(server, tmp_path, capsys):  # noqa: F811
    data = voc_tar()
    server.files["/VOC.tar"] = data[: len(data) // 2]
    with pytest.raises(ValueError, match="truncated or corrupt|holds no VOC2012"):
        download_voc(tmp_path, url=server.url + "/VOC.tar", md5=None, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["VOC.tar"]  # no partial VOCdevkit, no .extract-* folder
    (tmp_path / "VOC.tar").unlink()
    server.files["/VOC.tar"] = data
    assert download_voc(tmp_path, url=server.url + "/VOC.tar", md5=None, progress=False).name == "VOC2012"


def test_line_progress_for_pipes():
    out = io.StringIO()
    bar = progress(total=1000, desc="train fcn8s", unit="it", file=out, dynamic_ncols=True)
    assert isinstance(bar, LineProgress)  # a StringIO is not a terminal
    for _ in range(1000):
        bar.update(1)
        bar.set_postfix(loss="0.5")
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 10
    assert lines[0].startswith("train fcn8s: 100/1000 (10%) it") and lines[-1].startswith("train fcn8s: 1000/1000 (100%)")
    assert "loss=0.5" in lines[-1]
    quiet = io.StringIO()
    assert list(progress(range(5), file=quiet, disable=True)) == list(range(5)) and quiet.getvalue() == ""


def test_piped_training_log_is_short(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "minifcn", "train", "--model", "fcn32s", "--width", "0.0625",
                          "--crop", "32", "--iters", "40", "--val-every", "20", "--val-limit", "2",
                          "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "MINIFCN_CACHE": str(tmp_path / "cache"), "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr
    assert len(out.stderr.splitlines()) <= 30, out.stderr


def _blank_rows(path):
    """The longest run of pure-white pixel rows strictly between non-white rows."""
    from PIL import Image

    a = np.asarray(Image.open(path).convert("RGB"))
    white = (a >= 250).all(axis=(1, 2))
    content = np.flatnonzero(~white)
    runs, run = [], 0
    for w in white[content[0]:content[-1] + 1]:
        run = run + 1 if w else 0
        runs.append(run)
    return max(runs), a.shape[0]


@pytest.mark.parametrize("shapes", [[(120, 160)] * 4, [(160, 96), (100, 150), (375, 500)]])
def test_prediction_tiles_have_no_empty_bands(tmp_path, shapes):
    from minifcn.viz import save_prediction_tiles

    rng = np.random.default_rng(0)
    ims = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in shapes]
    labels = [rng.integers(0, 3, (h, w)).astype(np.uint8) for h, w in shapes]
    save_prediction_tiles(ims, labels, labels, tmp_path / "p.png", ["a", "b", "c"])
    gap, height = _blank_rows(tmp_path / "p.png")
    assert gap <= 0.03 * height, (gap, height)  # was: bands of a quarter of the height


def test_compare_picture_has_no_empty_bands(tmp_path):
    from minifcn.demo import plot_comparison

    rng = np.random.default_rng(1)
    samples = [(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), rng.integers(0, 3, (h, w)).astype(np.uint8))
               for h, w in [(96, 160), (150, 100), (128, 128)]]
    preds = {n: [s[1] for s in samples] for n in ("fcn32s", "fcn16s", "fcn8s")}
    plot_comparison(samples, preds, tmp_path / "c.png", ["background", "disk", "ring"])
    gap, height = _blank_rows(tmp_path / "c.png")
    assert gap <= 0.03 * height, (gap, height)


def test_compare_picture_has_a_class_legend(tmp_path, monkeypatch):
    from minifcn import demo, viz

    seen = []
    real = viz.class_legend
    monkeypatch.setattr(viz, "class_legend", lambda fig, ids, names: seen.append((set(ids), names)) or real(fig, ids, names))
    label = np.array([[0, 2], [2, 255]], np.uint8)
    demo.plot_comparison([(np.zeros((2, 2, 3), np.uint8), label)], {"fcn8s": [np.array([[1, 1], [0, 0]])]},
                         tmp_path / "c.png", ["background", "disk", "ring"])
    assert seen == [({0, 1, 2, 255}, ["background", "disk", "ring"])]
