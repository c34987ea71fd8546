"""``minifcn bench``: how fast is one training step, and where does the time go?

One step is ``zero_grad -> forward -> loss -> backward -> SGD update`` of a model (any
name :func:`minifcn.models.build` knows: FCN, SegNet, DeepLab, dilation) on a random
image and random labels. After ``--warmup`` steps, ``--steps`` steps are timed and the
median reported, split into forward, loss, backward and optimiser. Then:

* a per-layer-type breakdown (3x3 convs, 1x1/fc convs, transposed convs, pooling,
  element-wise layers, loss, optimiser, and the model's own glue) from extra steps run
  with a timing wrapper that only this command installs on the layer instances, so the
  library itself carries no instrumentation; each layer names its own type
  (``layer.category``);
* achieved GFLOP/s: the multiply-adds of every convolution in the step (forward, input
  gradients where needed, weight gradients of unfrozen weights; ``layer.flops``) over
  the median time, and as a percentage of the sgemm limit measured in the same run: the
  backend's float32 matrix-multiply rate (:func:`sgemm_gflops`: NumPy's BLAS with its
  threads, or CuPy's on the device; not measured on the strict backends);
* memory added by a step: the peak resident set during one step minus the resident set
  before it (Linux ``VmHWM`` reset through ``/proc/self/clear_refs``, freed memory handed
  back with ``malloc_trim`` first), and for NumPy also the tracemalloc peak, which sees
  every NumPy array allocation.

``--compare torch`` builds the same network in PyTorch (the model's ``torch_module()``,
which every model has: same weights and BN statistics, input, labels, loss and SGD
settings), alternates the two step by step in one process, and reports the minifcn/torch
ratio of median step times and of memory. The benchmark is a tool, not a test: numbers
depend on the machine and on whatever else it is running.
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import json
import os
import platform
import statistics
import time
import tracemalloc

import numpy as np

from . import functional as F
from .backend import blas_info, get_backend, is_cupy, one_blas_thread, to_numpy
from .layers import Layer
from .optim import SGD
from .io import atomic_path, progress as io_progress

CATEGORIES = ("conv3x3", "conv1x1/fc", "transposed conv", "pooling", "elementwise", "loss", "optimiser",
              "other")
LR, MOMENTUM, WEIGHT_DECAY = 1e-4, 0.9, 5e-4
SGEMM_SIZE = 2048       # n of the (n, n) @ (n, n) float32 products that measure the sgemm limit


def add_arguments(parser):
    parser.add_argument("--model", default="fcn8s",
                        help="a name build() knows, e.g. fcn32s, fcn8s, segnet, deeplab-largefov or "
                             "dilation-frontend; every model has a PyTorch twin for --compare torch (default fcn8s)")
    parser.add_argument("--width", type=float, default=0.25, help="channel width multiplier (default 0.25)")
    parser.add_argument("--size", type=int, default=256, help="input height and width (default 256)")
    parser.add_argument("--same-padding", action="store_true",
                        help="FCNs: the same-padding trunk (conv1_1 pad 1, fc6 pad 3) of the demo recipe")
    parser.add_argument("--batch", type=int, default=1, help="images per step (default 1)")
    parser.add_argument("--n-class", type=int, default=21, help="number of classes (default 21)")
    parser.add_argument("--backend", default="numpy", help="numpy, cupy, strict or strict:device1 (default numpy)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--compare", choices=("torch",), help="also time the same network in PyTorch")
    parser.add_argument("--reference", action="store_true",
                        help="also time the same step on the reference path (MINIFCN_REFERENCE=1), "
                             "to see what the fast paths buy")
    parser.add_argument("--crf", action="store_true",
                        help="time the dense CRF instead: lattice on 500x375 with 21 classes and 10 "
                             "iterations, exact on 64x64 (see minifcn.crf_bench)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the per-layer-type breakdown")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--plot", metavar="PATH", help="also draw the step phases and the breakdown as a PNG")


# ----------------------------------------------------------------------------
# The minifcn step
# ----------------------------------------------------------------------------
def _sync(like):
    """Wait for the GPU before reading a clock (timing only)."""
    if is_cupy(like):
        import cupy

        cupy.cuda.get_current_stream().synchronize()


class MinifcnStep:
    """One training step of ``model`` on fixed data with :class:`minifcn.optim.SGD`
    (momentum, weight decay, per-parameter lr and decay multipliers)."""

    def __init__(self, model, x, labels):
        self.model, self.x, self.labels = model, x, labels
        self.opt = SGD(model.named_parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def __call__(self, times=None):
        with one_blas_thread():           # as in Trainer.step
            t = _Clock(self.x, times)
            self.model.zero_grad()
            t("other")
            scores = self.model.forward(self.x)
            t("forward")
            loss, cache = F.softmax_cross_entropy(scores, self.labels)
            dscores = F.softmax_cross_entropy_backward(cache)
            del scores, cache            # as in Trainer.step: not held through the backward
            t("loss")
            self.model.backward(dscores, need_dx=False)
            t("backward")
            self.opt.step()
            t("optimiser")
            return loss


class ReferenceStep(MinifcnStep):
    """:class:`MinifcnStep` with every op on the reference path (:func:`minifcn.functional.use_reference`)."""

    def __call__(self, times=None):
        with F.use_reference():
            return super().__call__(times)


class _Clock:
    """``t(name)`` adds the time since the previous call to ``times[name]`` (no-op without times)."""

    def __init__(self, like, times):
        self.like, self.times = like, times
        if times is not None:
            _sync(like)
            self.last = time.perf_counter()

    def __call__(self, name):
        if self.times is not None:
            _sync(self.like)
            now = time.perf_counter()
            self.times[name] = self.times.get(name, 0.0) + now - self.last
            self.last = now


def ordered_categories(names):
    """``names`` in the report's order: :data:`CATEGORIES` first, then any new ones
    (a new layer class may bring its own category) alphabetically."""
    names = set(names)
    return [c for c in CATEGORIES if c in names] + sorted(names - set(CATEGORIES))


def leaf_layers(model):
    """Every leaf layer reachable from ``model`` (attributes, lists, dataclasses), once each:
    a layer with a ``category`` is a leaf; one without (a model, a trunk) is searched."""
    seen, out = set(), []

    def visit(obj):
        if isinstance(obj, Layer):
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.category is not None:
                out.append(obj)
                return
            for v in vars(obj).values():
                visit(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                visit(v)
        elif isinstance(obj, dict):
            for v in obj.values():
                visit(v)
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            for f in dataclasses.fields(obj):
                visit(getattr(obj, f.name))

    visit(model)
    return out


@contextlib.contextmanager
def layer_timers(model, like, times, shapes=None):
    """Wrap every leaf layer's forward/backward to add its time to ``times[category]``;
    ``shapes`` (a dict) collects each layer's (input shape, output shape). Unwrapped on exit."""
    layers = leaf_layers(model)

    def wrap(layer, method):
        inner, cat = getattr(layer, method), layer.category

        def timed(*args, **kwargs):
            _sync(like)
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            _sync(like)
            times[cat] = times.get(cat, 0.0) + time.perf_counter() - t0
            if shapes is not None and method == "forward":
                shapes[id(layer)] = (layer, tuple(args[0].shape), tuple(out.shape))
            return out

        setattr(layer, method, timed)

    for layer in layers:
        wrap(layer, "forward")
        wrap(layer, "backward")
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward, layer.backward


