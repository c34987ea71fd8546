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


# --- the trunk as a table ---------------------------------------------------------------
from minifcn.models import FC, Pool, Stage                                     # noqa: E402
from minifcn.models.geometry import output_stride, receptive_field          # noqa: E402
from minifcn.models.vgg import (DEEPLAB_LARGEFOV, DEEPLAB_VGG16, DILATION_FRONTEND, FCN_VGG16,  # noqa: E402
                                SEGNET_ENCODER)


def n_params(layer):
    return sum(int(np.prod(p.shape)) for p in layer.parameters())


def test_fcn_table_is_the_reference_trunk():
    t = VGG16(width=1 / 32)
    assert t.table == FCN_VGG16 and VGG16(FCN_VGG16, width=1 / 32).layer_names() == t.layer_names()
    assert [(row.channels, row.convs) for row in FCN_VGG16 if isinstance(row, Stage)] == \
        [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
    assert output_stride(t.trunk_until("pool5")) == (32, 32)
    assert t.channels_at("pool4") == 16 and t.channels_at("drop7") == t.out_channels == 128
    with pytest.raises(ValueError, match="no trunk layer 'pool6'"):
        t.trunk_until("pool6")


def test_deeplab_largefov_is_a_table_change():
    """DeepLab-LargeFOV's trunk (Chen et al.): pools 1-3 3x3/2 pad 1, pools 4-5 3x3/1 pad 1,
    conv5 dilated by 2, fc6 3x3 dilated by 12 with 1024 channels: output stride 8 and
    20.5M parameters with the 1x1 fc8 to 21 classes (paper: 20.5M)."""
    t = VGG16(DEEPLAB_LARGEFOV, width=1.0)
    assert t.pool1.kernel_size == 3 and t.pool1.stride == 2 and t.pool1.padding == 1 and t.pool1.ceil_mode
    assert (t.pool4.stride, t.pool5.stride) == (1, 1)
    assert [t.conv5_1.dilation, t.conv5_1.padding, t.conv4_3.dilation, t.conv1_1.padding] == [2, 2, 1, 1]
    assert (t.fc6.weight.shape, t.fc6.dilation, t.fc6.padding) == ((1024, 512, 3, 3), 12, 12)
    assert output_stride([t]) == (8, 8)
    fc8 = 1024 * 21 + 21
    assert round((n_params(t) + fc8) / 1e6, 1) == 20.5
    small = VGG16(DEEPLAB_LARGEFOV, width=1 / 32, seed=1).eval()
    y = small.forward(np.zeros((1, 3, 17, 30), np.float32))
    # each 3x3/2 pad 1 ceil pool: H -> ceil((H - 1) / 2) + 1, so 17 -> 9 -> 5 -> 3, 30 -> 16 -> 9 -> 5
    assert y.shape == (1, 32, 3, 5)
    assert [n for n, _ in VGG16(DEEPLAB_VGG16, width=1 / 32).trunk][-1] == "pool5"


def test_dilation_frontend_is_a_table_change():
    t = VGG16(DILATION_FRONTEND, width=1 / 32)
    names = t.layer_names()
    assert "pool4" not in names and "pool5" not in names and names[names.index("pool3") + 1] == "conv4_1"
    assert t.conv5_3.dilation == 2 and (t.fc6.dilation, t.fc6.weight.shape[2:]) == (4, (7, 7))
    assert output_stride([t]) == (8, 8)
    # VGG16 to pool3 (44 px), conv4 at stride 8 (+48), conv5 dilated by 2 at stride 8 (+96),
    # fc6 7x7 dilated by 4 at stride 8 (+192)
    assert receptive_field(t.trunk_until("pool3")) == (44, 44)
    assert receptive_field([t]) == (44 + 48 + 96 + 192,) * 2


def test_segnet_encoder_flags_need_their_layers():
    """BatchNorm and index-keeping pools are table flags; the layers are plugged in as factories."""
    with pytest.raises(NotImplementedError, match="batch norm after each conv: pass a layer factory"):
        VGG16(SEGNET_ENCODER, width=1 / 32)

    class FakeNorm(ReLU):                      # stands in for BatchNorm2d(channels)
        def __init__(self, c):
            super().__init__()
            self.c = c

    default = VGG16(SEGNET_ENCODER, width=1 / 32, batch_norm=FakeNorm)   # default pools keep their indices
    assert [n for n, layer in default.trunk if getattr(layer, "return_indices", False)] == \
        [f"pool{b}" for b in range(1, 6)]
    seen = []

    def pool(spec):
        seen.append(spec)
        return MaxPool2d(spec.kernel, spec.stride, spec.padding, spec.ceil_mode)

    t = VGG16(SEGNET_ENCODER, width=1 / 32, batch_norm=FakeNorm, pool=pool)
    assert t.layer_names()[:7] == ["conv1_1", "conv1_1_bn", "relu1_1", "conv1_2", "conv1_2_bn", "relu1_2", "pool1"]
    assert t.conv5_3_bn.c == 16 and len(seen) == 5 and all(s.keep_indices for s in seen)
    assert "fc6" not in t.layer_names()
    # torchvision's vgg16_bn layout: conv, bn, relu per conv, one pool per stage
    assert t._sources["conv2_1"] == "features.7" and t._sources["conv5_3"] == "features.40"


def test_bad_tables_and_arguments_are_refused():
    with pytest.raises(ValueError, match=r"padding=\(100, 1, 1\) must hold one value per conv \(2\)"):
        VGG16((Stage(8, 2, padding=(100, 1, 1)),))
    with pytest.raises(ValueError, match="rows must be Stage or FC"):
        VGG16(((64, 2),))
    with pytest.raises(ValueError, match="empty"):
        VGG16(())
    for bad in (0, -1, float("inf"), float("nan"), "1", True):
        with pytest.raises(ValueError, match=r"width must be a finite number > 0, got"):
            VGG16(width=bad)
    for bad in (2, 1.0, -0.1, float("nan"), "0.5"):
        with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got"):
            VGG16(width=1 / 32, dropout=bad)
    t = VGG16((Stage(4, 1, pool=None), FC(6, 8, 1, dropout=False)), width=1.0)
    assert t.layer_names() == ["conv1_1", "relu1_1", "fc6", "relu6"]
    assert t.conv1_1.padding == 1 and Pool().stride is None


def test_load_vgg16_convs_only(tmp_path):
    """fc=False loads the 13 convolutions into a trunk whose fc6 is not VGG16's (DeepLab)."""
    arrays = torchvision_layout(1 / 16)
    save_npz(tmp_path / "vgg16.npz", arrays)
    t = VGG16(DEEPLAB_LARGEFOV, width=1 / 16)
    fc6 = t.fc6.weight.data.copy()
    with pytest.raises(ValueError, match=r"classifier.0.weight has shape"):
        t.load_vgg16(tmp_path / "vgg16.npz")
    t.load_vgg16(tmp_path / "vgg16.npz", fc=False)
    assert np.array_equal(t.conv5_3.weight.data, arrays["features.28.weight"])
    assert np.array_equal(t.fc6.weight.data, fc6)


@pytest.mark.parametrize("table", ["DEEPLAB_LARGEFOV", "DILATION_FRONTEND"])
def test_dilated_trunks_gradcheck(backend, table):
    """The table-built trunk's backward (dilated convs, stride-1 pools, no pool4/5) is the
    derivative of its forward, float64, input and every parameter, on every backend."""
    from minifcn.gradcheck import check_layer
    from minifcn.models import vgg

    t = VGG16(getattr(vgg, table), width=1 / 64, seed=2).to(backend.name, "float64").eval()
    rng = np.random.default_rng(3)
    for p in t.parameters():
        p.data = p.data + backend.asarray(0.1 * rng.standard_normal(p.shape))
    x = backend.asarray(rng.standard_normal((1, 3, 11, 9)))
    report = check_layer(t, x, directions=2, seed=4)
    assert report.ok, str(report)
