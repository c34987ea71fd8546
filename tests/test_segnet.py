"""SegNet: the reference Caffe names and shapes, a decoder mirrored from the encoder
table, scores of the input's size for any H, W >= 1, a whole-model float64 gradient
check on every backend, a PyTorch cross-check of the whole net (train-mode BN, batch 2,
forward, dx, every parameter gradient and the running statistics), checkpoints with
the BN buffers."""
import numpy as np
import pytest

import reference as R
from minifcn.backend import get_backend, to_numpy
from minifcn.gradcheck import check_backward, check_layer
from minifcn.layers import BatchNorm2d, MaxPool2d, MaxUnpool2d
from minifcn.models import MODELS, build, load_model
from minifcn.models.segnet import SegNet, decoder_table
from minifcn.models.vgg import SEGNET_ENCODER, Pool, Stage

# The reference Caffe SegNet, typed in here independently of the model code:
# (stage, [(conv name, output channels)]), encoder then decoder; None = n_class
ENCODER = [(1, [("conv1_1", 64), ("conv1_2", 64)]), (2, [("conv2_1", 128), ("conv2_2", 128)]),
           (3, [("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256)]),
           (4, [("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512)]),
           (5, [("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512)])]
DECODER = [(5, [("conv5_3_D", 512), ("conv5_2_D", 512), ("conv5_1_D", 512)]),
           (4, [("conv4_3_D", 512), ("conv4_2_D", 512), ("conv4_1_D", 256)]),
           (3, [("conv3_3_D", 256), ("conv3_2_D", 256), ("conv3_1_D", 128)]),
           (2, [("conv2_2_D", 128), ("conv2_1_D", 64)]),
           (1, [("conv1_2_D", 64), ("conv1_1_D", None)])]


def expected_names():
    names = []
    for _, convs in ENCODER + DECODER:
        for conv, out in convs:
            names += [f"{conv}.weight", f"{conv}.bias"]
            if out is not None:
                names += [f"{conv}_bn.weight", f"{conv}_bn.bias"]
    return names


def test_parameter_names_shapes_and_buffers():
    model = build("segnet", n_class=7, width=0.125)
    assert isinstance(model, SegNet) and MODELS["segnet"] is SegNet
    params = dict(model.named_parameters())
    assert list(params) == expected_names()
    c_in = 3
    for _, convs in ENCODER + DECODER:
        for conv, out in convs:
            c_out = 7 if out is None else max(1, round(out * 0.125))
            assert params[f"{conv}.weight"].shape == (c_out, c_in, 3, 3), conv
            if out is not None:
                assert params[f"{conv}_bn.weight"].shape == (c_out,)
                bn = getattr(model, f"{conv}_bn")
                assert isinstance(bn, BatchNorm2d)
            c_in = c_out
    buffers = [n for n, _ in model.named_buffers()]
    assert buffers == [f"{n[:-len('.weight')]}.{b}" for n in expected_names() if n.endswith("_bn.weight")
                       for b in ("running_mean", "running_var")]
    state = model.state_dict()
    assert set(state) == set(params) | set(buffers)
    for b in range(1, 6):
        pool, up = getattr(model, f"pool{b}"), getattr(model, f"upsample{b}")
        assert isinstance(pool, MaxPool2d) and pool.return_indices and pool.ceil_mode
        assert isinstance(up, MaxUnpool2d)
    assert model.config == {"name": "segnet", "n_class": 7, "width": 0.125, "seed": 0}


def test_full_width_matches_the_reference_counts():
    params = dict(build("segnet", n_class=21).named_parameters())
    assert params["conv5_3_D.weight"].shape == (512, 512, 3, 3)
    assert params["conv4_1_D.weight"].shape == (256, 512, 3, 3)
    assert params["conv1_1_D.weight"].shape == (21, 64, 3, 3)
    count = {part: sum(int(np.prod(p.shape)) for n, p in params.items()
                       if ("_D" in n) == part.startswith("decoder") and ("_bn." in n) == (part[-2:] == "bn"))
             for part in ("encoder", "encoder bn", "decoder", "decoder bn")}
    # VGG16's 13 convolutions; BN: 2 per channel; the decoder convs 9 C_in C_out + C_out each
    assert count == {"encoder": 14_714_688, "encoder bn": 8_448, "decoder": 14_724_565, "decoder bn": 7_424}


def test_decoder_is_the_mirrored_encoder_table():
    assert [d.outputs for d in decoder_table()] == [(512, 512, 512), (512, 512, 256), (256, 256, 128),
                                                   (128, 64), (64, None)]
    small = (Stage(8, 1, batch_norm=True, pool=Pool(2, keep_indices=True)),
             Stage(16, 2, batch_norm=True, pool=Pool(2, keep_indices=True)))
    assert [(d.stage, d.outputs) for d in decoder_table(small)] == [(2, (16, 8)), (1, (None,))]
    with pytest.raises(ValueError, match="pools keep their indices"):
        decoder_table((Stage(8, 1, batch_norm=True),))
    assert SEGNET_ENCODER[0].pool.keep_indices


@pytest.mark.parametrize("size", [(1, 1), (1, 6), (5, 2), (16, 16), (33, 19)])
def test_any_size_gives_scores_of_that_size(size):
    model = build("segnet", n_class=4, width=1 / 32)
    x = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
    y = model.forward(x)
    assert y.shape == (1, 4, *size) and y.dtype == np.float32
    dx = model.backward(np.ones_like(y))
    assert dx.shape == x.shape
    model.eval()
    assert model.forward(x).shape == (1, 4, *size)


def _small(backend, n_class=3, seed=0):
    backend = get_backend(backend)
    model = build("segnet", n_class=n_class, width=1 / 64, seed=seed).to(backend, "float64")
    rng = np.random.default_rng(seed + 10)
    for name, p in model.named_parameters():      # BN away from 1 / 0, biases non-zero
        if name.endswith("_bn.weight"):
            p.data = backend.asarray(rng.uniform(0.5, 1.5, p.shape))
        elif name.endswith("bias"):
            p.data = backend.asarray(rng.standard_normal(p.shape) * 0.1)
    return model


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_segnet_gradcheck(backend, mode):
    """The whole net, every parameter and the input, in float64 (random directions)."""
    model = _small(backend)
    x = backend.asarray(np.random.default_rng(1).standard_normal((2, 3, 9, 7)))
    if mode == "eval":
        model.forward(x)              # running statistics away from 0 / 1
        model.eval()
    r = check_layer(model, x, directions=3, eps=1e-6, atol=1e-7, rtol=1e-5)
    assert r.ok, str(r)


def test_segnet_gradcheck_elementwise_on_the_input():
    """Every input pixel on NumPy (the random directions above cover the other backends)."""
    model = _small("numpy", seed=1)
    x = np.random.default_rng(2).standard_normal((2, 3, 3, 2))
    y = model.forward(x)
    dy = np.random.default_rng(3).standard_normal(tuple(y.shape))

    def fwd(x_):
        return model.forward(x_), None

    def bwd(dy_, _):
        model.forward(x)
        model.zero_grad()
        return model.backward(dy_)

    r = check_backward(fwd, bwd, [x], dy=dy, atol=1e-7, rtol=1e-5)
    assert r.ok, str(r)
    assert r.checked == 36


def torch_segnet(n_class, width):
    """A plain PyTorch SegNet in the reference's layout (returns modules and a forward)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    mods = {}
    c_in = 3
    for _, convs in ENCODER + DECODER:
        for conv, out in convs:
            c_out = n_class if out is None else max(1, round(out * width))
            mods[conv] = nn.Conv2d(c_in, c_out, 3, padding=1)
            if out is not None:
                mods[f"{conv}_bn"] = nn.BatchNorm2d(c_out)
            c_in = c_out
    net = nn.ModuleDict(mods).double().train()

    def block(h, convs):
        for conv, out in convs:
            h = net[conv](h)
            if out is not None:
                h = torch.relu(net[f"{conv}_bn"](h))
        return h

    def forward(x):
        h, saved = x, {}
        for stage, convs in ENCODER:
            h = block(h, convs)
            size = h.shape[2:]
            h, idx = torch.nn.functional.max_pool2d(h, 2, 2, ceil_mode=True, return_indices=True)
            saved[stage] = (idx, size)
        for stage, convs in DECODER:
            idx, size = saved[stage]
            h = torch.nn.functional.max_unpool2d(h, idx, 2, 2, output_size=size)
            h = block(h, convs)
        return h

    return net, forward


@pytest.mark.parametrize("size", [(13, 10), (6, 17)])
def test_segnet_matches_torch(size):
    """Weights copied into a hand-written PyTorch SegNet: scores, dx, every parameter gradient and
    every running statistic agree (float64, train-mode BN, batch 2, sizes that exercise ceil mode)."""
    torch = pytest.importorskip("torch")
    model = _small("numpy", n_class=3, seed=4)
    net, tforward = torch_segnet(3, 1 / 64)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.tensor(params[name].data))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, *size))
    tx = torch.tensor(x, requires_grad=True)
    ty = tforward(tx)
    y = model.forward(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), atol=1e-10, rtol=1e-8)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    model.zero_grad()
    dx = model.backward(dy)
    np.testing.assert_allclose(dx, tx.grad.numpy(), atol=1e-10, rtol=1e-7)
    for name, p in net.named_parameters():
        np.testing.assert_allclose(params[name].grad, p.grad.numpy(), atol=1e-10, rtol=1e-7, err_msg=name)
    buffers = dict(model.named_buffers())
    for name, b in net.named_buffers():
        if name.endswith("num_batches_tracked"):
            continue
        np.testing.assert_allclose(buffers[name].data, b.numpy(), atol=1e-12, rtol=1e-10, err_msg=name)
    model.eval()
    net.eval()
    with torch.no_grad():
        np.testing.assert_allclose(model.forward(x), tforward(torch.tensor(x)).numpy(), atol=1e-10, rtol=1e-8)


def test_checkpoint_keeps_the_buffers(tmp_path):
    model = build("segnet", n_class=3, width=1 / 64)
    x = np.random.default_rng(6).standard_normal((1, 3, 8, 8)).astype(np.float32)
    model.forward(x)                       # training: the running statistics move
    model.save(tmp_path / "segnet.npz")
    again = load_model(tmp_path / "segnet.npz")
    for (name, a), (name2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert name == name2
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    assert not np.array_equal(model.conv1_1_bn.running_var.data, np.ones_like(model.conv1_1_bn.running_var.data))
    model.eval()
    again.eval()
    R.assert_close(again.forward(x), model.forward(x), atol=0, rtol=0)


def test_bad_input():
    model = build("segnet", n_class=3, width=1 / 64)
    with pytest.raises(ValueError, match=r"SegNet input x must have shape \(N, 3, H, W\), got \(1, 4, 5, 5\)"):
        model.forward(np.zeros((1, 4, 5, 5), np.float32))
    model.forward(np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"dscores of the last forward's output shape \(1, 3, 5, 5\), got \(1, 3, 5, 4\)"):
        model.backward(np.zeros((1, 3, 5, 4), np.float32))
    with pytest.raises(ValueError, match="n_class must be an int >= 1"):
        build("segnet", n_class=0)
