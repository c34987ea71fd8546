"""``minifcn bench`` runs and reports what it promises (tiny sizes, one step; never timed)."""
import json

import numpy as np
import pytest

from minifcn import bench
from minifcn.cli import main
from minifcn.layers import Conv2d, ConvTranspose2d
from minifcn.models import build


@pytest.fixture(autouse=True)
def small_sgemm(monkeypatch):
    """Every bench run here measures the sgemm limit on 256 x 256 products (milliseconds)."""
    monkeypatch.setattr(bench, "SGEMM_SIZE", 256)


def test_bench_command_writes_json(tmp_path, capsys):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    rc = main(["bench", "--model", "fcn8s", "--width", "0.0625", "--size", "24", "--steps", "1",
               "--warmup", "0", "--json", str(out), "--plot", str(png)])
    assert rc == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "GFLOP per step" in text and "conv3x3" in text
    # stderr is not a terminal here: progress comes as plain lines, not carriage-return frames
    assert "\r" not in captured.err and "bench: 1/1 (100%)" in captured.err
    r = json.loads(out.read_text())
    assert r["config"]["size"] == 24 and r["config"]["backend"] == "numpy"
    m = r["minifcn"]
    assert set(m["phases_s"]) == {"other", "forward", "loss", "backward", "optimiser"}
    assert m["step_s"] > 0 and len(m["steps_s"]) == 1 and m["gflops"] > 0
    assert set(m["breakdown_s"]) == set(bench.CATEGORIES)
    assert m["tracemalloc_added_bytes"] > 0
    assert r["gflop_per_step"] > 0
    assert r["sgemm_size"] == 256 and r["sgemm_gflops"] > 0
    assert m["sgemm_percent"] == pytest.approx(100 * m["gflops"] / r["sgemm_gflops"])
    assert f"NumPy sgemm limit {r['sgemm_gflops']:.0f} GFLOP/s (256x256 float32 matmul): " \
           f"minifcn {m['sgemm_percent']:.0f}%" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "bench.png"]    # no temp files left


def test_bench_compare_torch_uses_the_same_function():
    torch = pytest.importorskip("torch")
    model = build("fcn16s", n_class=3, width=0.0625, seed=1)
    rng = np.random.default_rng(0)
    for _, p in model.named_parameters():              # non-zero scores so every path matters
        p.data = p.data + (0.01 * rng.standard_normal(p.shape)).astype(np.float32)
    model.eval()
    x = rng.standard_normal((1, 3, 20, 22)).astype(np.float32)
    twin = bench.torch_twin(model).eval()
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-4, atol=1e-5)

    r = bench.run("fcn8s", width=0.0625, size=20, steps=1, warmup=0, compare="torch", breakdown=False,
                  progress=False)
    assert r["ratio"] > 0 and r["torch"]["step_s"] > 0 and "breakdown_s" not in r["minifcn"]
    assert r["sgemm_gflops"] > 0 and r["torch"]["sgemm_percent"] > 0
    line = next(s for s in bench.format_report(r).splitlines() if "sgemm limit" in s)
    assert line.endswith(f"minifcn {r['minifcn']['sgemm_percent']:.0f}%, torch {r['torch']['sgemm_percent']:.0f}%")


def test_sgemm_gflops_measures_the_backend():
    assert bench.sgemm_gflops("numpy", n=64, repeats=2) > 0
    assert bench.sgemm_gflops("numpy", n=32, budget_s=0.0) > 0          # one timed product at least
    with pytest.raises(ValueError, match="n >= 1"):
        bench.sgemm_gflops("numpy", n=0)
    pytest.importorskip("array_api_strict")
    assert bench.sgemm_gflops("strict") is None


def test_step_flops_counts_forward_input_and_weight_gradients():
    conv, up = Conv2d(2, 3, 3, padding=1), ConvTranspose2d(3, 3, 4, 2)
    shapes = {1: (conv, (1, 2, 5, 5), (1, 3, 5, 5)), 2: (up, (1, 3, 5, 5), (1, 3, 12, 12))}
    macs_conv = 5 * 5 * 3 * 2 * 9
    macs_up = 5 * 5 * 3 * 3 * 16
    # conv: forward + weight gradient (first layer: no input gradient); frozen upsampling: forward + dx
    assert bench.step_flops(shapes, first_layer=conv) == 2 * (2 * macs_conv + 2 * macs_up)


def test_bench_rejects_bad_arguments():
    with pytest.raises(ValueError, match="steps >= 1"):
        bench.run(steps=0, size=16, progress=False)
    with pytest.raises(ValueError, match="--compare torch needs --backend numpy"):
        bench.run(size=16, steps=1, backend="strict", compare="torch", progress=False)


def test_bench_runs_on_the_device_backend():
    """strict:device1 refuses host transfers as CuPy does: the timed step never leaves the device."""
    pytest.importorskip("array_api_strict")
    r = bench.run("fcn32s", width=0.0625, size=16, backend="strict:device1", steps=1, warmup=0, progress=False)
    assert r["config"]["backend"] == "strict:device1" and r["minifcn"]["step_s"] > 0
    assert "tracemalloc_added_bytes" not in r["minifcn"]
    assert r["sgemm_gflops"] is None and "sgemm_percent" not in r["minifcn"]    # no BLAS of its own
    assert "sgemm" not in bench.format_report(r)