def step_flops(shapes, first_layer=None):
    """Floating-point operations (2 per multiply-add) of the convolutions of one step.

    Each layer counts its own (``layer.flops``): for a convolution, forward and input
    gradient 2 * (output or input pixels) * C_in*C_out*KH*KW each, the weight gradient
    the same again for unfrozen weights; element-wise layers count 0. ``first_layer``
    gets no input gradient (nobody needs the image's)."""
    return sum(layer.flops(x_shape, y_shape, need_dx=layer is not first_layer)
               for layer, x_shape, y_shape in shapes.values())


# ----------------------------------------------------------------------------
# Memory: peak resident set added by one call
# ----------------------------------------------------------------------------
def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def rss_peak_added(fn):
    """Bytes by which one call of ``fn`` raised the resident set above its level before
    the call (Linux only; None elsewhere)."""
    try:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)          # hand freed heap back first
        before = _status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:      # reset the high-water mark
            f.write("5")
    except OSError:
        return None
    fn()
    return (_status_kb("VmHWM") - before) * 1024


def tracemalloc_peak_added(fn):
    """Bytes of the tracemalloc peak during ``fn()`` above the traced memory before it
    (NumPy reports its array buffers to tracemalloc; GPU memory is not seen)."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


# ----------------------------------------------------------------------------
# The sgemm limit: what the backend's BLAS does with a big, easy matrix product
# ----------------------------------------------------------------------------
def sgemm_gflops(backend, n=None, repeats=3, budget_s=0.75):
    """``backend``'s float32 matrix-multiply rate on this machine in GFLOP/s: the median of
    ``repeats`` products ``(n, n) @ (n, n)`` (2 n^3 flops each; ``n`` defaults to
    :data:`SGEMM_SIZE`) after one warm-up, fewer once ``budget_s`` seconds have passed.

    NumPy's BLAS runs with the threads it is configured for (all cores unless
    ``OPENBLAS_NUM_THREADS`` says otherwise), CuPy's on the device. Returns None for the
    strict backends, which have no BLAS of their own to measure."""
    backend = get_backend(backend)
    if backend.name not in ("numpy", "cupy"):
        return None
    n = SGEMM_SIZE if n is None else int(n)
    if n < 1 or repeats < 1:
        raise ValueError(f"sgemm needs n >= 1 and repeats >= 1, got n={n}, repeats={repeats}")
    rng = np.random.default_rng(0)
    a = backend.asarray(rng.standard_normal((n, n)), dtype="float32")
    b = backend.asarray(rng.standard_normal((n, n)), dtype="float32")
    _sync(a)
    start = time.perf_counter()
    a @ b                                           # warm-up: threads started, kernels loaded
    _sync(a)
    times = []
    while len(times) < repeats and (not times or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        a @ b
        _sync(a)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


# ----------------------------------------------------------------------------
# PyTorch twin (optional; --compare torch)
# ----------------------------------------------------------------------------
def torch_twin(model):
    """A PyTorch module computing the same function as the minifcn ``model``, with its
    weights copied, in training mode: the model builds it (``model.torch_module()``, as
    every layer builds its own), so a model without one gets a TypeError naming it."""
    return model.torch_module().train()


class TorchStep:
    def __init__(self, model, x, labels):
        import torch

        self.torch = torch
        self.net = torch_twin(model)
        self.x = torch.from_numpy(np.array(to_numpy(x)))
        self.labels = torch.from_numpy(np.array(to_numpy(labels)).astype(np.int64))
        groups = collections.defaultdict(list)
        for (_, p), (_, mp) in zip(self.net.named_parameters(), _torch_order(model, self.net)):
            if p.requires_grad:
                groups[(mp.lr_mult, mp.decay_mult)].append(p)
        self.opt = torch.optim.SGD([{"params": ps, "lr": LR * lr, "weight_decay": WEIGHT_DECAY * dm}
                                    for (lr, dm), ps in groups.items()], lr=LR, momentum=MOMENTUM)

    def __call__(self, times=None):
        t = _Clock(np.zeros(0), times)
        self.opt.zero_grad()
        t("other")
        scores = self.net(self.x)
        t("forward")
        loss = self.torch.nn.functional.cross_entropy(scores, self.labels, ignore_index=255)
        t("loss")
        loss.backward()
        t("backward")
        self.opt.step()
        t("optimiser")
        return loss


def _torch_order(model, net):
    """minifcn parameters in the order of ``net.named_parameters()`` (matched by name)."""
    ours = dict(model.named_parameters())
    return [(name, ours[name]) for name, _ in net.named_parameters()]


# ----------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------
def _median_phases(records):
    keys = sorted({k for r in records for k in r})
    return {k: statistics.median(r.get(k, 0.0) for r in records) for k in keys}


def run(model_name="fcn8s", width=0.25, size=256, batch=1, n_class=21, backend="numpy", dtype="float32",
        steps=5, warmup=2, compare=None, breakdown=True, memory=True, seed=0, progress=True, reference=False,
        sgemm_size=None, same_padding=False):
    """Run the benchmark and return the results as a JSON-able dict (see the module docstring).

    ``sgemm_size``: n of the matrix products that measure the sgemm limit (None:
    :data:`SGEMM_SIZE`); ``same_padding``: the FCNs' same-padding trunk."""
    from .models import build, same_padding_kwargs

    if steps < 1 or warmup < 0 or size < 1 or batch < 1:
        raise ValueError(f"need steps >= 1, warmup >= 0, size >= 1, batch >= 1; got steps={steps}, "
                         f"warmup={warmup}, size={size}, batch={batch}")
    extra = same_padding_kwargs(model_name, same_padding)
    B = get_backend(backend)
    model = build(model_name, n_class=n_class, width=width, seed=seed, **extra).to(B, dtype).train()
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_class, (batch, size, size))
    labels[rng.random(labels.shape) < 0.05] = 255                 # some ignored pixels, as in VOC
    x = B.asarray(rng.standard_normal((batch, 3, size, size)), dtype=dtype)
    y = B.asarray(labels, dtype="int64")
    runners = {"minifcn": MinifcnStep(model, x, y)}
    if reference:                   # its own copy of the model, so both steps see the same weights' history
        twin = build(model_name, n_class=n_class, width=width, seed=seed, **extra).to(B, dtype).train()
        runners["reference"] = ReferenceStep(twin, x, y)
    if compare == "torch":
        if B.name != "numpy" or dtype != "float32":
            raise ValueError("--compare torch needs --backend numpy and --dtype float32 (PyTorch runs on the CPU)")
        runners["torch"] = TorchStep(model, x, y)

    bar = io_progress(total=warmup + steps, desc="bench", leave=False, disable=not progress)
    records = {k: [] for k in runners}
    for i in range(warmup + steps):
        for name, step in runners.items():          # alternate: same conditions for both
            times = {}
            step(times)
            if i >= warmup:
                records[name].append(times)
        bar.update(1)
    bar.close()

    result = {"config": dict(model=model_name, **extra, width=width, size=size, batch=batch, n_class=n_class,
                             backend=B.name, dtype=dtype, steps=steps, warmup=warmup),
              "machine": _machine()}
    for name, recs in records.items():
        totals = [sum(r.values()) for r in recs]
        result[name] = {"step_s": statistics.median(totals), "steps_s": totals,
                        "phases_s": _median_phases(recs)}

    shapes = {}
    with layer_timers(model, x, {}, shapes):        # one pass to learn the layer shapes
        runners["minifcn"]()
    first = next(iter(shapes.values()))[0]          # the first layer to run sees the image
    flops = step_flops(shapes, first_layer=first)
    result["gflop_per_step"] = flops / 1e9
    for name in runners:
        result[name]["gflops"] = flops / 1e9 / result[name]["step_s"]
    result["sgemm_size"] = SGEMM_SIZE if sgemm_size is None else int(sgemm_size)
    result["sgemm_gflops"] = sgemm_gflops(B, result["sgemm_size"])     # None on the strict backends
    if result["sgemm_gflops"] is not None:
        for name in runners:
            result[name]["sgemm_percent"] = 100 * result[name]["gflops"] / result["sgemm_gflops"]

    if breakdown:
        recs = []
        for _ in range(max(1, min(steps, 3))):
            per_layer, phases = {}, {}
            with layer_timers(model, x, per_layer):
                runners["minifcn"](phases)
            layer_sum = sum(per_layer.values())
            per_layer["loss"] = phases["loss"]
            per_layer["optimiser"] = phases["optimiser"]
            per_layer["other"] = max(0.0, phases["forward"] + phases["backward"] - layer_sum) + phases["other"]
            recs.append(per_layer)
        result["minifcn"]["breakdown_s"] = {k: v for k, v in _median_phases(recs).items()}

    if memory:
        for name, step in runners.items():
            result[name]["memory_added_bytes"] = None if B.name == "cupy" else rss_peak_added(step)
        if B.name == "numpy":
            result["minifcn"]["tracemalloc_added_bytes"] = tracemalloc_peak_added(runners["minifcn"])

    if "reference" in runners:
        result["reference_ratio"] = result["reference"]["step_s"] / result["minifcn"]["step_s"]
    if "torch" in runners:
        import torch

        result["torch"]["threads"] = torch.get_num_threads()
        result["torch"]["version"] = torch.__version__
        result["ratio"] = result["minifcn"]["step_s"] / result["torch"]["step_s"]
        mem = [result[k].get("memory_added_bytes") for k in ("minifcn", "torch")]
        result["memory_ratio"] = mem[0] / mem[1] if None not in mem and mem[1] > 0 else None
    return result


