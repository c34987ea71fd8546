"""The VGG16 trunk: layout, width multiplier, and loading ImageNet weights ("net surgery")."""
import numpy as np
import pytest

from minifcn.io import save_npz
from minifcn.layers import Conv2d, Dropout, MaxPool2d, ReLU
from minifcn.models import VGG16, build
from minifcn.models.vgg import channels

# torchvision's vgg16: the index of each conv in `features`, and of fc6 / fc7 in `classifier`
TORCHVISION_CONVS = {"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12,
                     "conv3_3": 14, "conv4_1": 17, "conv4_2": 19, "conv4_3": 21, "conv5_1": 24,
                     "conv5_2": 26, "conv5_3": 28}


def test_width_multiplier():
    assert [channels(c, 1 / 4) for c in (64, 128, 256, 512, 512, 4096)] == [16, 32, 64, 128, 128, 1024]
    assert [channels(c, 1.0) for c in (64, 4096)] == [64, 4096]
    assert channels(64, 1 / 1000) == 1                      # never zero channels
    t = VGG16(width=1 / 4)
    out = {n: layer.weight.shape[0] for n, layer in t.trunk if isinstance(layer, Conv2d)}
    assert [out[f"conv{b}_1"] for b in range(1, 6)] == [16, 32, 64, 128, 128]
    assert out["fc6"] == out["fc7"] == t.out_channels == 1024
    assert t.fc6.weight.shape == (1024, 128, 7, 7) and t.fc7.weight.shape == (1024, 1024, 1, 1)
    with pytest.raises(ValueError, match="width"):
        VGG16(width=0)


def test_trunk_layout():
    t = VGG16(width=1 / 32, dropout=0.5)
    names = [n for n, _ in t.trunk]
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert names[-6:] == ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7"]
    assert len([n for n in names if n.startswith("conv")]) == 13 and names.count("pool5") == 1
    for name, layer in t.trunk:
        assert getattr(t, name) is layer
        if isinstance(layer, Conv2d) and name.startswith("conv"):
            assert layer.weight.shape[2:] == (3, 3)
            assert layer.padding == (100 if name == "conv1_1" else 1)
        if isinstance(layer, MaxPool2d):
            assert (layer.kernel_size, layer.stride, layer.ceil_mode) == (2, 2, True)
        if isinstance(layer, Dropout):
            assert layer.p == 0.5 and layer.rng is t.rng
        assert isinstance(layer, (Conv2d, ReLU, MaxPool2d, Dropout))
    assert t.fc6.padding == 0 and t.fc7.weight.shape[2:] == (1, 1)
    # the same seed gives the same initial weights
    assert np.array_equal(VGG16(width=1 / 32, seed=3).fc6.weight.data, VGG16(width=1 / 32, seed=3).fc6.weight.data)
    assert not np.array_equal(VGG16(width=1 / 32, seed=3).conv1_1.weight.data, t.conv1_1.weight.data)


def torchvision_layout(width, seed=0):
    """A random VGG16 state dict in torchvision's layout, for a trunk of ``width``."""
    rng = np.random.default_rng(seed)
    arrays, c_in = {}, 3
    for name, k in TORCHVISION_CONVS.items():
        c = channels({"1": 64, "2": 128, "3": 256, "4": 512, "5": 512}[name[4]], width)
        he = np.sqrt(2 / (c_in * 9))
        arrays[f"features.{k}.weight"] = (rng.standard_normal((c, c_in, 3, 3)) * he).astype(np.float32)
        arrays[f"features.{k}.bias"] = rng.standard_normal(c).astype(np.float32) * 0.1
        c_in = c
    fc = channels(4096, width)
    for i, shape in ((0, (fc, c_in * 49)), (3, (fc, fc)), (6, (1000, fc))):
        arrays[f"classifier.{i}.weight"] = rng.standard_normal(shape).astype(np.float32) * 0.05
        arrays[f"classifier.{i}.bias"] = rng.standard_normal(shape[0]).astype(np.float32)
    return arrays


def test_load_vgg16_surgery(tmp_path):
    width = 1 / 16
    arrays = torchvision_layout(width)
    save_npz(tmp_path / "vgg16.npz", arrays, {"kind": "vgg16-torchvision"})
    model = build("fcn8s", width=width).load_vgg16(tmp_path / "vgg16.npz")
    for name, k in TORCHVISION_CONVS.items():
        assert np.array_equal(getattr(model, name).weight.data, arrays[f"features.{k}.weight"])
        assert np.array_equal(getattr(model, name).bias.data, arrays[f"features.{k}.bias"])
    assert np.array_equal(model.fc7.weight.data[:, :, 0, 0], arrays["classifier.3.weight"])
    assert np.array_equal(model.fc6.bias.data, arrays["classifier.0.bias"])
    assert not np.any(model.score_fr.weight.data)              # the head is untouched
    # FC-to-conv equivalence: fc6 as a 7x7 conv at window (i, j) equals the fully connected
    # layer applied to that 7x7 window of pool5, flattened in (C, H, W) order
    x = np.random.default_rng(1).standard_normal((1, 3, 70, 90)).astype(np.float32)
    model.eval()
    _, taps = model.forward_trunk(x, taps={"pool5", "fc6"})
    pool5, fc6 = taps["pool5"], taps["fc6"]
    W0, b0 = arrays["classifier.0.weight"].astype(np.float64), arrays["classifier.0.bias"]
    for i, j in [(0, 0), (fc6.shape[2] - 1, fc6.shape[3] - 1), (1, 2)]:
        window = pool5[0, :, i:i + 7, j:j + 7].astype(np.float64).reshape(-1)
        np.testing.assert_allclose(fc6[0, :, i, j], W0 @ window + b0, rtol=1e-4, atol=1e-3)


def test_load_vgg16_refuses_other_shapes_and_missing_keys(tmp_path):
    save_npz(tmp_path / "vgg16.npz", torchvision_layout(1 / 16))
    with pytest.raises(ValueError, match=r"width 0.03125.*features.0.weight has shape \(4, 3, 3, 3\), "
                                         r"conv1_1.weight needs \(2, 3, 3, 3\)"):
        build("fcn32s", width=1 / 32).load_vgg16(tmp_path / "vgg16.npz")
    arrays = torchvision_layout(1 / 16)
    del arrays["classifier.3.bias"]
    save_npz(tmp_path / "partial.npz", arrays)
    model = build("fcn32s", width=1 / 16)
    before = model.conv1_1.weight.data.copy()
    with pytest.raises(ValueError, match=r"missing classifier.3.bias \(for fc7.bias\)"):
        model.load_vgg16(tmp_path / "partial.npz")
    assert np.array_equal(model.conv1_1.weight.data, before)     # nothing half-loaded
