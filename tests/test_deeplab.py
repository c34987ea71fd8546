"""DeepLab-LargeFOV, DeepLab-ASPP, the dilation front end and context module: structure and
parameter counts, output sizes, geometry, gradient checks on every backend, identity init of
the context module, VGG16 init, and independent PyTorch implementations of the DeepLab nets."""
import numpy as np
import pytest

from minifcn.backend import backend_of, get_backend, to_numpy
from minifcn.gradcheck import check_layer
from minifcn.io import save_npz
from minifcn.models import build, load_model
from minifcn.models.deeplab import context_module, resize_rule
from minifcn.models.geometry import output_stride, receptive_field

NAMES = ["deeplab-largefov", "deeplab-aspp", "dilation-frontend", "dilation-context"]
TINY = 1 / 32          # trunk channels 2-4-8-16-16; DeepLab fc 32, front-end fc 128


def randomize(model, seed=0):
    """He-scaled weights and small biases; the context module near its identity init with
    positive biases (random 3-channel layers would let the seven ReLUs kill every gradient)."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        shape = p.shape
        if name.startswith("ctx_"):
            new = to_numpy(p.data) + 0.1 * rng.standard_normal(shape) + (0.3 if name.endswith(".bias") else 0)
        elif name.endswith(".bias"):
            new = 0.1 * rng.standard_normal(shape)
        else:
            new = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        b = backend_of(p.data)
        p.data = b.xp.astype(b.asarray(new), p.data.dtype)
    return model


def tiny(name, backend="numpy", dtype="float64", seed=0, n_class=3, **kw):
    return randomize(build(name, n_class=n_class, width=TINY, **kw).to(backend, dtype), seed).eval()


def image(backend, shape=(1, 3, 9, 11), dtype="float64", seed=1):
    return get_backend(backend).asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def n_params(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


# --- structure ---------------------------------------------------------------------------
def test_largefov_has_20_5m_parameters_and_caffe_names():
    m = build("deeplab-largefov", n_class=21, width=1.0)
    assert n_params(m) == 20_505_429                       # "20.5M" (Chen et al.)
    convs = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]
    assert [k for k, _ in m.named_parameters()] == [f"{c}.{p}" for c in convs + ["fc6", "fc7", "fc8"]
                                                    for p in ("weight", "bias")]
    assert m.fc6.weight.shape == (1024, 512, 3, 3) and (m.fc6.dilation, m.fc6.padding) == (12, 12)
    assert m.fc7.weight.shape == (1024, 1024, 1, 1) and m.fc8.weight.shape == (21, 1024, 1, 1)
    assert all((getattr(m, f"conv5_{i}").dilation, getattr(m, f"conv5_{i}").padding) == (2, 2) for i in (1, 2, 3))
    pools = [getattr(m, f"pool{b}") for b in range(1, 6)]
    assert [(p.kernel_size, p.stride, p.padding, p.ceil_mode) for p in pools] == \
        [(3, 2, 1, True)] * 3 + [(3, 1, 1, True)] * 2
    assert m.interpolate.align_corners is True


def test_aspp_branches_and_other_parameter_counts():
    m = build("deeplab-aspp", n_class=21, width=1.0)
    names = [k for k, _ in m.named_parameters()]
    assert names[26:] == [f"fc{j}_{i}.{p}" for i in range(1, 5) for j in (6, 7, 8) for p in ("weight", "bias")]
    for i, rate in enumerate((6, 12, 18, 24), 1):
        fc6 = getattr(m, f"fc6_{i}")
        assert (fc6.dilation, fc6.padding, fc6.weight.shape) == (rate, rate, (1024, 512, 3, 3))
        assert getattr(m, f"drop6_{i}").rng is m.rng and getattr(m, f"drop7_{i}").rng is m.rng
    assert n_params(m) == 14_714_688 + 4 * (4_719_616 + 1_049_600 + 21_525)
    # the front end at width 1 is 134M parameters; count at width 1/4 (fc 1024) instead
    vgg = sum(c_out * (9 * c_in + 1) for c_in, c_out in
              zip((3, 16, 16, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128), (16, 16, 32, 32, 64, 64, 64) + (128,) * 6))
    front = vgg + 1024 * (49 * 128 + 1) + 1024 * 1025 + 21 * 1025
    assert n_params(build("dilation-frontend", 21, 0.25)) == front
    ctx = build("dilation-context", 21, 0.25)
    assert n_params(ctx) == front + 7 * (21 * 21 * 9 + 21) + 21 * 21 + 21
    assert [getattr(ctx, f"ctx_conv{k}").dilation for k in range(1, 8)] == [1, 1, 2, 4, 8, 16, 1]
    assert ctx.ctx_final.weight.shape == (21, 21, 1, 1)


def test_output_stride_and_receptive_field():
    """Receptive fields from the geometry module (dilation-aware): DeepLab's trunk to pool5
    227, + fc6 (K' = 25 or 49 at stride 8); front end to conv5 188, + fc6 7x7 dilation 4;
    the context module adds 66 * 8 (its 67 x 67 on the score map, Yu & Koltun)."""
    expected = {"deeplab-largefov": 227 + 24 * 8, "deeplab-aspp": 227 + 48 * 8,
                "dilation-frontend": 188 + 24 * 8, "dilation-context": 380 + 66 * 8}
    for name, rf in expected.items():
        m = build(name, 3, TINY)
        sizes = [receptive_field(m.score_path(k)) for k in range(len(m.heads))]
        assert max(sizes) == (rf, rf), name
        assert all(output_stride(m.score_path(k)) == (8, 8) for k in range(len(m.heads)))
    assert receptive_field([context_module(3)]) == (67, 67)


def test_resize_rule_follows_the_trunk_geometry():
    """DeepLab's trunk puts score pixel i at input 8 i (align_corners=True); the front end's
    2x2 pools at 8 i + 3.5 (the pixel-centre rule, align_corners=False)."""
    deeplab, front = build("deeplab-largefov", 3, TINY), build("dilation-frontend", 3, TINY)
    assert deeplab.coord_map().scale == (8, 8) and deeplab.coord_map().shift == (0, 0)
    assert front.coord_map().shift == (3.5, 3.5)
    assert (resize_rule(deeplab.coord_map()), resize_rule(front.coord_map())) == (True, False)
    assert front.interpolate.align_corners is False


@pytest.mark.parametrize("name", NAMES)
def test_any_input_size_gives_scores_of_that_size(name):
    m = build(name, n_class=5, width=TINY).eval()
    for h, w in [(1, 1), (2, 3), (7, 13), (17, 8), (33, 30)]:
        y = m.forward(image("numpy", (2, 3, h, w), "float32"))
        assert tuple(y.shape) == (2, 5, h, w) and y.dtype == np.float32
        assert m.backward(np.ones(y.shape, np.float32), need_dx=True).shape == (2, 3, h, w)


def test_bad_inputs_are_refused():
    m = build("deeplab-largefov", width=TINY)
    with pytest.raises(ValueError, match=r"input x must have shape \(N, 3, H, W\), got \(1, 4, 8, 8\)"):
        m.forward(np.zeros((1, 4, 8, 8), np.float32))
    m.forward(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"dscores of the last forward's output shape \(1, 21, 8, 8\), "
                                         r"got \(1, 21, 4, 4\)"):
        m.backward(np.zeros((1, 21, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"learn_upsampling must be False, got True"):
        build("deeplab-aspp", width=TINY, learn_upsampling=True)
    with pytest.raises(ValueError, match=r"n_class must be an int >= 1, got 0"):
        build("dilation-context", n_class=0, width=TINY)


# --- context module ----------------------------------------------------------------------
def test_untrained_context_module_passes_its_input_through(backend):
    """Identity init: non-negative input comes out unchanged (exactly); negative values are
    truncated by the ReLUs after layers 1-7 (max(x, 0), as in Yu & Koltun's module)."""
    ctx = context_module(4).to(backend, "float64")
    x = np.abs(np.random.default_rng(0).standard_normal((2, 4, 19, 23)))
    np.testing.assert_array_equal(to_numpy(ctx.forward(backend.asarray(x))), x)
    x = np.random.default_rng(1).standard_normal((1, 4, 6, 5))
    np.testing.assert_array_equal(to_numpy(ctx.forward(backend.asarray(x))), np.maximum(x, 0))


def test_untrained_dilation_context_scores_its_front_end():
    """The same seed gives the same trunk and fc8: before training, dilation-context's score
    map is the front end's with its negative entries truncated."""
    x = image("numpy", (1, 3, 20, 17), "float64")
    front = build("dilation-frontend", n_class=4, width=TINY).to(dtype="float64").eval()
    ctx = build("dilation-context", n_class=4, width=TINY).to(dtype="float64").eval()
    h = front.backbone.forward(x)
    s_front = front.heads[0](h)
    s_ctx = ctx.heads[0](ctx.backbone.forward(x))
    assert np.any(s_front < 0) and np.any(s_front > 0)
    np.testing.assert_array_equal(s_ctx, np.maximum(s_front, 0))


# --- gradients ---------------------------------------------------------------------------
def probe_value(model, x, dy):
    return float(np.sum(model.forward(x) * dy))


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_every_parameter(name):
    """float64 central differences on numpy: one random direction for the input and for EACH
    parameter tensor separately, then a sample of single entries."""
    model = tiny(name)
    x = image("numpy", (2, 3, 11, 9))
    rng = np.random.default_rng(2)
    model.zero_grad()
    y = model.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = model.backward(dy)
    targets = [("x", x, dx)] + [(n, p.data, p.grad) for n, p in model.named_parameters()]
    eps, worst = 1e-6, 0.0
    for label, arr, grad in targets:
        assert np.any(grad != 0), f"{label}: gradient is identically zero, the check would be vacuous"
        v = rng.standard_normal(arr.shape)
        v /= np.linalg.norm(v)
        arr += eps * v
        lp = probe_value(model, x, dy)
        arr -= 2 * eps * v
        lm = probe_value(model, x, dy)
        arr += eps * v
        numeric, analytic = (lp - lm) / (2 * eps), float(np.sum(grad * v))
        worst = max(worst, abs(numeric - analytic))
        assert abs(numeric - analytic) <= 1e-6 + 1e-4 * abs(numeric), (label, numeric, analytic)
    for label, arr, grad in [targets[i] for i in rng.choice(len(targets), 6, replace=False)]:
        idx = tuple(int(rng.integers(s)) for s in arr.shape)
        orig = arr[idx]
        arr[idx] = orig + eps
        lp = probe_value(model, x, dy)
        arr[idx] = orig - eps
        lm = probe_value(model, x, dy)
        arr[idx] = orig
        numeric = (lp - lm) / (2 * eps)
        assert abs(numeric - grad[idx]) <= 1e-6 + 1e-4 * abs(numeric), (label, idx, numeric, grad[idx])


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_on_every_backend(name, backend):
    """Random-direction checks of the whole model (input and all parameters) on each backend."""
    report = check_layer(tiny(name, backend.name), image(backend.name, (1, 3, 7, 5)), directions=2, seed=3)
    assert report.ok, str(report)


def test_gradcheck_with_dropout_in_training_mode():
    """Training mode (dropout after every fc6_k / fc7_k): each probe restarts the dropout RNG
    from the same state, so it sees the same masks."""
    model = tiny("deeplab-aspp").train()
    x = image("numpy", (1, 3, 6, 7))
    start = model.rng.state()
    dy = np.random.default_rng(4).standard_normal((1, 3, 6, 7))
    model.zero_grad()
    model.forward(x)
    model.backward(dy)
    grads = {n: p.grad.copy() for n, p in model.named_parameters()}
    eps = 1e-6
    for name in ("fc6_3.weight", "fc7_1.weight", "conv3_1.weight"):
        p = dict(model.named_parameters())[name]
        v = np.random.default_rng(5).standard_normal(p.shape)
        v /= np.linalg.norm(v)
        vals = []
        for sign in (1, -1):
            p.data += sign * eps * v
            model.rng.set_state(start)
            vals.append(probe_value(model, x, dy))
            p.data -= sign * eps * v
        numeric = (vals[0] - vals[1]) / (2 * eps)
        assert abs(numeric - np.sum(grads[name] * v)) <= 1e-6 + 1e-4 * abs(numeric), name


# --- weights in and out ------------------------------------------------------------------
def fake_vgg16(path, width, rng):
    """A torchvision-layout VGG16 .npz at ``width`` (features.K conv, classifier.0 / .3 fc)."""
    arrays, k, c_in = {}, 0, 3
    for c, n in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        c = max(1, round(c * width))
        for _ in range(n):
            arrays[f"features.{k}.weight"] = rng.standard_normal((c, c_in, 3, 3)).astype(np.float32)
            arrays[f"features.{k}.bias"] = rng.standard_normal(c).astype(np.float32)
            k, c_in = k + 2, c
        k += 1
    fc = max(1, round(4096 * width))
    arrays["classifier.0.weight"] = rng.standard_normal((fc, c_in * 49)).astype(np.float32)
    arrays["classifier.0.bias"] = rng.standard_normal(fc).astype(np.float32)
    arrays["classifier.3.weight"] = rng.standard_normal((fc, fc)).astype(np.float32)
    arrays["classifier.3.bias"] = rng.standard_normal(fc).astype(np.float32)
    save_npz(path, arrays, {})
    return arrays


def test_vgg16_init_loads_the_convs_and_vgg_shaped_fcs(tmp_path):
    arrays = fake_vgg16(tmp_path / "vgg16.npz", TINY, np.random.default_rng(0))
    m = build("deeplab-largefov", width=TINY)
    fc6 = m.fc6.weight.data.copy()
    m.load_vgg16(tmp_path / "vgg16.npz")
    np.testing.assert_array_equal(m.conv1_1.weight.data, arrays["features.0.weight"])
    np.testing.assert_array_equal(m.conv5_3.bias.data, arrays["features.28.bias"])
    np.testing.assert_array_equal(m.fc6.weight.data, fc6)           # 3x3/1024: not VGG16's shape
    f = build("dilation-frontend", width=TINY).load_vgg16(tmp_path / "vgg16.npz")
    np.testing.assert_array_equal(f.fc6.weight.data, arrays["classifier.0.weight"].reshape(f.fc6.weight.shape))
    np.testing.assert_array_equal(f.fc7.bias.data, arrays["classifier.3.bias"])


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip(tmp_path, name):
    a = tiny(name, seed=4)
    a.save(tmp_path / "m.npz")
    b = load_model(tmp_path / "m.npz", dtype="float64").eval()
    assert b.name == name and b.config == a.config
    x = image("numpy", (1, 3, 10, 12))
    np.testing.assert_array_equal(a.forward(x), b.forward(x))


def test_models_run_on_the_device1_backend():
    m = build("deeplab-aspp", n_class=4, width=TINY).to("strict:device1").eval()
    x = image("strict:device1", (1, 3, 9, 6), "float32")
    y = m.forward(x)
    assert tuple(y.shape) == (1, 4, 9, 6) and y.device == x.device
    assert tuple(m.backward(y).shape) == (1, 3, 9, 6)


# --- PyTorch ------------------------------------------------------------------------------
def torch_deeplab(torch, width, n_class, rates):
    """DeepLab written directly in PyTorch from the paper's description (not from minifcn's
    tables): VGG16 3x3 pad-1 convs, pools 1-3 3x3/2 pad 1 ceil, pools 4-5 3x3/1 pad 1,
    conv5 dilation 2; per rate r a branch fc6 (3x3, dilation r) - fc7 - fc8; the branch
    scores summed, resized to the input with align_corners=True. Eval mode (no dropout)."""
    nn = torch.nn
    c = lambda n: max(1, round(n * width))                     # noqa: E731

    class DeepLab(nn.Module):
        def __init__(self):
            super().__init__()
            c_in = 3
            self.stages = []
            for b, (ch, n) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), 1):
                d = 2 if b == 5 else 1
                for i in range(1, n + 1):
                    setattr(self, f"conv{b}_{i}", nn.Conv2d(c_in, c(ch), 3, padding=d, dilation=d))
                    c_in = c(ch)
                self.stages.append((b, n, nn.MaxPool2d(3, 2 if b <= 3 else 1, 1, ceil_mode=True)))
            self.suffixes = [""] if len(rates) == 1 else [f"_{k}" for k in range(1, len(rates) + 1)]
            for s, r in zip(self.suffixes, rates):
                setattr(self, f"fc6{s}", nn.Conv2d(c_in, c(1024), 3, padding=r, dilation=r))
                setattr(self, f"fc7{s}", nn.Conv2d(c(1024), c(1024), 1))
                setattr(self, f"fc8{s}", nn.Conv2d(c(1024), n_class, 1))

        def forward(self, x):
            h = x
            for b, n, pool in self.stages:
                for i in range(1, n + 1):
                    h = torch.relu(getattr(self, f"conv{b}_{i}")(h))
                h = pool(h)
            scores = 0
            for s in self.suffixes:
                g = torch.relu(getattr(self, f"fc6{s}")(h))
                g = torch.relu(getattr(self, f"fc7{s}")(g))
                scores = scores + getattr(self, f"fc8{s}")(g)
            return nn.functional.interpolate(scores, size=x.shape[2:], mode="bilinear", align_corners=True)

    return DeepLab().double()


