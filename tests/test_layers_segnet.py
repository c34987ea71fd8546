"""SegNet's layers: BatchNorm2d (buffers updated as PyTorch's in training, frozen in eval,
saved in state_dict, never touched by SGD), MaxPool2d(return_indices=True) and
MaxUnpool2d; float64 gradient checks on every backend; PyTorch cross-checks."""
import numpy as np
import pytest

import reference as R
from minifcn.backend import to_numpy
from minifcn.coordmap import IDENTITY
from minifcn.gradcheck import check_layer
from minifcn.layers import BatchNorm2d, Buffer, MaxPool2d, MaxUnpool2d, Parameter
from minifcn.models.geometry import compose
from minifcn.optim import SGD


def _bn(c, backend, seed=0, **kw):
    layer = BatchNorm2d(c, **kw).to(backend, "float64")
    rng = np.random.default_rng(seed)
    if layer.weight is not None:
        layer.weight.data = backend.asarray(rng.uniform(0.5, 2.0, c))
        layer.bias.data = backend.asarray(rng.standard_normal(c))
    return layer


def test_batchnorm2d_members():
    bn = BatchNorm2d(4)
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var"]
    assert all(isinstance(b, Buffer) for b in bn.buffers())
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    np.testing.assert_array_equal(bn.weight.data, np.ones(4))
    np.testing.assert_array_equal(bn.bias.data, np.zeros(4))
    np.testing.assert_array_equal(bn.running_mean.data, np.zeros(4))
    np.testing.assert_array_equal(bn.running_var.data, np.ones(4))
    assert bn.weight.data.dtype == np.float32 and bn.running_var.data.dtype == np.float32
    assert bn.coord_map() == IDENTITY and bn.category == "elementwise"
    plain = BatchNorm2d(3, affine=False)
    assert plain.weight is None and plain.bias is None and list(plain.named_parameters()) == []
    assert list(plain.state_dict()) == ["running_mean", "running_var"]


def test_batchnorm2d_running_statistics_follow_torch(backend):
    """Three training steps then eval: buffers, outputs and gradients equal nn.BatchNorm2d's."""
    torch = pytest.importorskip("torch")
    bn = _bn(3, backend, momentum=0.3, eps=1e-4)
    tbn = bn.torch_module().double().train()
    rng = np.random.default_rng(1)
    for step, shape in enumerate([(2, 3, 5, 4), (1, 3, 2, 7), (4, 3, 1, 1)]):
        x = rng.standard_normal(shape) * (step + 1) + step
        dy = rng.standard_normal(shape)
        bn.zero_grad()
        y = bn.forward(backend.asarray(x))
        dx = bn.backward(backend.asarray(dy))
        tx = torch.tensor(x, requires_grad=True)
        tbn.zero_grad()
        ty = tbn(tx)
        ty.backward(torch.tensor(dy))
        R.assert_close(y, ty.detach().numpy(), atol=1e-12, rtol=1e-10)
        R.assert_close(dx, tx.grad.numpy(), atol=1e-12, rtol=1e-9)
        R.assert_close(bn.weight.grad, tbn.weight.grad.numpy(), atol=1e-12, rtol=1e-10)
        R.assert_close(bn.bias.grad, tbn.bias.grad.numpy(), atol=1e-12, rtol=1e-10)
        R.assert_close(bn.running_mean.data, tbn.running_mean.numpy(), atol=1e-14, rtol=1e-12)
        R.assert_close(bn.running_var.data, tbn.running_var.numpy(), atol=1e-14, rtol=1e-12)
    bn.eval()
    tbn.eval()
    before = (to_numpy(bn.running_mean.data).copy(), to_numpy(bn.running_var.data).copy())
    x = rng.standard_normal((2, 3, 3, 3))
    y = bn.forward(backend.asarray(x))
    with torch.no_grad():
        R.assert_close(y, tbn(torch.tensor(x)).numpy(), atol=1e-12, rtol=1e-10)
    np.testing.assert_array_equal(to_numpy(bn.running_mean.data), before[0])     # frozen in eval
    np.testing.assert_array_equal(to_numpy(bn.running_var.data), before[1])


def test_batchnorm2d_default_momentum_and_one_value_per_channel():
    bn = BatchNorm2d(2).to("numpy", "float64")
    x = np.array([[[[1.0, 3.0]], [[2.0, 2.0]]]])          # M = 2: unbiased var = 2 * biased
    bn.forward(x)
    np.testing.assert_allclose(bn.running_mean.data, [0.2, 0.2])
    np.testing.assert_allclose(bn.running_var.data, [0.9 + 0.1 * 2.0, 0.9])
    bn.forward(np.array([[[[5.0]], [[7.0]]]]))              # M = 1: the biased variance (0) is used
    np.testing.assert_allclose(bn.running_mean.data, [0.9 * 0.2 + 0.5, 0.9 * 0.2 + 0.7])
    np.testing.assert_allclose(bn.running_var.data, [0.9 * 1.1, 0.81])


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm2d_gradcheck(backend, mode):
    bn = _bn(3, backend, seed=2)
    bn.running_mean.data = backend.asarray(np.array([0.5, -1.0, 2.0]))
    bn.running_var.data = backend.asarray(np.array([0.7, 1.5, 2.5]))
    bn.train(mode == "train")
    x = backend.asarray(np.random.default_rng(3).standard_normal((2, 3, 3, 2)))
    r = check_layer(bn, x, eps=1e-5, atol=1e-8, rtol=1e-6)
    assert r.ok, str(r)
    assert r.checked == 36 + 6