def test_bench_asks_each_layer_for_its_category_and_flops():
    """A layer class the library has never seen is timed under the category it declares and
    counts the flops it declares; containers (no category) are searched, not timed."""
    from minifcn.layers import Layer, ReLU

    class Mystery(Layer):
        category = "mystery"

        def forward(self, x):
            return x * 2.0

        def backward(self, dy):
            return dy * 2.0

        def flops(self, x_shape, y_shape, need_dx=True):
            return 10 + need_dx

    class Net(Layer):
        def __init__(self):
            self.conv = Conv2d(1, 2, 3, padding=1, rng=0)
            self.inner = Net2()

        def forward(self, x):
            return self.inner(self.conv(x))

    class Net2(Layer):
        def __init__(self):
            self.m, self.relu = Mystery(), ReLU()

        def forward(self, x):
            return self.relu(self.m(x))

    net = Net()
    assert [type(layer).__name__ for layer in bench.leaf_layers(net)] == ["Conv2d", "Mystery", "ReLU"]
    times, shapes = {}, {}
    x = np.ones((1, 1, 4, 5), np.float32)
    with bench.layer_timers(net, x, times, shapes):
        net.forward(x)
    assert set(times) == {"conv3x3", "mystery", "elementwise"} and all(t > 0 for t in times.values())
    assert "forward" not in vars(net.inner.m)                # unwrapped again
    conv_flops = 2 * (4 * 5 * 2 * 1 * 9) * 2                  # forward + weight gradient, first layer
    assert bench.step_flops(shapes, first_layer=net.conv) == conv_flops + 11
    assert bench.ordered_categories({"mystery", "loss", "conv3x3"}) == ["conv3x3", "loss", "mystery"]


def test_torch_twin_is_built_by_the_model():
    pytest.importorskip("torch")
    from minifcn.layers import Layer

    class NoTwin(Layer):
        pass

    with pytest.raises(TypeError, match="no PyTorch twin for layer NoTwin"):
        bench.torch_twin(NoTwin())
    twin = bench.torch_twin(build("fcn8s", n_class=3, width=0.0625))
    names = [n for n, _ in twin.named_parameters()]
    assert names[:2] == ["conv1_1.weight", "conv1_1.bias"] and names[-1] == "upscore8.weight"
    assert twin.training and not twin.upscore8.weight.requires_grad and twin.fc6.weight.requires_grad


def test_bench_reference_times_the_reference_path(capsys, monkeypatch):
    from minifcn import functional as F

    seen = []
    original = bench.MinifcnStep.__call__

    def spy(self, times=None):
        seen.append((type(self).__name__, F.reference_enabled()))
        return original(self, times)

    monkeypatch.setattr(bench.MinifcnStep, "__call__", spy)
    with F.use_reference(False):                          # the fast path, even under MINIFCN_REFERENCE=1
        rc = main(["bench", "--model", "fcn32s", "--width", "0.0625", "--size", "20", "--steps", "1",
                   "--warmup", "0", "--reference", "--no-breakdown", "--no-memory"])
        assert not F.reference_enabled()                  # restored after each reference step
    assert rc == 0
    assert ("ReferenceStep", True) in seen and ("MinifcnStep", False) in seen
    assert "reference/minifcn step time ratio" in capsys.readouterr().out


def test_bench_crf_reports_lattice_and_exact(capsys, monkeypatch):
    from minifcn import crf_bench

    real = crf_bench.bench_crf
    monkeypatch.setattr(crf_bench, "bench_crf", lambda **kw: real(height=30, width=40, n_class=3, iterations=2,
                                                                  exact_size=12, **kw))
    assert main(["bench", "--crf"]) == 0
    out = capsys.readouterr().out
    assert "lattice 40x30" in out and "exact 12x12" in out and "argmax agreement" in out


@pytest.mark.parametrize("name", ["fcn8s", "deeplab-largefov", "segnet"])
def test_torch_twin_takes_the_model_dtype(name):
    """A float64 model's twin is float64 with the weights unrounded: the same scores to 1e-10."""
    torch = pytest.importorskip("torch")
    from minifcn.backend import get_backend

    model = build(name, n_class=3, width=1 / 16, seed=2).to(get_backend("numpy"), "float64").eval()
    twin = model.torch_module().eval()
    assert {p.dtype for p in twin.parameters()} == {torch.float64}
    x = np.random.default_rng(0).standard_normal((1, 3, 33, 31))
    with torch.no_grad():
        np.testing.assert_allclose(twin(torch.tensor(x)).numpy(), model.forward(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["fcn16s", "fcn8s"])
def test_same_padding_twin_crops_h_and_bench_reports_it(name, capsys):
    """The same-padding FCNs crop the upsampled h at the skips; their PyTorch twin does the same."""
    torch = pytest.importorskip("torch")
    from minifcn.backend import get_backend

    model = build(name, n_class=3, width=1 / 16, seed=2, same_padding=True).to(get_backend("numpy"), "float64")
    rng = np.random.default_rng(1)
    for _, p in model.named_parameters():              # non-zero scores so the skips matter
        p.data = p.data + 0.01 * rng.standard_normal(p.shape)
    model.eval()
    assert all(s.crop_h is not None for s in model.skips)
    twin = model.torch_module().eval()
    x = rng.standard_normal((1, 3, 37, 29))
    with torch.no_grad():
        np.testing.assert_allclose(twin(torch.tensor(x)).numpy(), model.forward(x), rtol=1e-10, atol=1e-10)
    r = bench.run(name, width=0.0625, size=24, steps=1, warmup=0, breakdown=False, memory=False,
                  progress=False, same_padding=True)
    assert r["config"]["same_padding"] is True
    assert bench.format_report(r).startswith(f"{name} (same padding) width 0.0625")
    with pytest.raises(ValueError, match="segnet has no 100-pixel margin to drop"):
        bench.run("segnet", width=0.0625, size=24, steps=1, warmup=0, progress=False, same_padding=True)