def _machine():
    info = {"platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "openblas_env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_"))},
            "blas": blas_info()}
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    return info


def format_report(r) -> str:
    c = r["config"]
    trunk = " (same padding)" if c.get("same_padding") else ""
    lines = [f"{c['model']}{trunk} width {c['width']} input {c['batch']}x3x{c['size']}x{c['size']} {c['dtype']} "
             f"on {c['backend']}: {r['gflop_per_step']:.2f} GFLOP per step, median of {c['steps']} steps "
             f"after {c['warmup']} warm-up"]
    blas, env = r["machine"].get("blas", {}), r["machine"].get("openblas_env", {})
    if c["backend"] == "numpy" and blas.get("core"):
        forced = f", forced by OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}" if "OPENBLAS_CORETYPE" in env else ""
        version = " ".join(blas.get("config", "OpenBLAS").split()[:2])
        lines.append(f"NumPy BLAS: {version}, {blas['core']} kernels{forced}")
    names = [k for k in ("minifcn", "reference", "torch") if k in r]
    phases = ("forward", "loss", "backward", "optimiser", "other")
    lines.append(f"{'':12s}" + "".join(f"{p:>11s}" for p in phases) + f"{'step':>10s}{'GFLOP/s':>9s}{'memory':>10s}")
    for k in names:
        ph, mem = r[k]["phases_s"], r[k].get("memory_added_bytes")
        lines.append(f"{k:12s}" + "".join(f"{ph.get(p, 0.0) * 1e3:9.1f}ms" for p in phases)
                     + f"{r[k]['step_s'] * 1e3:8.1f}ms{r[k]['gflops']:9.1f}"
                     + (f"{mem / 2**20:8.1f}MB" if mem is not None else f"{'-':>10s}"))
    if r.get("sgemm_gflops"):
        lib = {"numpy": "NumPy", "cupy": "CuPy"}.get(c["backend"], c["backend"])
        lines.append(f"{lib} sgemm limit {r['sgemm_gflops']:.0f} GFLOP/s "
                     f"({r['sgemm_size']}x{r['sgemm_size']} float32 matmul): "
                     + ", ".join(f"{k} {100 * r[k]['gflops'] / r['sgemm_gflops']:.0f}%" for k in names))
    if "reference_ratio" in r:
        lines.append(f"reference/minifcn step time ratio {r['reference_ratio']:.2f} "
                     f"(the fast paths make the step {r['reference_ratio']:.1f}x faster)")
    if "ratio" in r:
        mr = r.get("memory_ratio")
        lines.append(f"minifcn/torch step time ratio {r['ratio']:.2f}"
                     + (f", memory ratio {mr:.2f}" if mr is not None else "")
                     + f" (torch {r['torch']['version']}, {r['torch']['threads']} threads)")
    if "tracemalloc_added_bytes" in r.get("minifcn", {}):
        lines.append(f"minifcn tracemalloc peak added by a step: {r['minifcn']['tracemalloc_added_bytes'] / 2**20:.1f} MB")
    if "breakdown_s" in r.get("minifcn", {}):
        bd = r["minifcn"]["breakdown_s"]
        total = sum(bd.values())
        lines.append("minifcn breakdown (timed layer by layer):")
        for cat in ordered_categories(bd):
            if cat in bd:
                lines.append(f"  {cat:16s}{bd[cat] * 1e3:8.1f} ms {100 * bd[cat] / total:5.1f}%")
    return "\n".join(lines)


