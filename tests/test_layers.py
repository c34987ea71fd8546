"""Layers: gradient checks through the Layer API on every backend, gradient
accumulation, frozen parameters, state dicts, moving between backends and dtypes,
train/eval."""
import numpy as np
import pytest

from minifcn import functional as F
from minifcn.backend import RNG, backend_of, get_backend, to_numpy
from minifcn.gradcheck import check_backward, check_layer
from minifcn.layers import Buffer, Conv2d, ConvTranspose2d, Crop, Dropout, Layer, MaxPool2d, Parameter, ReLU
from minifcn.optim import SGD


class TinyNet(Layer):
    """conv -> relu -> pool -> dropout -> upsample -> crop back to the input size."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.conv = Conv2d(2, 3, 3, padding=1, rng=rng)
        self.relu = ReLU()
        self.pool = MaxPool2d(2, 2, ceil_mode=True)
        self.drop = Dropout(0.5, rng=RNG(seed))
        self.up = ConvTranspose2d(3, 3, 4, stride=2)
        self.crop = Crop((1, 1))

    def forward(self, x):
        h = self.drop(self.pool(self.relu(self.conv(x))))
        return self.crop(self.up(h), tuple(x.shape[2:]))

    def backward(self, dy):
        for layer in (self.crop, self.up, self.drop, self.pool, self.relu, self.conv):
            dy = layer.backward(dy)
        return dy


def _x(backend, *shape, seed=1):
    return backend.asarray(np.random.default_rng(seed).standard_normal(shape))


# ------------------------------------------------------------------- gradient checks
@pytest.mark.parametrize("make", [
    lambda: Conv2d(2, 3, 3, stride=2, padding=1, rng=0),
    lambda: Conv2d(2, 2, (1, 3), padding=(0, 2), dilation=(1, 2), rng=1),
    lambda: Conv2d(3, 2, 1, bias=False, rng=2),
], ids=["conv3x3-s2-p1", "conv1x3-dilated", "conv1x1-nobias"])
def test_conv2d_layer_gradcheck(backend, make):
    layer = make().to(backend.name, "float64")
    if layer.bias is not None:                   # biases start at zero; check a non-zero one
        layer.bias.data = _x(backend, layer.bias.shape[0], seed=9)
    r = check_layer(layer, _x(backend, 2, layer.weight.shape[1], 5, 6))
    assert r.ok, str(r)
    assert r.checked == 2 * layer.weight.shape[1] * 30 + sum(int(np.prod(p.shape)) for p in layer.parameters())


def test_conv_transpose2d_layer_gradcheck(backend):
    layer = ConvTranspose2d(2, 3, 4, stride=2, padding=1, bias=True).to(backend.name, "float64")
    layer.bias.data = _x(backend, 3, seed=9)
    r = check_layer(layer, _x(backend, 1, 2, 3, 4))
    assert r.ok, str(r)
    assert layer.weight.frozen                   # restored after the check


@pytest.mark.parametrize("make,shape", [
    (lambda: MaxPool2d(2, 2, ceil_mode=True), (1, 2, 5, 5)),
    (lambda: MaxPool2d(3, 2, padding=1, ceil_mode=True), (1, 1, 6, 7)),
    (lambda: ReLU(), (1, 2, 3, 4)),
    (lambda: Dropout(0.5).eval(), (1, 2, 3, 4)),
], ids=["maxpool2-ceil", "maxpool3-p1", "relu", "dropout-eval"])
def test_parameterless_layer_gradcheck(backend, make, shape):
    x = np.random.default_rng(2).permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 1.05
    r = check_layer(make(), backend.asarray(x))
    assert r.ok, str(r)


def test_dropout_layer_gradcheck_in_training(backend):
    layer = Dropout(0.4)

    def forward(x):
        layer.rng = RNG(3)                       # the same mask on every call
        return layer.forward(x), None

    r = check_backward(forward, lambda dy, _: layer.backward(dy), [_x(backend, 2, 2, 3, 3)])
    assert r.ok, str(r)


def test_crop_layer_gradcheck(backend):
    r = check_layer(Crop((2, 1)), _x(backend, 1, 2, 6, 5), forward_kwargs={"size": (3, 3)})
    assert r.ok, str(r)


def test_tiny_net_gradcheck(backend):
    net = TinyNet().to(backend.name, "float64").eval()
    net.up.weight.data = net.up.weight.data + _x(backend, 3, 3, 4, 4, seed=4) * 0.1   # not only diagonal
    x = np.random.default_rng(5).permutation(2 * 2 * 6 * 7).reshape(2, 2, 6, 7) * 0.01 - 1.0
    r = check_layer(net, backend.asarray(x), directions=4)
    assert r.ok, str(r)


# --------------------------------------------------------------- layer bookkeeping
def test_backward_accumulates_across_passes(backend):
    net = TinyNet().to(backend.name, "float64").eval()
    net.up.weight.frozen = False
    x, dy = _x(backend, 2, 2, 6, 7), _x(backend, 2, 3, 6, 7, seed=2)
    net(x)
    net.backward(dy)
    once = {k: to_numpy(p.grad).copy() for k, p in net.named_parameters()}
    assert all(np.any(g) for g in once.values())
    net(x)
    net.backward(dy)
    for k, p in net.named_parameters():
        np.testing.assert_allclose(to_numpy(p.grad), 2 * once[k], rtol=1e-15, err_msg=k)
    net.zero_grad()
    assert all(not np.any(to_numpy(p.grad)) for p in net.parameters())


def test_frozen_parameters_get_no_gradient(backend):
    net = TinyNet().to(backend.name, "float64").eval()
    net.conv.weight.frozen = True
    assert net.up.weight.frozen                     # transposed convs are frozen by default
    net(_x(backend, 1, 2, 6, 7))
    dx = net.backward(_x(backend, 1, 3, 6, 7, seed=2))
    assert tuple(dx.shape) == (1, 2, 6, 7)
    assert not np.any(to_numpy(net.conv.weight.grad)) and not np.any(to_numpy(net.up.weight.grad))
    assert np.any(to_numpy(net.conv.bias.grad))


def test_conv2d_backward_can_skip_the_input_gradient(backend):
    layer = Conv2d(2, 3, 3, rng=0).to(backend.name, "float64")
    layer(_x(backend, 1, 2, 5, 5))
    assert layer.backward(_x(backend, 1, 3, 3, 3), need_dx=False) is None
    assert np.any(to_numpy(layer.weight.grad))


def test_named_parameters_order_and_defaults():
    net = TinyNet()
    names = [k for k, _ in net.named_parameters()]
    assert names == ["conv.weight", "conv.bias", "up.weight"]
    p = dict(net.named_parameters())
    assert p["conv.bias"].lr_mult == 2.0 and p["conv.bias"].decay_mult == 0.0
    assert p["conv.weight"].lr_mult == 1.0 and not p["conv.weight"].frozen
    assert p["up.weight"].frozen and p["conv.weight"].data.dtype == np.float32
    assert Parameter(np.ones((2, 3))).grad.shape == (2, 3)
    assert repr(p["conv.bias"]) == "Parameter(shape=(3,), dtype=float32, frozen=False)"


def test_reassigning_a_member_updates_the_registry():
    conv = Conv2d(2, 3, 3, rng=0)
    conv.bias = None
    assert [k for k, _ in conv.named_parameters()] == ["weight"]
    conv.bias = Parameter(np.ones(3, np.float32))
    assert [k for k, _ in conv.named_parameters()] == ["weight", "bias"]
    net = TinyNet()
    net.drop = Dropout(0.1)
    assert [k for k, _ in net.named_parameters()] == ["conv.weight", "conv.bias", "up.weight"]


def test_state_dict_round_trip(backend):
    a = TinyNet(seed=0).to(backend.name, "float64").eval()
    b = TinyNet(seed=1).to(backend.name, "float64").eval()
    x = _x(backend, 1, 2, 6, 7)
    assert not np.allclose(to_numpy(a(x)), to_numpy(b(x)))
    host = {k: to_numpy(v) for k, v in a.state_dict().items()}      # e.g. what an .npz holds
    b.load_state_dict(host)
    np.testing.assert_array_equal(to_numpy(a(x)), to_numpy(b(x)))
    for _, p in b.named_parameters():
        assert backend_of(p.data).name == backend.name and p.data.dtype == backend.xp.float64


def test_load_state_dict_errors_name_every_problem_and_change_nothing():
    net = TinyNet()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    bad = {k: np.zeros_like(v) for k, v in before.items()}
    del bad["conv.bias"]
    bad["conv.weight"] = np.zeros((3, 2, 5, 5))
    bad["score.weight"] = np.zeros(1)
    with pytest.raises(ValueError) as e:
        net.load_state_dict(bad)
    msg = str(e.value)
    assert "does not fit TinyNet" in msg
    assert "missing keys: conv.bias" in msg
    assert "unexpected keys: score.weight" in msg
    assert "conv.weight: expected (3, 2, 3, 3), got (3, 2, 5, 5)" in msg
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("target", ["numpy", "strict", "strict:device1"])
def test_to_moves_parameters_between_backends_and_dtypes(backend, target):
    net = TinyNet().to(backend.name, "float64")
    ref = {k: to_numpy(v) for k, v in net.state_dict().items()}
    net.to(target)
    for k, p in net.named_parameters():
        assert backend_of(p.data).name == target and backend_of(p.grad).name == target
        np.testing.assert_array_equal(to_numpy(p.data), ref[k])
        assert str(p.data.dtype).endswith("float64")
    net.to(dtype="float32")
    for k, p in net.named_parameters():
        assert str(p.data.dtype).endswith("float32") and str(p.grad.dtype).endswith("float32")
        assert backend_of(p.data).name == target
        np.testing.assert_allclose(to_numpy(p.data), ref[k], rtol=1e-7)


def test_train_and_eval_toggle_dropout_in_sub_layers(backend):
    net = TinyNet().to(backend.name, "float64")
    x = _x(backend, 1, 2, 6, 7)
    assert net.training and net.drop.training
    net.eval()
    assert not net.training and not net.drop.training and not net.conv.training
    y1, y2 = to_numpy(net(x)), to_numpy(net(x))
    np.testing.assert_array_equal(y1, y2)
    net.train()
    assert net.drop.training
    assert not np.array_equal(to_numpy(net(x)), y1)


def test_layer_constructor_errors():
    with pytest.raises(ValueError, match=r"unknown init 'xavier'; expected 'he' or 'zeros'"):
        Conv2d(1, 1, 3, init="xavier")
    with pytest.raises(ValueError, match=r"bilinear init needs a square kernel, got \(3, 4\)"):
        ConvTranspose2d(1, 1, (3, 4))
    with pytest.raises(ValueError, match=r"unknown init 'ones'"):
        ConvTranspose2d(1, 1, 4, init="ones")
    z = ConvTranspose2d(2, 2, 3, init="zeros", frozen=False)
    assert not np.any(z.weight.data) and not z.weight.frozen


def test_layers_agree_with_functional_ops(backend):
    """The layers are thin wrappers: same numbers as calling F directly."""
    x = _x(backend, 1, 2, 5, 5)
    conv = Conv2d(2, 3, 3, padding=1, rng=0).to(backend.name, "float64")
    y, _ = F.conv2d(x, conv.weight.data, conv.bias.data, 1, 1)
    np.testing.assert_array_equal(to_numpy(conv(x)), to_numpy(y))
    up = ConvTranspose2d(2, 2, 4, stride=2).to(backend.name, "float64")
    y, _ = F.conv_transpose2d(x, up.weight.data, None, 2)
    np.testing.assert_array_equal(to_numpy(up(x)), to_numpy(y))


# ------------------------------------------------------------------------ buffers
class Tracked(Layer):
    """y = weight * x (per channel); keeps the running mean of x per channel and a count
    of forward passes as buffers, as BatchNorm keeps its running statistics."""

    def __init__(self, c):
        self.weight = Parameter(np.ones(c, np.float32))
        self.running_mean = Buffer(np.zeros(c, np.float32))
        self.register_buffer("count", np.zeros((), np.int64))
        self.conv = Conv2d(c, c, 1, rng=0)

    def forward(self, x):
        xp = backend_of(x).xp
        if self.training:
            self.running_mean.data = 0.9 * self.running_mean.data + 0.1 * xp.mean(x, axis=(0, 2, 3))
            self.count.data = self.count.data + 1
        return self.conv(x * xp.reshape(self.weight.data, (1, -1, 1, 1)))


class HoldsTracked(Layer):
    def __init__(self):
        self.pre = Conv2d(2, 2, 1, rng=1)
        self.bn = Tracked(2)


def test_buffers_are_state_but_not_parameters(backend):
    net = HoldsTracked().to(backend.name, "float64")
    assert [k for k, _ in net.named_buffers()] == ["bn.running_mean", "bn.count"]
    assert [k for k, _ in net.named_parameters()] == ["pre.weight", "pre.bias", "bn.weight", "bn.conv.weight",
                                                       "bn.conv.bias"]
    assert list(net.state_dict()) == ["pre.weight", "pre.bias", "bn.weight", "bn.running_mean", "bn.count",
                                      "bn.conv.weight", "bn.conv.bias"]          # registration order
    assert all(isinstance(b, Buffer) for b in net.buffers()) and not hasattr(net.bn.count, "grad")
    x = _x(backend, 2, 2, 3, 4)
    net.bn(x)
    mean = to_numpy(net.bn.running_mean.data).copy()
    np.testing.assert_allclose(mean, 0.1 * to_numpy(x).mean(axis=(0, 2, 3)), rtol=1e-12)
    # the optimiser never sees buffers: weight decay and momentum leave them alone
    opt = SGD(net.named_parameters(), lr=0.1, momentum=0.9, weight_decay=0.5)
    for p in net.parameters():
        p.grad = p.grad + 1.0
    opt.step()
    np.testing.assert_array_equal(to_numpy(net.bn.running_mean.data), mean)
    assert int(to_numpy(net.bn.count.data)) == 1
    # checkpoints carry them
    host = {k: to_numpy(v) for k, v in net.state_dict().items()}
    other = HoldsTracked().to(backend.name, "float64")
    other.load_state_dict(host)
    np.testing.assert_array_equal(to_numpy(other.bn.running_mean.data), mean)
    assert int(to_numpy(other.bn.count.data)) == 1
    assert backend_of(other.bn.running_mean.data).name == backend.name
    del host["bn.running_mean"]
    with pytest.raises(ValueError, match="missing keys: bn.running_mean"):
        other.load_state_dict(host)


@pytest.mark.parametrize("target", ["numpy", "strict:device1"])
def test_to_moves_buffers_and_casts_only_floating_ones(target):
    net = HoldsTracked()
    net.bn.running_mean.data = np.array([1.5, -2.0], np.float32)
    net.to(target, "float64")
    rm, count = net.bn.running_mean.data, net.bn.count.data
    assert backend_of(rm).name == target and backend_of(count).name == target
    assert str(rm.dtype).endswith("float64") and str(count.dtype).endswith("int64")
    np.testing.assert_array_equal(to_numpy(rm), [1.5, -2.0])
    net.bn(get_backend(target).asarray(np.ones((1, 2, 2, 2)), dtype="float64"))    # updates on the device
    np.testing.assert_allclose(to_numpy(net.bn.running_mean.data), [1.45, -1.7], rtol=1e-12)
    assert int(to_numpy(net.bn.count.data)) == 1


def test_inline_members_are_named_and_reached_as_the_parents_own(backend):
    class Holder(Layer):
        def __init__(self):
            self.register_inline("body", HoldsTracked())
            self.head = Conv2d(2, 1, 1, rng=2)

    h = Holder().to(backend.name, "float64")
    assert list(h.state_dict()) == ["pre.weight", "pre.bias", "bn.weight", "bn.running_mean", "bn.count",
                                    "bn.conv.weight", "bn.conv.bias", "head.weight", "head.bias"]
    assert [k for k, _ in h.named_buffers()] == ["bn.running_mean", "bn.count"]
    assert h.pre is h.body.pre and h.bn.conv is h.body.bn.conv
    assert dict(h.children())["body"] is h.body
    h.eval()
    assert not h.body.bn.conv.training
    with pytest.raises(ValueError, match=r"Holder.pre is already a member of its inline sub-layer 'body'"):
        h.pre = Conv2d(2, 2, 1)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        h.nothing

    class Clash(Layer):
        def __init__(self):
            self.bn = ReLU()
            self.register_inline("body", HoldsTracked())

    with pytest.raises(ValueError, match="names taken twice: bn"):
        Clash()

    class TwoBodies(Layer):
        def __init__(self):
            self.register_inline("body1", HoldsTracked())
            self.register_inline("body2", HoldsTracked())

    with pytest.raises(ValueError, match="cannot inline HoldsTracked as 'body2'.*names taken twice: bn, pre"):
        TwoBodies()
    with pytest.raises(ValueError, match="Holder.head is already a member"):
        h.register_inline("head", ReLU())
