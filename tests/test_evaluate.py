"""Evaluation against a pixel-by-pixel count, prediction at any image size, and the
eval / predict commands with their errors."""
import json

import numpy as np
import pytest
from PIL import Image

from minifcn.cli import main as cli
from minifcn.data import VOCSegmentation
from minifcn.data.synthetic import make_dataset
from minifcn.evaluate import evaluate, predict
from minifcn.models import build


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny data set and an FCN-8s with random (non-zero) score layers, saved."""
    tmp = tmp_path_factory.mktemp("eval")
    root = make_dataset(tmp / "data", n_train=1, n_val=3, seed=2, progress=False)
    model = build("fcn8s", n_class=6, width=1 / 16, seed=1)
    rng = np.random.default_rng(0)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        w = getattr(model, name).weight
        w.data = rng.standard_normal(w.shape).astype(np.float32)
    model.save(tmp / "model.npz", {"class_names": list(VOCSegmentation(root).class_names)})
    return tmp, root, model.eval()


def test_evaluate_matches_pixel_count(setup):
    _, root, model = setup
    ds = VOCSegmentation(root, "val")
    result, hist, kept = evaluate(model, ds, keep=2, progress=False)
    ref = np.zeros((6, 6), np.int64)
    for i in range(len(ds)):
        _, label = ds[i]
        pred = predict(model, ds[i][0])
        assert pred.shape == label.shape and pred.dtype == np.uint8
        for t, p in zip(label.ravel(), pred.ravel()):
            if t != 255:
                ref[t, p] += 1
    assert np.array_equal(hist, ref)
    assert result["pixel_accuracy"] == pytest.approx(np.trace(ref) / ref.sum())
    assert len(kept) == 2 and kept[0][2].shape == kept[0][1].shape


def test_predict_command_any_size(setup, tmp_path):
    tmp, _, model = setup
    image = np.random.default_rng(1).integers(0, 256, (45, 37, 3), dtype=np.uint8)  # not a multiple of 32
    Image.fromarray(image).save(tmp_path / "odd.jpg")
    assert cli(["predict", str(tmp_path / "odd.jpg"), "--checkpoint", str(tmp / "model.npz"),
                "-o", str(tmp_path / "out")]) == 0
    png = Image.open(tmp_path / "out" / "odd.png")
    assert png.mode == "P" and png.size == (37, 45)
    assert np.array_equal(np.array(png), predict(model, np.asarray(Image.open(tmp_path / "odd.jpg"))))
    assert Image.open(tmp_path / "out" / "odd_overlay.png").size == (37, 45)


def test_predict_errors(setup, tmp_path, capsys):
    tmp, _, _ = setup
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    assert cli(["predict", str(tmp_path / "broken.jpg"), "--checkpoint", str(tmp / "model.npz"),
                "-o", str(tmp_path / "out")]) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written
    assert cli(["predict", str(tmp_path / "broken.jpg"), "--checkpoint", str(tmp_path / "missing.npz"),
                "-o", str(tmp_path / "out")]) == 2
    assert "missing.npz does not exist" in capsys.readouterr().err


def test_eval_command(setup, tmp_path, capsys):
    tmp, root, model = setup
    assert cli(["eval", "--checkpoint", str(tmp / "model.npz"), "--data", root, "--out", str(tmp_path / "e")]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    expected, _, _ = evaluate(model, VOCSegmentation(root, "val"), progress=False)
    assert metrics["mean_iu"] == pytest.approx(expected["mean_iu"])
    assert list(metrics["per_class_iu"]) == list(VOCSegmentation(root).class_names)
    assert (tmp_path / "e" / "per_class_iu.png").is_file() and (tmp_path / "e" / "predictions.png").is_file()
    other = build("fcn8s", n_class=4, width=1 / 16)
    other.save(tmp_path / "four.npz")
    assert cli(["eval", "--checkpoint", str(tmp_path / "four.npz"), "--data", root]) == 2
    assert "predicts 4 classes" in capsys.readouterr().err
    assert cli(["eval", "--checkpoint", str(tmp / "model.npz"), "--data", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