def format_crf_report(r) -> str:
    h, w = r["lattice_size"]
    e = r["exact_size"][0]
    return "\n".join([
        f"dense CRF on {r['backend']} ({r['dtype']}), {r['n_class']} classes, {r['iterations']} iterations",
        f"  lattice {w}x{h}: {r['lattice_s']:.2f} s (CPU {r['lattice_cpu_s']:.2f} s; lattice build "
        f"{r['lattice_build_s']:.2f} s, {r['lattice_points']} lattice points)",
        f"  exact {e}x{e}: {r['exact_s']:.2f} s (lattice on the same image {r['exact_lattice_s']:.3f} s; "
        f"argmax agreement {100 * r['exact_vs_lattice_argmax_agreement']:.2f}%, "
        f"mean |dQ| {r['exact_vs_lattice_mean_abs_dq']:.1e})"])


def main(args) -> int:
    if args.crf:
        from .crf_bench import bench_crf

        result = bench_crf(backend=args.backend, dtype=args.dtype)
        print(format_crf_report(result))
    else:
        result = run(args.model, args.width, args.size, args.batch, args.n_class, args.backend, args.dtype,
                     args.steps, args.warmup, args.compare, not args.no_breakdown, not args.no_memory, args.seed,
                     reference=args.reference, same_padding=args.same_padding)
        print(format_report(result))
    if args.json:
        with atomic_path(args.json) as tmp:                # no half-written file on a crash
            tmp.write_text(json.dumps(result, indent=2))
    if args.plot and not args.crf:
        plot_result(result, args.plot)
    return 0