@pytest.mark.parametrize("name,rates", [("deeplab-largefov", (12,)), ("deeplab-aspp", (6, 12, 18, 24))])
def test_agrees_with_pytorch_forward_and_every_gradient(name, rates):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    # sizes: odd, tiny, one larger than the dilation rates, and two drawn at random
    sizes = [(13, 10), (1, 2), (45, 38)] + [tuple(int(v) for v in rng.integers(3, 40, 2)) for _ in range(2)]
    for k, (h, w) in enumerate(sizes):
        model = randomize(build(name, n_class=4, width=TINY).to(dtype="float64"), 9 + k).eval()
        net = torch_deeplab(torch, TINY, 4, rates)
        ours = dict(model.named_parameters())
        assert sorted(ours) == sorted(n for n, _ in net.named_parameters())
        with torch.no_grad():
            for n, p in net.named_parameters():
                p.copy_(torch.tensor(ours[n].data))
        x = rng.standard_normal((2, 3, h, w))
        tx = torch.tensor(x, requires_grad=True)
        ty = net(tx)
        model.zero_grad()
        y = model.forward(x)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10, err_msg=f"forward {(h, w)}")
        dy = rng.standard_normal(y.shape)
        ty.backward(torch.tensor(dy))
        np.testing.assert_allclose(model.backward(dy), tx.grad.numpy(), rtol=1e-9, atol=1e-10,
                                   err_msg=f"dx {(h, w)}")
        for n, p in net.named_parameters():
            np.testing.assert_allclose(ours[n].grad, p.grad.numpy(), rtol=1e-9, atol=1e-9,
                                       err_msg=f"{n} {(h, w)}")


@pytest.mark.parametrize("name", NAMES)
def test_torch_twin_computes_the_same_scores(name):
    """model.torch_module() (for ``minifcn bench --compare torch``) is the same function."""
    torch = pytest.importorskip("torch")
    model = tiny(name, dtype="float32", seed=6)
    x = image("numpy", (1, 3, 21, 18), "float32")
    twin = model.torch_module().eval()
    assert sorted(n for n, _ in twin.named_parameters()) == sorted(n for n, _ in model.named_parameters())
    with torch.no_grad():
        np.testing.assert_allclose(twin(torch.tensor(x)).numpy(), model.forward(x), rtol=1e-4, atol=1e-5)
