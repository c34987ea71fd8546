"""The reference path (minifcn.functional.reference) and the switch that runs it.

* every reference function is short (what a learner reads) and agrees with the plain
  loops of tests/reference.py, and with the fast path, forward and backward;
* its backward passes are gradient-checked in float64 on every backend;
* ``use_reference()`` / ``MINIFCN_REFERENCE=1`` run whole FCNs on it, with the same
  scores and gradients as the fast path (float64, 1e-9).
"""
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import reference as R
from minifcn import functional as F
from minifcn.backend import to_numpy
from minifcn.functional import reference as ref
from minifcn.functional.fast import bands, frame, phase, pool, reach
from minifcn.gradcheck import check_backward
from minifcn.models import build


@pytest.fixture(autouse=True)
def fast_path():
    """These tests compare the fast paths with the reference: run F.* on the fast paths
    even under MINIFCN_REFERENCE=1 (the reference side is called explicitly)."""
    with F.use_reference(False):
        yield

CONV_CASES = [  # (x shape, weight shape, stride, padding, dilation)
    ((1, 3, 6, 5), (4, 3, 3, 3), 1, 3, 1),          # padding beyond the kernel's reach
    ((2, 2, 7, 6), (3, 2, 3, 3), 1, 1, 1),          # 3x3 same padding, batch 2
    ((1, 2, 8, 7), (2, 2, 3, 2), 2, (1, 0), 2),     # stride, dilation
    ((1, 2, 9, 9), (3, 2, 3, 3), 1, 4, 4),          # dilated like DeepLab's fc6
    ((2, 3, 5, 6), (2, 3, 1, 1), 1, 0, 1),          # 1x1
]
CONVT_CASES = [  # (x shape, weight shape (C_in, C_out, KH, KW), stride, padding, dilation, output_padding)
    ((1, 3, 4, 5), (3, 3, 16, 16), 8, 0, 1, 0),     # FCN upscore8
    ((2, 2, 3, 3), (2, 3, 4, 4), 2, 1, 1, 1),       # upscore2 with padding and output padding
    ((1, 2, 3, 2), (2, 1, 5, 3), (3, 2), (1, 0), (1, 2), (2, 1)),
    ((1, 1, 2, 3), (1, 2, 2, 2), 3, 0, 1, 0),       # stride > kernel leaves gaps
]
POOL_CASES = [  # (x shape, kernel, stride, padding, ceil_mode)
    ((1, 2, 6, 8), 2, 2, 0, True), ((2, 1, 5, 7), 2, 2, 0, True), ((1, 2, 7, 6), 3, 2, 1, True),
    ((1, 1, 6, 6), 3, 1, 1, False), ((2, 2, 5, 5), (3, 2), (2, 1), (1, 0), False),
]


def _arrays(backend, seed, *shapes):
    rng = np.random.default_rng(seed)
    return [backend.asarray(rng.standard_normal(s)) for s in shapes]


def _code_lines(fn):
    """Lines of code of a function, without its docstring, comments and blank lines."""
    src = inspect.getsource(fn).split('"""')
    body = src[0] + "".join(src[2:]) if len(src) >= 3 else src[0]
    return [ln for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("#")]


@pytest.mark.parametrize("fn", [ref.conv2d, ref.conv2d_backward, ref.conv_transpose2d,
                                ref.conv_transpose2d_backward, ref.max_pool2d, ref.max_pool2d_backward])
def test_reference_functions_are_short(fn):
    assert len(_code_lines(fn)) <= 25, f"{fn.__name__}: {len(_code_lines(fn))} lines"


def test_reference_backward_calls_the_other_convolution():
    """The adjoint relation is in the code: conv's dx is a transposed conv and vice versa."""
    assert "conv_transpose2d(dy" in inspect.getsource(ref.conv2d_backward)
    assert "conv2d(dy" in inspect.getsource(ref.conv_transpose2d_backward)


