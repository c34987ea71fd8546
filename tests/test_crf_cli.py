"""``minifcn eval --crf`` and ``minifcn predict --crf``: the dense CRF after the network.

The reference here rebuilds each step by hand (scores of the preprocessed image, softmax
over classes, dense_crf with the RGB uint8 image and theta_alpha scaled to the image,
argmax) and compares pixel for pixel; the flags are checked before any work."""
import json

import numpy as np
import pytest
from PIL import Image

from minifcn.cli import main as cli
from minifcn.crf import dense_crf
from minifcn.data import VOCSegmentation
from minifcn.data.synthetic import make_dataset
from minifcn.data.transforms import preprocess
from minifcn.evaluate import CRF_DEFAULTS, crf_settings, evaluate, predict
from minifcn.metrics import confusion_matrix
from minifcn.models import build


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two small val images (48 x 64) and an untrained FCN-8s with random score layers."""
    tmp = tmp_path_factory.mktemp("crf")
    root = make_dataset(tmp / "data", n_train=1, n_val=2, seed=5, progress=False, size=(48, 64))
    model = build("fcn8s", n_class=6, width=1 / 16, seed=1)
    rng = np.random.default_rng(0)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        w = getattr(model, name).weight
        w.data = rng.standard_normal(w.shape).astype(np.float32)
    model.save(tmp / "model.npz", {"class_names": list(VOCSegmentation(root).class_names)})
    return tmp, root, model.eval()


def by_hand(model, image, **settings):
    """The CRF's class map, step by step, independently of minifcn.evaluate."""
    scores = model.forward(preprocess(image)[None].astype(np.float32))[0]
    e = np.exp(scores - scores.max(axis=0, keepdims=True))
    probs = e / e.sum(axis=0, keepdims=True)
    kw = {"iterations": 10, "w_appearance": 4.0, "theta_alpha": 121.0 * max(image.shape[:2]) / 500,
          "theta_beta": 5.0, "w_smooth": 3.0, "theta_gamma": 3.0, **settings}
    return np.argmax(dense_crf(probs, image, **kw), axis=0).astype(np.uint8), scores.argmax(axis=0)


def test_crf_settings_scale_theta_alpha_to_the_image():
    assert CRF_DEFAULTS["theta_alpha"] is None
    assert crf_settings((375, 500))["theta_alpha"] == pytest.approx(121.0)      # a VOC image: DeepLab's value
    assert crf_settings((160, 96, 3))["theta_alpha"] == pytest.approx(121.0 * 160 / 500)
    assert crf_settings((48, 64), {"theta_alpha": 7.0, "iterations": 3}) == {
        **CRF_DEFAULTS, "theta_alpha": 7.0, "iterations": 3}


def test_evaluate_with_crf_matches_the_steps_by_hand(setup):
    _, root, model = setup
    ds = VOCSegmentation(root, "val")
    plain, hist_plain, _ = evaluate(model, ds, progress=False)
    result, hist, kept = evaluate(model, ds, keep=2, progress=False, crf={})
    assert np.array_equal(hist, hist_plain)                  # the CRF leaves the plain metrics alone
    ref = np.zeros_like(hist)
    changed = 0
    for i in range(len(ds)):
        image, label = ds[i]
        crf_map, plain_map = by_hand(model, image)
        ref += confusion_matrix(label.astype(np.int64), crf_map.astype(np.int64), 6)
        assert np.array_equal(kept[i][3], crf_map) and np.array_equal(kept[i][2], plain_map)
        changed += int(np.sum(crf_map != plain_map))
    assert np.array_equal(result["crf"]["hist"], ref)
    assert changed > 0                                       # the CRF did something
    assert result["crf"]["pixel_accuracy"] == pytest.approx(np.trace(ref) / ref.sum())
    assert result["crf"]["seconds_per_image"] > 0
    # zero mean-field rounds: Q = probs, whose argmax is the network's
    zero, _, _ = evaluate(model, ds, progress=False, crf={"iterations": 0})
    assert np.array_equal(zero["crf"]["hist"], hist_plain)


