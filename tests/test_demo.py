"""``minifcn demo --quick --compare``: the whole pipeline end to end in seconds."""
import json

from minifcn.cli import main as cli
from minifcn.evaluate import METRICS


def test_demo_quick_compare(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli(["demo", "--quick", "--compare", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Results in {out}/" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    for k in METRICS:
        assert 0.0 <= metrics[k] <= 1.0
    assert set(metrics["per_class_iu"]) == {"background", "disk", "ring", "bar", "triangle", "square"}
    assert metrics["model"] == "fcn8s"
    table = json.loads((out / "compare.json").read_text())
    assert set(table) == {"fcn32s", "fcn16s", "fcn8s"}
    assert table["fcn8s"]["mean_iu"] == metrics["mean_iu"]
    assert table["fcn32s"]["per_class_iu"].keys() == metrics["per_class_iu"].keys()
    assert printed.index("fcn32s    ") < printed.index("fcn16s    ") < printed.index("fcn8s    ")
    for name in ("curves.png", "predictions.png", "per_class_iu.png", "compare.png", "fcn8s/checkpoint.npz",
                 "fcn32s/log.jsonl"):
        assert (out / name).is_file(), name
    # the demo's checkpoint is a model the other verbs read
    assert cli(["eval", "--checkpoint", str(out / "fcn8s" / "checkpoint.npz"), "--data", str(out / "data"),
                "--out", str(tmp_path / "eval")]) == 0
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again["mean_iu"] == metrics["mean_iu"]
