"""The four FCNs: gradients, shapes, initial output, weights in and out, backends, and an
independent PyTorch implementation of the same nets."""
import numpy as np
import pytest

from minifcn.backend import backend_of, get_backend, to_numpy
from minifcn.gradcheck import check_layer
from minifcn.models import FCN8s, FCN8sAtOnce, FCN16s, FCN32s, build, load_model

NAMES = ["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"]
TINY = 1 / 32          # channels 2-4-8-16-16, fc 128


def randomize(model, seed=0):
    """Non-zero values for every parameter (score layers start at zero, biases too):
    He-scaled weights, small biases, bilinear upsampling plus noise."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        shape = p.shape
        if name.endswith(".bias"):
            new = 0.1 * rng.standard_normal(shape)
        elif name.startswith("upscore"):
            new = to_numpy(p.data) + 0.05 * rng.standard_normal(shape)
        else:
            new = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        b = backend_of(p.data)
        p.data = b.xp.astype(b.asarray(new), p.data.dtype)
    return model


def tiny(name, backend="numpy", dtype="float64", seed=0, **kw):
    return randomize(build(name, n_class=3, width=TINY, **kw).to(backend, dtype), seed).eval()


def image(backend, shape=(1, 3, 9, 11), dtype="float64", seed=1):
    return get_backend(backend).asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


# --- gradients ---------------------------------------------------------------------------
def probe_value(model, x, dy):
    return float(np.sum(to_numpy(dy) * to_numpy(model.forward(x))))


@pytest.mark.parametrize("name,same", [(n, False) for n in NAMES] + [("fcn32s", True), ("fcn8s", True)])
def test_gradcheck_every_parameter(name, same):
    """float64 central differences against the hand-written backward, on numpy: for the input
    and for EACH parameter tensor separately one random direction (every entry takes part),
    plus a sample of single entries. The upsampling weights are unfrozen for the check.
    ``same``: the same-padding trunk, whose heads crop h instead of the skips."""
    model = tiny(name, learn_upsampling=True, same_padding=same)
    x = image("numpy")
    rng = np.random.default_rng(2)
    model.zero_grad()
    y = model.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = model.backward(dy)
    targets = [("x", x, dx)] + [(n, p.data, p.grad) for n, p in model.named_parameters()]
    assert not any(p.frozen for p in model.parameters())
    eps = 1e-6
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


# the head without and with skips, and with skips that crop h (same padding)
@pytest.mark.parametrize("name,same", [("fcn32s", False), ("fcn8s-atonce", False), ("fcn8s", True)])
def test_gradcheck_on_every_backend(name, same, backend):
    """Random-direction checks of the whole model (input and all parameters) on each backend."""
    model = tiny(name, backend.name, same_padding=same)
    report = check_layer(model, image(backend.name, (1, 3, 5, 4)), directions=2, seed=3)
    assert report.ok, str(report)


def test_gradcheck_with_dropout_in_training_mode():
    """Training mode: the dropout masks are redrawn from model.rng, so every probe restarts
    the generator from the same state and sees the same masks."""
    model = tiny("fcn16s").train()
    x = image("numpy")
    start = model.rng.state()
    model.rng.set_state(start)
    model.zero_grad()
    y = model.forward(x)
    dy = np.random.default_rng(4).standard_normal(y.shape)
    model.backward(dy)
    eps = 1e-6
    for name in ("fc6.weight", "fc7.weight", "conv5_3.weight", "score_fr.weight"):
        p = dict(model.named_parameters())[name]
        v = np.random.default_rng(5).standard_normal(p.shape)
        values = []
        for sign in (1, -1):
            p.data += sign * eps * v
            model.rng.set_state(start)
            values.append(probe_value(model, x, dy))
            p.data -= sign * eps * v
        numeric, analytic = (values[0] - values[1]) / (2 * eps), float(np.sum(p.grad * v))
        assert abs(numeric - analytic) <= 1e-6 + 1e-4 * abs(numeric), (name, numeric, analytic)
    model.rng.set_state(start)
    assert np.array_equal(model.forward(x), y)
    assert not np.array_equal(model.eval().forward(x), y)        # dropout really was active


# --- shapes and initial output -----------------------------------------------------------
@pytest.mark.parametrize("same", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_output_size_equals_input_size(name, same):
    model = build(name, n_class=5, width=TINY, same_padding=same)
    for h, w in [(1, 1), (1, 6), (2, 3), (13, 17), (31, 2), (32, 33), (47, 64)]:
        x = image("numpy", (1, 3, h, w), "float32")
        y = model.forward(x)
        assert y.shape == (1, 5, h, w) and y.dtype == np.float32
        if (h, w) == (13, 17):
            assert model.backward(y).shape == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_initial_output_is_exactly_zero(name):
    model = build(name, width=TINY)
    x = image("numpy", (1, 3, 20, 15), "float32")
    assert np.all(model.forward(x) == 0)
    randomize(model)
    assert np.count_nonzero(model.forward(x)) > 0.99 * 21 * 20 * 15


def test_structure_and_config():
    m = FCN8s(n_class=7, width=TINY)
    params = dict(m.named_parameters())
    assert params["score_fr.weight"].shape == (7, 128, 1, 1)
    assert params["score_pool4.weight"].shape == (7, 16, 1, 1)
    assert params["score_pool3.weight"].shape == (7, 8, 1, 1)
    for name, k in [("upscore2", 4), ("upscore_pool4", 4), ("upscore8", 16)]:
        p = params[f"{name}.weight"]
        assert p.shape == (7, 7, k, k) and p.frozen and f"{name}.bias" not in params
        assert getattr(m, name).stride == k // 2 if k == 4 else getattr(m, name).stride == 8
    assert not any(p.frozen for p in FCN32s(width=TINY, learn_upsampling=True).parameters())
    assert m.config == {"name": "fcn8s", "n_class": 7, "width": TINY, "learn_upsampling": False,
                        "dropout": 0.5, "seed": 0}
    again = build(**m.config)
    assert type(again) is FCN8s and list(again.state_dict()) == list(m.state_dict())
    same = FCN8s(n_class=7, width=TINY, same_padding=True)
    assert same.config == {**m.config, "same_padding": True}
    again = build(**same.config)
    assert again.conv1_1.padding in (1, (1, 1)) and again.fc6.padding in (3, (3, 3))
    assert m.conv1_1.padding in (100, (100, 100)) and m.fc6.padding in (0, (0, 0))
    assert [n for n, _ in same.named_parameters()] == [n for n, _ in m.named_parameters()]
    with pytest.raises(ValueError, match="same_padding must be True or False, got 'yes'"):
        FCN8s(width=TINY, same_padding="yes")
    assert [n for n, _ in FCN32s(width=TINY).named_parameters()][-3:] == \
        ["score_fr.weight", "score_fr.bias", "upscore.weight"]
    assert "upscore16.weight" in FCN16s(width=TINY).state_dict()
    assert m.drop6.rng is m.rng and m.drop7.rng is m.rng and m.drop6.p == 0.5
    assert FCN16s(width=TINY, dropout=0.2).drop7.p == 0.2
    assert [build(n, width=TINY).name for n in NAMES] == NAMES
    with pytest.raises(ValueError, match="unknown model 'fcn4s'"):
        build("fcn4s")
    with pytest.raises(ValueError, match="n_class"):
        build("fcn8s", n_class=0)


def test_bad_inputs_are_refused():
    m = build("fcn32s", width=TINY)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\), got \(1, 4, 5, 5\)"):
        m.forward(np.zeros((1, 4, 5, 5), np.float32))
    with pytest.raises(ValueError, match="before|shape"):
        m.backward(np.zeros((1, 21, 5, 5), np.float32))
    m.forward(np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"\(1, 21, 5, 5\), got \(1, 21, 5, 6\)"):
        m.backward(np.zeros((1, 21, 5, 6), np.float32))


def test_gradients_accumulate_and_frozen_stay_zero():
    m = tiny("fcn8s", dtype="float32", learn_upsampling=True)
    for p in (m.upscore2.weight, m.upscore8.weight):
        p.frozen = True
    x = image("numpy", dtype="float32")
    dy = np.ones((1, 3, 9, 11), np.float32)
    m.zero_grad()
    m.forward(x)
    dx1 = m.backward(dy)
    once = {n: p.grad.copy() for n, p in m.named_parameters()}
    m.forward(x)
    assert m.backward(dy, need_dx=False) is None
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[n], rtol=1e-5, atol=1e-6)
    assert not np.any(m.upscore8.weight.grad) and not np.any(m.upscore2.weight.grad)
    assert np.any(m.upscore_pool4.weight.grad) and np.any(dx1)


def test_atonce_is_fcn8s_with_scaled_pool_scores():
    """score(0.01 * pool4) = (0.01 W) pool4 + b: FCN8sAtOnce with weights W equals FCN8s with
    the score_pool4 / score_pool3 weights scaled by 0.01 / 0.0001."""
    a = tiny("fcn8s-atonce")
    b = build("fcn8s", n_class=3, width=TINY).to(dtype="float64").eval()
    state = dict(a.state_dict())
    state["score_pool4.weight"] = state["score_pool4.weight"] * 0.01
    state["score_pool3.weight"] = state["score_pool3.weight"] * 0.0001
    b.load_state_dict(state)
    x = image("numpy")
    np.testing.assert_allclose(a.forward(x), b.forward(x), rtol=1e-12, atol=1e-12)


# --- weights in and out ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_state_dict_and_checkpoint_round_trips_are_bit_identical(tmp_path, dtype):
    a = tiny("fcn16s", dtype=dtype, seed=7)
    x = image("numpy", dtype=dtype)
    ya = a.forward(x)
    b = build("fcn16s", n_class=3, width=TINY).to(dtype=dtype).eval()
    b.load_state_dict(a.state_dict())
    assert np.array_equal(b.forward(x), ya)
    path = tmp_path / "m.npz"
    a.save(path)
    c = load_model(path)
    assert type(c) is FCN16s and c.config == a.config and c.score_fr.weight.data.dtype == np.dtype(dtype)
    assert np.array_equal(c.eval().forward(x), ya)
    d = build("fcn16s", n_class=3, width=TINY).to(dtype=dtype).eval().load(path)
    assert np.array_equal(d.forward(x), ya)
    e = load_model(path, backend="strict:device1")                 # same numbers, other matmul path
    np.testing.assert_allclose(to_numpy(e.eval().forward(get_backend("strict:device1").asarray(x))), ya,
                               rtol=1e-5, atol=1e-6)


def test_wrong_checkpoint_fails_naming_keys(tmp_path):
    path = tmp_path / "fcn32s.npz"
    FCN32s(width=TINY).save(path)
    with pytest.raises(ValueError) as err:
        FCN8s(width=TINY).load(path)
    msg = str(err.value)
    for key in ("upscore.weight", "score_pool4.weight", "score_pool3.weight", "upscore8.weight",
                "upscore2.weight", "fcn32s"):
        assert key in msg
    FCN32s(n_class=5, width=TINY).save(path)
    with pytest.raises(ValueError, match=r"score_fr.weight: expected \(21, 128, 1, 1\), got \(5, 128, 1, 1\)"):
        FCN32s(width=TINY).load(path)


def test_load_model_tolerates_optimiser_and_training_sections(tmp_path):
    from minifcn.io import load_npz, save_npz

    m = tiny("fcn8s", dtype="float32")
    arrays = {**m.state_dict(), "optim/fc6.weight": np.ones(3), "train/step": np.array(12)}
    save_npz(tmp_path / "ckpt.npz", arrays, {"model": m.config, "epoch": 3})
    loaded = load_model(tmp_path / "ckpt.npz")
    assert all(np.array_equal(loaded.state_dict()[k], v) for k, v in m.state_dict().items())
    assert load_npz(tmp_path / "ckpt.npz")[1]["epoch"] == 3
    save_npz(tmp_path / "plain.npz", m.state_dict())
    with pytest.raises(ValueError, match="no model config"):
        load_model(tmp_path / "plain.npz")


def test_staged_training_copies_shared_parameters():
    m32 = tiny("fcn32s", dtype="float32", seed=3)
    m16 = FCN16s.from_fcn32s(m32)
    s32, s16 = m32.state_dict(), m16.state_dict()
    shared = [k for k in s32 if k != "upscore.weight"]
    assert all(np.array_equal(s16[k], s32[k]) for k in shared)
    assert not np.any(s16["score_pool4.weight"]) and not np.any(s16["score_pool4.bias"])
    assert m16.config == {**m32.config, "name": "fcn16s"}
    randomize(m16, seed=4)
    m8 = FCN8s.from_fcn16s(m16)
    s16, s8 = m16.state_dict(), m8.state_dict()
    assert all(np.array_equal(s8[k], s16[k]) for k in s16 if k != "upscore16.weight")
    assert not np.any(s8["score_pool3.weight"])
    s8["fc7.weight"][...] = 0                                  # a copy, not shared storage
    assert np.any(m16.fc7.weight.data)
    with pytest.raises(ValueError, match="from a FCN16s, got FCN32s"):
        FCN8s.from_fcn16s(m32)
    fc6 = m32.fc6.weight.data.astype(np.float64)
    on_device = FCN16s.from_fcn32s(m32.to("strict:device1", "float64"))    # keeps backend and dtype
    assert backend_of(on_device.fc6.weight.data).name == "strict:device1"
    assert np.array_equal(to_numpy(on_device.fc6.weight.data), fc6)


# --- backends ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fcn32s", "fcn8s-atonce"])
def test_models_run_on_the_device1_backend(name):
    ref = tiny(name, dtype="float32")
    x = image("numpy", (2, 3, 6, 7), "float32")
    y_ref = ref.forward(x)
    dx_ref = ref.backward(y_ref)
    dev = tiny(name, backend="strict:device1", dtype="float32")
    xd = get_backend("strict:device1").asarray(x)
    y = dev.forward(xd)
    assert backend_of(y).name == "strict:device1"
    np.testing.assert_allclose(to_numpy(y), y_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(to_numpy(dev.backward(y)), dx_ref, rtol=1e-4, atol=1e-5)
    for (n, p), (_, q) in zip(dev.named_parameters(), ref.named_parameters()):
        np.testing.assert_allclose(to_numpy(p.grad), q.grad, rtol=1e-3, atol=1e-4, err_msg=n)


# --- an independent implementation --------------------------------------------------------
OFFSETS = {"fcn32s": (19,), "fcn16s": (5, 27), "fcn8s": (5, 9, 31), "fcn8s-atonce": (5, 9, 31)}
# Same padding (conv1_1 pad 1, fc6 pad 3), worked out by hand: pool k's pixel q is centred
# on input 2^k q + (2^k - 1) / 2, and a (K, S) upsampling's pixel u on its input's (u - (K - 1) / 2) / S.
# upscore2(score_fr) u: 32 (u - 3/2) / 2 + 31/2 = 16 (u - 1) + 15/2 = pool4's pixel u - 1,
# so h is cropped by 1 (and again by 1 at pool3); the final upsampling's pixel u is centred
# on input u - 16 (FCN-32s), u - 8 (FCN-16s), u - 4 (FCN-8s).
SAME_OFFSETS = {"fcn32s": (16,), "fcn16s": (1, 8), "fcn8s": (1, 1, 4), "fcn8s-atonce": (1, 1, 4)}


def torch_fcn(name, P, x, same=False):
    """The FCNs as the reference nets define them, in PyTorch (eval mode), with the
    reference crop offsets typed in; ``same``: the same-padding trunk, h cropped at the skips."""
    import torch.nn.functional as TF

    def crop(t, o, like):
        return t[:, :, o:o + like.shape[2], o:o + like.shape[3]]

    def fuse(h, s, o):
        return crop(h, o, s) + s if same else h + crop(s, o, h)

    h, pools = x, {}
    for block, n in enumerate([2, 2, 3, 3, 3], start=1):
        for i in range(1, n + 1):
            pad = 100 if block == 1 and i == 1 and not same else 1
            h = TF.relu(TF.conv2d(h, P[f"conv{block}_{i}.weight"], P[f"conv{block}_{i}.bias"], padding=pad))
        h = TF.max_pool2d(h, 2, 2, ceil_mode=True)
        pools[block] = h
    h = TF.relu(TF.conv2d(h, P["fc6.weight"], P["fc6.bias"], padding=3 if same else 0))
    h = TF.relu(TF.conv2d(h, P["fc7.weight"], P["fc7.bias"]))
    h = TF.conv2d(h, P["score_fr.weight"], P["score_fr.bias"])
    offsets = (SAME_OFFSETS if same else OFFSETS)[name]
    if name == "fcn32s":
        return crop(TF.conv_transpose2d(h, P["upscore.weight"], stride=32), offsets[0], x)
    s4, s3 = (0.01, 0.0001) if name == "fcn8s-atonce" else (1.0, 1.0)
    h = TF.conv_transpose2d(h, P["upscore2.weight"], stride=2)
    h = fuse(h, TF.conv2d(pools[4] * s4, P["score_pool4.weight"], P["score_pool4.bias"]), offsets[0])
    if name == "fcn16s":
        return crop(TF.conv_transpose2d(h, P["upscore16.weight"], stride=16), offsets[1], x)
    h = TF.conv_transpose2d(h, P["upscore_pool4.weight"], stride=2)
    h = fuse(h, TF.conv2d(pools[3] * s3, P["score_pool3.weight"], P["score_pool3.bias"]), offsets[1])
    return crop(TF.conv_transpose2d(h, P["upscore8.weight"], stride=8), offsets[2], x)


@pytest.mark.parametrize("same", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_agrees_with_pytorch_forward_and_every_gradient(name, same):
    torch = pytest.importorskip("torch")
    model = randomize(build(name, n_class=4, width=TINY, learn_upsampling=True, same_padding=same)
                      .to(dtype="float64"), 9).eval()
    x = image("numpy", (2, 3, 13, 19))
    P = {k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items()}
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_fcn(name, P, xt, same)
    y = model.forward(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    dy = np.random.default_rng(6).standard_normal(y.shape)
    yt.backward(torch.tensor(dy))
    model.zero_grad()
    np.testing.assert_allclose(model.backward(dy), xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    for k, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, P[k].grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=k)


# --- composition, names and the registry ---------------------------------------------------
TORCHFCN_FCN8S = ([f"conv{b}_{i}.{p}" for b, n in enumerate([2, 2, 3, 3, 3], 1) for i in range(1, n + 1)
                   for p in ("weight", "bias")]
                  + ["fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias", "score_fr.weight", "score_fr.bias",
                     "upscore2.weight", "score_pool4.weight", "score_pool4.bias", "upscore_pool4.weight",
                     "score_pool3.weight", "score_pool3.bias", "upscore8.weight"])


def test_fcn_holds_its_trunk_and_keeps_torchfcn_names():
    from minifcn.models import VGG16
    from minifcn.models.vgg import FCN_VGG16

    m = FCN8s(width=TINY)
    assert isinstance(m.backbone, VGG16) and not isinstance(m, VGG16) and m.backbone.table == FCN_VGG16
    assert [n for n, _ in m.named_parameters()] == TORCHFCN_FCN8S == list(m.state_dict())
    assert m.conv1_1 is m.backbone.conv1_1 and m.trunk is m.backbone.trunk and m.rng is m.backbone.rng
    assert m.width == TINY and m.out_channels == 128 and list(m.named_buffers()) == []
    assert m.score_fr.weight.shape == (21, 128, 1, 1) and m.fc6.weight.shape == (128, 16, 7, 7)
    m.eval()
    assert not m.drop7.training and not m.backbone.training


def test_build_checks_its_arguments():
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 2"):
        build("fcn8s", width=TINY, dropout=2)
    for bad in (0, -0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=r"width must be a finite number > 0, got"):
            build("fcn32s", width=bad)
    with pytest.raises(ValueError, match=r"n_class must be an int >= 1, got 2.5"):
        build("fcn32s", n_class=2.5, width=TINY)
    assert build("fcn32s", n_class=np.int64(3), width=TINY).config["n_class"] == 3


def test_new_models_register_by_name(tmp_path):
    from minifcn.models import MODELS, Model, register_model
    from minifcn.layers import Conv2d

    assert {"fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"} <= set(MODELS)

    @register_model
    class OneConv(Model):
        name = "test-oneconv"

        def __init__(self, n_class=21, width=1.0):
            self.n_class, self.width = n_class, width
            self.score = Conv2d(3, n_class, 1)

        @property
        def config(self):
            return {"name": self.name, "n_class": self.n_class, "width": self.width}

        def forward(self, x):
            return self.score(x)

    try:
        m = build("test-oneconv", n_class=4)
        assert type(m) is OneConv and MODELS["test-oneconv"] is OneConv
        m.save(tmp_path / "m.npz")
        again = load_model(tmp_path / "m.npz")
        assert type(again) is OneConv and np.array_equal(again.score.weight.data, m.score.weight.data)
        with pytest.raises(ValueError, match="'test-oneconv' is already registered to OneConv"):
            register_model(type("Other", (Model,), {"name": "test-oneconv"}))
        with pytest.raises(ValueError, match="needs a non-empty name"):
            register_model(type("Nameless", (Model,), {}))
    finally:
        MODELS.pop("test-oneconv", None)


def test_same_seed_gives_the_initial_weights_of_before_the_trunk_table():
    """The table-built trunk draws its initial weights in the order the hand-written one did
    (conv1_1 ... conv5_3, fc6, fc7 from one generator), so runs and demos reproduce: first and
    last entries recorded from the earlier code (fcn8s, n_class 3, width 1/32, seed 0)."""
    recorded = {"conv1_1.weight": [0.03421943262219429, 0.17866984009742737],
                "conv5_3.weight": [0.09920437633991241, -0.0807994082570076],
                "fc6.weight": [0.0033800997771322727, -0.02665136754512787],
                "fc7.weight": [0.17472943663597107, 0.049988675862550735]}
    state = build("fcn8s", n_class=3, width=TINY, seed=0).state_dict()
    for name, (first, last) in recorded.items():
        w = np.reshape(state[name], -1)
        assert [float(w[0]), float(w[-1])] == [first, last], name