def test_eval_crf_command(setup, tmp_path, capsys):
    tmp, root, model = setup
    args = ["eval", "--checkpoint", str(tmp / "model.npz"), "--data", root]
    assert cli([*args, "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    assert cli([*args, "--out", str(tmp_path / "crf"), "--crf", "--crf-iterations", "5", "--crf-w-smooth", "2"]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    row = {line.split()[0] + line.split()[1]: line for line in lines if line.startswith(("without CRF", "with CRF"))}
    assert set(row) == {"withoutCRF", "withCRF"} and "CRF change" in printed
    assert "theta_alpha 121 * max(H, W) / 500" in printed and "s per image" in printed
    metrics = json.loads((tmp_path / "crf" / "metrics.json").read_text())
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert "crf" not in plain and metrics["mean_iu"] == pytest.approx(plain["mean_iu"])
    crf = metrics["crf"]
    assert crf["settings"]["iterations"] == 5 and crf["settings"]["w_smooth"] == 2.0
    assert crf["settings"]["theta_alpha"].startswith("scaled")
    assert list(crf["per_class_iu"]) == list(metrics["per_class_iu"])
    ds = VOCSegmentation(root, "val")
    ref = sum(confusion_matrix(ds[i][1].astype(np.int64),
                               by_hand(model, ds[i][0], iterations=5, w_smooth=2.0)[0].astype(np.int64), 6)
              for i in range(len(ds)))
    assert crf["pixel_accuracy"] == pytest.approx(np.trace(ref) / ref.sum())
    assert f"{crf['mean_iu']:.3f}" in row["withCRF"] and f"{plain['mean_iu']:.3f}" in row["withoutCRF"]
    # the tiles gain a column: prediction + CRF
    w3 = Image.open(tmp_path / "plain" / "predictions.png").size[0]
    w4 = Image.open(tmp_path / "crf" / "predictions.png").size[0]
    assert w4 == pytest.approx(w3 * 4 / 3, rel=0.08)


def test_predict_crf_command(setup, tmp_path):
    tmp, root, model = setup
    image = VOCSegmentation(root, "val")[0][0]
    Image.fromarray(image).save(tmp_path / "a.png")
    assert cli(["predict", str(tmp_path / "a.png"), "--checkpoint", str(tmp / "model.npz"), "-o",
                str(tmp_path / "out"), "--crf", "--crf-theta-alpha", "10"]) == 0
    got = np.array(Image.open(tmp_path / "out" / "a.png"))
    assert np.array_equal(got, by_hand(model, image, theta_alpha=10.0)[0])
    assert np.array_equal(got, predict(model, image, crf={"theta_alpha": 10.0}))
    assert Image.open(tmp_path / "out" / "a_overlay.png").size == (64, 48)


@pytest.mark.parametrize("flags, named", [
    (["--crf", "--crf-iterations", "-1"], "--crf-iterations -1: expected an integer >= 0"),
    (["--crf", "--crf-theta-alpha", "0"], "--crf-theta-alpha 0.0: expected a positive finite number"),
    (["--crf", "--crf-theta-beta", "-5"], "--crf-theta-beta -5.0"),
    (["--crf", "--crf-theta-gamma", "nan"], "--crf-theta-gamma nan"),
    (["--crf", "--crf-w-appearance", "inf"], "--crf-w-appearance inf"),
    (["--crf", "--crf-w-smooth", "0"], "--crf-w-smooth 0.0"),
    (["--crf-theta-beta", "3"], "--crf-theta-beta 3.0: a CRF setting needs --crf"),
    (["--crf", "--crf-iterations", "1.5"], "--crf-iterations"),
])
@pytest.mark.parametrize("verb", ["eval", "predict"])
def test_crf_flags_checked_before_work(setup, tmp_path, capsys, monkeypatch, flags, named, verb):
    import minifcn.evaluate as ev

    tmp, root, _ = setup
    monkeypatch.setattr(ev, "load_checkpoint_model", lambda *a, **k: pytest.fail("loaded before the flags"))
    args = {"eval": ["eval", "--checkpoint", str(tmp / "model.npz"), "--data", root, "--out", str(tmp_path / "e")],
            "predict": ["predict", str(tmp / "model.npz"), "--checkpoint", str(tmp / "model.npz"),
                        "-o", str(tmp_path / "p")]}[verb]
    try:
        rc = cli([*args, *flags])
    except SystemExit as exc:  # argparse's own type errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and named in err, err
    assert not (tmp_path / "e").exists() and not (tmp_path / "p").exists()