@pytest.mark.parametrize("case", CONV_CASES)
def test_reference_conv2d_matches_loops_and_fast_path(backend, case):
    x_shape, w_shape, s, p, d = case
    x, w, b, = _arrays(backend, 1, x_shape, w_shape, (w_shape[0],))
    y, cache = ref.conv2d(x, w, b, s, p, d)
    R.assert_close(y, R.conv2d(to_numpy(x), to_numpy(w), to_numpy(b), s, p, d))
    assert type(cache) is ref.ConvCache
    yf, cache_f = F.conv2d(x, w, b, s, p, d)
    assert type(cache_f) is not ref.ConvCache              # the default is a fast plan
    dy, = _arrays(backend, 2, tuple(y.shape))
    R.assert_close(yf, to_numpy(y), atol=1e-10, rtol=1e-10)
    for a, e in zip(F.conv2d_backward(dy, cache_f), ref.conv2d_backward(dy, cache)):
        R.assert_close(a, to_numpy(e), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("case", CONV_CASES[:4])
def test_reference_conv2d_gradcheck(backend, case):
    x_shape, w_shape, s, p, d = case
    x, w, b = _arrays(backend, 3, (1,) + x_shape[1:], w_shape, (w_shape[0],))
    report = check_backward(lambda x, w, b: ref.conv2d(x, w, b, s, p, d), ref.conv2d_backward, [x, w, b], seed=1)
    assert report.ok, report


@pytest.mark.parametrize("case", CONVT_CASES)
def test_reference_conv_transpose2d_matches_loops_and_fast_path(backend, case):
    x_shape, w_shape, s, p, d, op = case
    x, w, b = _arrays(backend, 4, x_shape, w_shape, (w_shape[1],))
    y, cache = ref.conv_transpose2d(x, w, b, s, p, d, op)
    loop = R.conv_transpose2d(to_numpy(x), to_numpy(w), to_numpy(b), s, p, d)
    opy, opx = (op, op) if isinstance(op, int) else op
    assert tuple(y.shape[2:]) == (loop.shape[2] + opy, loop.shape[3] + opx)
    R.assert_close(y[:, :, :loop.shape[2], :loop.shape[3]], loop)
    yf, cache_f = F.conv_transpose2d(x, w, b, s, p, d, output_padding=op)
    assert isinstance(cache_f, phase.ConvTransposeCache)
    R.assert_close(yf, to_numpy(y), atol=1e-10, rtol=1e-10)
    dy, = _arrays(backend, 5, tuple(y.shape))
    for a, e in zip(F.conv_transpose2d_backward(dy, cache_f), ref.conv_transpose2d_backward(dy, cache)):
        R.assert_close(a, to_numpy(e), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("case", CONVT_CASES[1:])
def test_reference_conv_transpose2d_gradcheck(backend, case):
    x_shape, w_shape, s, p, d, op = case
    x, w, b = _arrays(backend, 6, x_shape, w_shape, (w_shape[1],))
    report = check_backward(lambda x, w, b: ref.conv_transpose2d(x, w, b, s, p, d, op),
                            ref.conv_transpose2d_backward, [x, w, b], seed=2)
    assert report.ok, report


def test_conv2d_backward_returns_the_input_size_when_the_stride_skips_rows(backend):
    """H = W = 8, K = 3, S = 2: the last row and column are never read, yet dx has all 8 (output padding)."""
    x, w = _arrays(backend, 7, (1, 2, 8, 8), (3, 2, 3, 3))
    y, cache = ref.conv2d(x, w, None, 2, 0, 1)
    dx, _, _ = ref.conv2d_backward(backend.xp.ones(y.shape, dtype=y.dtype, device=backend.device), cache)
    assert tuple(dx.shape) == (1, 2, 8, 8)
    assert np.all(to_numpy(dx)[:, :, -1, :] == 0) and np.all(to_numpy(dx)[:, :, :, -1] == 0)


@pytest.mark.parametrize("case", POOL_CASES)
def test_reference_max_pool2d_matches_loops_and_fast_path(backend, case):
    shape, k, s, p, ceil = case
    rng = np.random.default_rng(8)
    x = rng.integers(0, 3, shape).astype(np.float64)           # many ties: the first offset wins
    y, cache = ref.max_pool2d(backend.asarray(x), k, s, p, ceil)
    y_loop, winners = R.max_pool2d(x, k, s, p, ceil)
    R.assert_close(y, y_loop)
    dy = rng.standard_normal(y_loop.shape)
    R.assert_close(ref.max_pool2d_backward(backend.asarray(dy), cache), R.max_pool2d_backward(dy, shape, winners))
    yf, idx, cache_f = F.max_pool2d_with_indices(backend.asarray(x), k, s, p, ceil)
    assert isinstance(cache_f, pool.PoolCache)
    R.assert_close(yf, y_loop)
    R.assert_close(F.max_pool2d_backward(backend.asarray(dy), cache_f), R.max_pool2d_backward(dy, shape, winners))
    with F.use_reference():
        y_r, idx_r, _ = F.max_pool2d_with_indices(backend.asarray(x), k, s, p, ceil)
    np.testing.assert_array_equal(to_numpy(idx), to_numpy(idx_r))
    assert idx.dtype == backend.xp.int64
    # the index points at the winner: reading x there gives y
    flat = x.reshape(shape[0], shape[1], -1)
    picked = np.take_along_axis(flat, to_numpy(idx).reshape(shape[0], shape[1], -1), axis=2)
    np.testing.assert_array_equal(picked.reshape(y_loop.shape), y_loop)


@pytest.mark.parametrize("case", POOL_CASES[2:])
def test_reference_max_pool2d_gradcheck(backend, case):
    shape, k, s, p, ceil = case
    rng = np.random.default_rng(9)
    x = backend.asarray(rng.permutation(np.prod(shape)).reshape(shape) * 0.1)   # distinct values
    report = check_backward(lambda x: ref.max_pool2d(x, k, s, p, ceil), ref.max_pool2d_backward, [x], seed=3)
    assert report.ok, report


def test_max_pool2d_indices_agree_with_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    for shape, k, s, p, ceil in POOL_CASES + [((2, 3, 11, 9), 2, 2, 0, True), ((1, 2, 13, 10), 3, 2, 1, True)]:
        x = rng.standard_normal(shape)
        _, idx, _ = F.max_pool2d_with_indices(x, k, s, p, ceil)
        _, idx_t = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p, ceil_mode=ceil, return_indices=True)
        np.testing.assert_array_equal(idx, idx_t.numpy())


def test_use_reference_switches_every_op_and_restores():
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    assert not F.reference_enabled()                       # the fixture's fast path
    with F.use_reference():
        assert F.reference_enabled()
        assert type(F.conv2d(x, w, None, 1, 101)[1]) is ref.ConvCache        # no bias-border plan
        assert isinstance(F.conv_transpose2d(x, np.ones((2, 3, 4, 4)), None, 2, 1)[1], ref.ConvTransposeCache)
        assert isinstance(F.max_pool2d(x, 2, 2, 0, True)[1], ref.PoolCache)
        with F.use_reference(False):
            assert isinstance(F.conv2d(x, w, None, 1, 101)[1], reach.ConvCache)
    assert not F.reference_enabled()
    assert isinstance(F.conv2d(x, w, None, 1, 1)[1], bands.ConvCache)


def test_environment_variable_selects_the_reference_path():
    code = "from minifcn import functional as F; print(F.reference_enabled())"
    env = {**os.environ, "MINIFCN_REFERENCE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    env["MINIFCN_REFERENCE"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_foreign_cache_is_refused():
    with pytest.raises(ValueError, match="not the cache of a conv2d"):
        F.conv2d_backward(np.ones((1, 1, 2, 2)), ("x", 1))
    with pytest.raises(ValueError, match="not the cache of a max_pool2d"):
        F.max_pool2d_backward(np.ones((1, 1, 2, 2)), None)


def _model_pass(model, x, dy):
    for p in model.parameters():
        p.grad = p.grad * 0
    scores = model.forward(x)
    dx = model.backward(dy)
    return [scores, dx] + [p.grad for _, p in model.named_parameters()]


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"])
def test_whole_fcn_on_the_reference_path_equals_the_fast_path(backend, name):
    """Scores and every gradient agree to 1e-9 (float64). The fast run takes the bias-border,
    constant-frame, band and phase plans (padding 100 gives conv1..conv3 frames on NumPy)."""
    model = build(name, n_class=3, width=1 / 32, dropout=0.0, learn_upsampling=True).to(backend.name, "float64")
    rng = np.random.default_rng(11)
    for _, p in model.named_parameters():             # score layers start at zero: make every path count
        p.data = backend.asarray(rng.standard_normal(p.shape) * 0.1)
    x = backend.asarray(rng.standard_normal((1, 3, 21, 26)) * 10)
    dy = backend.asarray(rng.standard_normal((1, 3, 21, 26)))
    fast = _model_pass(model, x, dy)
    with F.use_reference():
        slow = _model_pass(model, x, dy)
    for a, e in zip(fast, slow):
        scale = max(1.0, float(np.max(np.abs(to_numpy(e)))))
        np.testing.assert_allclose(to_numpy(a) / scale, to_numpy(e) / scale, atol=1e-9, rtol=0)
