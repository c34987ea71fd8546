"""SegNet.torch_module(), the PyTorch twin behind ``minifcn bench --model segnet --compare torch``:
the same function in float64 (train-mode BN, batch 2, an odd size that exercises the ceil-mode
pools and the unpooling sizes): scores, input gradient, every parameter gradient and the running
statistics; parameter and buffer names are minifcn's."""
import numpy as np
import pytest

from minifcn import bench
from minifcn.models import build


def _model(width=1 / 16, n_class=3, seed=2):
    model = build("segnet", n_class=n_class, width=width, seed=seed).to("numpy", "float64").train()
    rng = np.random.default_rng(seed + 20)
    for name, p in model.named_parameters():       # BN away from 1 / 0, biases non-zero
        if name.endswith("_bn.weight"):
            p.data = rng.uniform(0.5, 1.5, p.shape)
        elif name.endswith("bias"):
            p.data = rng.standard_normal(p.shape) * 0.1
    for name, b in model.named_buffers():           # copied statistics, not the defaults
        b.data = rng.uniform(0.5, 1.5, b.shape) if name.endswith("running_var") else rng.standard_normal(b.shape)
    return model


def test_segnet_twin_is_the_same_function_in_float64():
    torch = pytest.importorskip("torch")
    model = _model()
    twin = model.torch_module()
    assert twin.training and twin.conv1_1.weight.dtype == torch.float64
    assert [n for n, _ in twin.named_parameters()] == [n for n, _ in model.named_parameters()]
    stats = [n for n in dict(twin.named_buffers()) if not n.endswith("num_batches_tracked")]
    assert stats == [n for n, _ in model.named_buffers()]
    for name, b in model.named_buffers():           # the running statistics are copied
        np.testing.assert_array_equal(twin.get_buffer(name).numpy(), b.data, err_msg=name)
    bn = twin.conv3_2_D_bn
    assert (bn.momentum, bn.eps) == (model.conv3_2_D_bn.momentum, model.conv3_2_D_bn.eps)

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 37, 29))
    labels = rng.integers(0, 3, (2, 37, 29))
    tx = torch.tensor(x, requires_grad=True)
    ty = twin(tx)
    y = model.forward(x)
    assert y.shape == tuple(ty.shape) == (2, 3, 37, 29)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-8, atol=1e-10)

    # one backward of the same loss: cross-entropy of the scores, as bench's step computes it
    from minifcn import functional as F

    loss, cache = F.softmax_cross_entropy(y, labels)
    tloss = torch.nn.functional.cross_entropy(ty, torch.tensor(labels), ignore_index=255)
    np.testing.assert_allclose(float(loss), tloss.item(), rtol=1e-12)
    tloss.backward()
    model.zero_grad()
    dx = model.backward(F.softmax_cross_entropy_backward(cache))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-7, atol=1e-10)
    tparams = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), rtol=1e-7, atol=1e-10, err_msg=name)
    for name, b in model.named_buffers():            # the forward moved both the same way
        np.testing.assert_allclose(b.data, twin.get_buffer(name).numpy(), rtol=1e-10, atol=1e-12, err_msg=name)

    model.eval()
    twin.eval()
    with torch.no_grad():
        np.testing.assert_allclose(model.forward(x), twin(torch.tensor(x)).numpy(), rtol=1e-8, atol=1e-10)


def test_segnet_twin_keeps_float32_and_the_default_dtype():
    torch = pytest.importorskip("torch")
    before = torch.get_default_dtype()
    twin = build("segnet", n_class=2, width=1 / 32).torch_module()
    assert torch.get_default_dtype() == before
    assert {p.dtype for p in twin.parameters()} == {torch.float32}


def test_bench_compares_segnet_with_torch():
    pytest.importorskip("torch")
    r = bench.run("segnet", width=1 / 32, size=20, steps=1, warmup=0, compare="torch", breakdown=False,
                  memory=False, progress=False, sgemm_size=128)
    assert r["ratio"] > 0 and r["torch"]["step_s"] > 0