def plot_result(r, path):
    """PNG: median step split into phases (minifcn and torch, if compared), and minifcn's
    time per layer type."""
    from .viz import figure, save_figure

    names = [k for k in ("minifcn", "reference", "torch") if k in r]
    fig = figure(figsize=(9, 3.6), dpi=110)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=(1, 1.3))
    left = np.zeros(len(names))
    for phase in ("forward", "loss", "backward", "optimiser", "other"):
        ms = np.array([r[k]["phases_s"].get(phase, 0.0) * 1e3 for k in names])
        ax1.barh(names, ms, left=left, label=phase)
        left += ms
    ax1.invert_yaxis()
    ax1.set_xlabel("ms per training step (median)")
    ax1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=5, frameon=False)
    c = r["config"]
    ax1.set_title(f"{c['model']} width {c['width']}, {c['size']}x{c['size']}, batch {c['batch']}", fontsize=10)
    bd = r["minifcn"].get("breakdown_s", {})
    cats = ordered_categories(bd)
    ax2.barh(cats, [bd[k] * 1e3 for k in cats], color="tab:gray")
    ax2.invert_yaxis()
    ax2.set_xlabel("ms per step, timed layer by layer")
    ax2.set_title("minifcn by layer type", fontsize=10)
    return save_figure(fig, path)
