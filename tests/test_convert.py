"""``minifcn convert``: PyTorch state dicts (torchvision VGG16, torchfcn FCNs) to .npz."""
import sys

import numpy as np
import pytest

from minifcn.cli import main as cli
from minifcn.io import load_npz
from minifcn.models import FCN8sAtOnce, build, load_model

from test_vgg import TORCHVISION_CONVS, torchvision_layout


def test_clear_message_without_torch(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)           # `import torch` now fails
    assert cli(["convert", str(tmp_path / "in.pth"), str(tmp_path / "out.npz")]) == 2
    assert "needs PyTorch: pip install torch" in capsys.readouterr().err
    assert not (tmp_path / "out.npz").exists()


def test_vgg16_state_dict(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    arrays = torchvision_layout(1 / 16)
    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, tmp_path / "vgg16.pth")
    assert cli(["convert", str(tmp_path / "vgg16.pth"), str(tmp_path / "vgg16.npz")]) == 0
    assert "vgg16-torchvision" in capsys.readouterr().out
    got, meta = load_npz(tmp_path / "vgg16.npz")
    assert meta == {"kind": "vgg16-torchvision", "source": "vgg16.pth"}
    assert all(np.array_equal(got[k], v) for k, v in arrays.items()) and set(got) == set(arrays)
    model = build("fcn32s", width=1 / 16).load_vgg16(tmp_path / "vgg16.npz")
    assert np.array_equal(model.conv5_3.weight.data, arrays[f"features.{TORCHVISION_CONVS['conv5_3']}.weight"])


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"])
def test_fcn_state_dict_rebuilds_the_model(tmp_path, name):
    torch = pytest.importorskip("torch")
    src = build(name, n_class=5, width=1 / 32, seed=2)
    rng = np.random.default_rng(0)
    for p in src.parameters():
        p.data = (p.data + 0.1 * rng.standard_normal(p.shape)).astype(np.float32)
    state = {k: torch.from_numpy(np.array(v)) for k, v in src.state_dict().items()}
    torch.save({"epoch": 3, "model_state_dict": state}, tmp_path / "fcn.pth")   # a torchfcn checkpoint
    argv = ["convert", str(tmp_path / "fcn.pth"), str(tmp_path / "fcn.npz")]
    assert cli(argv + (["--model", name] if name == "fcn8s-atonce" else [])) == 0
    model = load_model(tmp_path / "fcn.npz")
    assert model.config == {**src.config, "seed": 0} and (name != "fcn8s-atonce" or isinstance(model, FCN8sAtOnce))
    x = np.random.default_rng(1).standard_normal((1, 3, 7, 9)).astype(np.float32)
    assert np.array_equal(model.eval().forward(x), src.eval().forward(x))


def test_bad_inputs(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.save({"linear.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    assert cli(["convert", str(tmp_path / "other.pth"), str(tmp_path / "o.npz")]) == 2
    assert "neither a torchvision VGG16" in capsys.readouterr().err
    assert cli(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "o.npz")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "junk.pth").write_bytes(b"junk")
    assert cli(["convert", str(tmp_path / "junk.pth"), str(tmp_path / "o.npz")]) == 2
    assert "junk.pth is not a PyTorch state dict" in capsys.readouterr().err
    fcn16 = {k: torch.from_numpy(np.array(v)) for k, v in build("fcn16s", width=1 / 32).state_dict().items()}
    torch.save(fcn16, tmp_path / "fcn16s.pth")
    assert cli(["convert", str(tmp_path / "fcn16s.pth"), str(tmp_path / "o.npz"), "--model", "fcn8s-atonce"]) == 2
    assert "the state dict is an fcn16s" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()
