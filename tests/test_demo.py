"""``minifcn demo --quick --compare``: the whole pipeline end to end in seconds, every
output of the comparison present and well formed (no claim on quality: 2 iterations)."""
import json
import math

import pytest
from PIL import Image

import minifcn.demo as demo
from minifcn.cli import main as cli
from minifcn.evaluate import METRICS
from minifcn.models import build, load_model

CLASSES = {"background", "disk", "ring", "bar", "triangle", "square"}


def _check_metrics(row):
    for k in METRICS:
        assert 0.0 <= row[k] <= 1.0, (k, row[k])
    assert set(row["per_class_iu"]) == CLASSES
    assert set(row["thin_class_iu"]) == {"ring", "bar"}
    for c, v in row["thin_class_iu"].items():
        assert v == row["per_class_iu"][c] or (math.isnan(v) and math.isnan(row["per_class_iu"][c]))


def test_demo_quick_compare(tmp_path, capsys, monkeypatch):
    # a short story with one model the registry lacks: it is skipped with a note
    story = ("fcn32s", "fcn8s", "segnet", "not-a-model", "deeplab-largefov")
    monkeypatch.setattr(demo, "STORY", story)
    out = tmp_path / "demo"
    assert cli(["demo", "--quick", "--compare", "--iters", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "note: not-a-model is not in this minifcn's model registry" in printed
    trained = ("fcn32s", "fcn8s", "segnet", "deeplab-largefov")
    for k, name in enumerate(trained, 1):
        assert f"[{k}/4] {name}: 2 iterations" in printed
    assert printed.count("left in total") >= 3      # the total time left, from the second model on
    assert f"Results in {out}/" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "fcn8s" and metrics["iterations"] == 2 and metrics["same_padding"] is True
    _check_metrics({**metrics, "thin_class_iu": {c: metrics["per_class_iu"][c] for c in ("ring", "bar")}})
    table = json.loads((out / "compare.json").read_text())
    assert list(table) == list(trained)              # story order, the missing one left out
    for name, row in table.items():
        _check_metrics(row)
        _check_metrics(row["crf"])
        assert row["iterations"] == 2 and row["train_seconds"] > 0 and row["crf"]["seconds_per_image"] > 0
        assert row["parameters"] == sum(p.data.size for _, p in build(name, 6, width=0.0625).named_parameters())
        assert row["crf"]["settings"]["theta_alpha"].startswith("scaled")
    assert table["fcn8s"]["mean_iu"] == metrics["mean_iu"]
    assert table["fcn8s"]["crf"]["mean_iu"] == metrics["crf"]["mean_iu"]
    md = (out / "compare.md").read_text().splitlines()
    rows = [line for line in md if line.startswith("| ") and not line.startswith("| model")]
    assert [r.split(" | ")[0][2:] for r in rows] == [n for n in trained for _ in (0, 1)]
    assert [r.split(" | ")[1] for r in rows] == ["no", "yes"] * 4
    assert all(len(r.split("|")) == len(md[0].split("|")) for r in rows)
    assert any(line.startswith("Dense CRF: 10 iterations") for line in md)
    assert printed.index("fcn32s    ") < printed.index("fcn8s    ") < printed.index("segnet    ") \
        < printed.index("deeplab-largefov    ")
    w, h = Image.open(out / "compare.png").size
    assert w > h > 0                                  # one row (3 val images: one shown), 6 panels
    for name in ("curves.png", "predictions.png", "per_class_iu.png", "fcn8s/checkpoint.npz", "segnet/log.jsonl"):
        assert (out / name).is_file(), name
    # the demo's checkpoint is a model the other verbs read
    assert cli(["eval", "--checkpoint", str(out / "fcn8s" / "checkpoint.npz"), "--data", str(out / "data"),
                "--out", str(tmp_path / "eval")]) == 0
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again["mean_iu"] == metrics["mean_iu"]
    for name in trained:   # the FCNs train without the 100-pixel margin, the others as they are
        model = load_model(out / name / "checkpoint.npz")
        if name.startswith("fcn"):
            assert model.same_padding is True and model.conv1_1.padding == 1, name
        else:
            assert not hasattr(model, "same_padding"), name


def test_demo_paper_trunk(tmp_path):
    out = tmp_path / "demo"
    assert cli(["demo", "--quick", "--paper-trunk", "--iters", "1", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["same_padding"] is False
    model = load_model(out / "fcn8s" / "checkpoint.npz")
    assert model.same_padding is False and model.conv1_1.padding == 100


def test_compare_models_follow_the_registry(monkeypatch):
    monkeypatch.setattr(demo, "model_names", lambda: ("fcn8s", "segnet", "fcn32s", "deeplab-aspp"))
    assert demo.compare_models() == (("fcn32s", "fcn8s", "segnet", "deeplab-aspp"),
                                     ("fcn16s", "deeplab-largefov", "dilation-context"))
    assert demo.compare_models(["segnet", "fcn8s"]) == (("segnet", "fcn8s"), ())
    with pytest.raises(ValueError, match="'fcn7s' is not a model"):
        demo.compare_models(["fcn8s", "fcn7s"])


@pytest.mark.parametrize("flags, named", [
    (["--models", "fcn8s,segnet"], "--models fcn8s,segnet: needs --compare"),
    (["--compare", "--models", "fcn8s,fcn7s"], "'fcn7s' is not a model"),
    (["--compare", "--models", "fcn8s,fcn8s"], "expected distinct comma-separated model names"),
    (["--compare", "--models", "fcn8s,"], "--models"),
    (["--compare", "--iters", "0"], "--iters 0"),
])
def test_compare_flags_checked_before_work(tmp_path, capsys, monkeypatch, flags, named):
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: pytest.fail("ran before the flags were checked"))
    assert cli(["demo", "--out", str(tmp_path / "d"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err, err
    assert not (tmp_path / "d").exists()
