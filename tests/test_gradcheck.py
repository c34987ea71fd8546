"""The gradient checker must pass correct backward passes and catch broken ones."""
import functools

import numpy as np
import pytest

from minifcn import functional as F
from minifcn.backend import namespace
from minifcn.gradcheck import GradcheckReport, check_backward, check_layer
from minifcn.layers import ConvTranspose2d

CONV = functools.partial(F.conv2d, stride=2, padding=1)


def _conv_inputs(backend, seed=0):
    rng = np.random.default_rng(seed)
    return [backend.asarray(rng.standard_normal(s)) for s in [(1, 2, 4, 5), (2, 2, 3, 3), (2,)]]


def scaled(dx=1.0, dw=1.0, db=1.0):
    def backward(dy, cache):
        gx, gw, gb = F.conv2d_backward(dy, cache)
        return gx * dx, gw * dw, gb * db
    return backward


def transposed_kernel(dy, cache):
    """A classic bug: the weight gradient with the kernel's KH and KW axes swapped."""
    gx, gw, gb = F.conv2d_backward(dy, cache)
    return gx, namespace(gw).permute_dims(gw, (0, 1, 3, 2)), gb


@pytest.mark.parametrize("directions", [0, 3])
def test_correct_backward_passes(backend, directions):
    r = check_backward(CONV, F.conv2d_backward, _conv_inputs(backend), directions=directions)
    assert isinstance(r, GradcheckReport)
    assert r.ok and r.max_error < 1e-8, str(r)
    assert r.checked == (40 + 36 + 2 if directions == 0 else 3)
    assert "ok" in str(r) and "FAILED" not in str(r)


@pytest.mark.parametrize("directions", [0, 1])
@pytest.mark.parametrize("bug", ["dx*1.01", "dweight*1.01", "dbias*1.01", "transposed kernel"])
def test_broken_backward_is_caught(backend, directions, bug):
    backward = {"dx*1.01": scaled(dx=1.01), "dweight*1.01": scaled(dw=1.01), "dbias*1.01": scaled(db=1.01),
                "transposed kernel": transposed_kernel}[bug]
    r = check_backward(CONV, backward, _conv_inputs(backend), directions=directions)
    assert not r.ok, str(r)
    assert "FAILED" in str(r)
    if directions == 0:
        where = {"dx*1.01": "input 0", "dweight*1.01": "input 1", "dbias*1.01": "input 2",
                 "transposed kernel": "input 1"}[bug]
        assert r.worst.startswith(where), r.worst


def test_a_single_wrong_entry_is_caught_and_located(backend):
    def backward(dy, cache):
        gx, gw, gb = F.conv2d_backward(dy, cache)
        gw[1, 1, 0, 2] += 1e-3
        return gx, gw, gb
    r = check_backward(CONV, backward, _conv_inputs(backend))
    assert not r.ok
    assert r.worst == "input 1 index (1, 1, 0, 2)" and abs(r.max_error - 1e-3) < 1e-6


def test_float32_inputs_are_refused(backend):
    inputs = _conv_inputs(backend)
    inputs[1] = backend.asarray(np.ones((3, 2, 3, 3)), dtype="float32")
    with pytest.raises(ValueError, match=r"gradient checks run in float64; input 1 has dtype .*float32"):
        check_backward(CONV, F.conv2d_backward, inputs)


def test_wrt_and_explicit_dy(backend):
    inputs = _conv_inputs(backend)
    r = check_backward(CONV, scaled(dx=2.0), inputs, wrt=[1, 2])       # dx is wrong but not checked
    assert r.ok and r.checked == 36 + 2
    dy = backend.asarray(np.zeros((1, 2, 2, 3)))
    r = check_backward(CONV, scaled(dx=2.0), inputs, dy=dy)           # a zero probe sees nothing
    assert r.ok and r.max_error == 0.0


def test_integer_inputs_pass_through(backend):
    labels = backend.asarray(np.array([[[0, 1], [255, 2]]]))
    logits = backend.asarray(np.random.default_rng(0).standard_normal((1, 3, 2, 2)))
    r = check_backward(lambda z, t: F.softmax_cross_entropy(z, t),
                       lambda d, c: (F.softmax_cross_entropy_backward(c, d), None), [logits, labels])
    assert r.ok and r.checked == 12


def test_check_layer_restores_frozen_flags_and_catches_a_broken_layer(backend):
    layer = ConvTranspose2d(2, 2, 4, stride=2).to(backend.name, "float64")
    x = backend.asarray(np.random.default_rng(1).standard_normal((1, 2, 2, 3)))
    assert check_layer(layer, x).ok and layer.weight.frozen
    r = check_layer(layer, x, include_frozen=False)
    assert r.ok and r.checked == 12                          # input only
    original = layer.backward
    layer.backward = lambda dy: original(dy) * 1.01
    try:
        assert not check_layer(layer, x).ok
    finally:
        del layer.backward
    assert layer.weight.frozen