def test_sgd_never_touches_the_buffers():
    bn = BatchNorm2d(2).to("numpy", "float64")
    bn.forward(np.random.default_rng(4).standard_normal((2, 2, 3, 3)))
    mean, var = bn.running_mean.data.copy(), bn.running_var.data.copy()
    opt = SGD(bn.named_parameters(), lr=0.1, momentum=0.9, weight_decay=0.5)
    bn.weight.grad += 1.0
    opt.step(0.1)
    np.testing.assert_array_equal(bn.running_mean.data, mean)
    np.testing.assert_array_equal(bn.running_var.data, var)
    assert not np.array_equal(bn.weight.data, np.ones(2))


def test_batchnorm2d_state_dict_round_trip_and_to(backend):
    bn = BatchNorm2d(3)
    bn.forward(np.random.default_rng(5).standard_normal((2, 3, 4, 4)).astype(np.float32) * 3 + 1)
    state = {k: np.array(v) for k, v in bn.state_dict().items()}
    other = BatchNorm2d(3).to(backend)
    other.load_state_dict(state)
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(to_numpy(v), state[k])
    assert other.running_mean.data.dtype == backend.xp.float32
    with pytest.raises(ValueError, match=r"running_var: expected \(3,\), got \(4,\)"):
        other.load_state_dict({**state, "running_var": np.ones(4, np.float32)})


def test_batchnorm2d_bad_arguments():
    with pytest.raises(ValueError, match=r"num_features must be an int >= 1, got 0"):
        BatchNorm2d(0)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 1.5"):
        BatchNorm2d(3, momentum=1.5)
    with pytest.raises(ValueError, match=r"eps must be > 0, got 0"):
        BatchNorm2d(3, eps=0)
    with pytest.raises(ValueError, match=r"weight must have shape \(C,\) = \(4,\).*got \(3,\)"):
        BatchNorm2d(3).forward(np.zeros((2, 4, 3, 3), np.float32))


def test_max_pool_keeps_indices_as_torch(backend):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(6).permutation(2 * 3 * 7 * 5).reshape(2, 3, 7, 5) * 0.1
    pool = MaxPool2d(2, 2, ceil_mode=True, return_indices=True)
    y = pool.forward(backend.asarray(x))
    ty, tidx = pool.torch_module()(torch.tensor(x))
    R.assert_close(y, ty.numpy())
    np.testing.assert_array_equal(to_numpy(pool.indices), tidx.numpy())
    assert pool.indices.dtype == backend.xp.int64 and pool.input_size == (7, 5)
    dy = np.random.default_rng(7).standard_normal(ty.shape)
    unpooled = MaxUnpool2d(2, 2).forward(backend.asarray(dy), pool.indices, pool.input_size)
    R.assert_close(pool.backward(backend.asarray(dy)), to_numpy(unpooled))


@pytest.mark.parametrize("size", [None, (8, 5)])
def test_max_unpool_layer_matches_torch(size):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = torch.tensor(rng.permutation(2 * 2 * 8 * 5).reshape(2, 2, 8, 5) * 0.1)
    pooled, idx = torch.nn.functional.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
    v = torch.tensor(rng.standard_normal(pooled.shape), requires_grad=True)
    layer = MaxUnpool2d(2)
    tmod = layer.torch_module()
    ty = tmod(v, idx, output_size=size)
    dy = rng.standard_normal(ty.shape)
    ty.backward(torch.tensor(dy))
    y = layer.forward(v.detach().numpy(), idx.numpy(), size)
    assert y.shape == (2, 2, 8, 6 if size is None else 5)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(layer.backward(dy), v.grad.numpy())


def test_max_unpool_layer_gradcheck(backend):
    rng = np.random.default_rng(9)
    x = backend.asarray(rng.standard_normal((2, 3, 3, 2)))
    idx = backend.asarray(rng.permutation(6 * 4)[:6].reshape(1, 1, 3, 2).repeat(6, 0).reshape(2, 3, 3, 2))
    r = check_layer(MaxUnpool2d(2), x, forward_kwargs={"indices": idx, "output_size": (6, 4)})
    assert r.ok, str(r)
    assert r.checked == 36


def test_pool_then_unpool_maps_to_the_identity():
    """The unpooling's coordinate map inverts the pool's: composed, output pixel o is input pixel o."""
    pool, unpool = MaxPool2d(2, 2, ceil_mode=True, return_indices=True), MaxUnpool2d(2, 2)
    assert compose([pool, unpool]) == IDENTITY
    assert compose([pool]).scale == (2, 2) and compose([unpool]).scale == (0.5, 0.5)
    assert unpool.category == pool.category == "pooling"


def test_parameters_are_not_buffers():
    bn = BatchNorm2d(2)
    assert all(isinstance(p, Parameter) for p in bn.parameters())
    assert not set(map(id, bn.parameters())) & set(map(id, bn.buffers()))
