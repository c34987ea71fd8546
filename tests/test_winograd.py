"""The Winograd F(2x2, 3x3) plan (minifcn.functional.fast.winograd) computes what the
plain convolution computes, on every backend.

* float64: equal to minifcn.functional.reference.conv2d / conv2d_backward (and to the
  loop reference of tests/reference.py) to 1e-10, odd and even sizes, padding 0/1/2,
  batch 1 and 2, with and without bias; many tiny bands equal one band.
* float32: the error against a float64 result is reported and bounded relative to the
  output scale, on ReLU activations and He-initialised weights (FCN's).
* float64 finite-difference gradient checks.
"""
import numpy as np
import pytest

import reference as R
from minifcn import backend as B
from minifcn.backend import to_numpy
from minifcn.functional import reference
from minifcn.functional.fast import bands, winograd
from minifcn.gradcheck import check_backward

S, D = (1, 1), (1, 1)

# (x shape (N, C, H, W), C_out, padding, bias)
CASES = [
    ((1, 3, 5, 7), 4, (1, 1), True),      # odd H, odd W: the last tile row and column are cut
    ((2, 2, 6, 6), 3, (0, 0), False),     # even, valid, batch 2, no bias
    ((1, 4, 7, 4), 2, (2, 2), True),      # full padding (dx then pads dy by 0)
    ((2, 3, 3, 3), 5, (0, 0), True),      # a single output pixel
    ((1, 2, 4, 9), 2, (1, 2), True),      # different padding per axis
    ((2, 2, 8, 5), 3, (2, 0), False),
]


def _data(case, seed=0):
    x_shape, c_out, p, bias = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((c_out, x_shape[1], 3, 3))
    b = rng.standard_normal(c_out) if bias else None
    oh, ow = x_shape[2] + 2 * p[0] - 2, x_shape[3] + 2 * p[1] - 2
    dy = rng.standard_normal((x_shape[0], c_out, oh, ow))
    return x, w, b, p, dy


def _on(backend, *arrays):
    return [None if a is None else backend.asarray(a) for a in arrays]


def _winograd_all(backend, case):
    x, w, b, p, dy = _data(case)
    xb, wb, bb, dyb = _on(backend, x, w, b, dy)
    y, cache = winograd.conv2d(xb, wb, bb, S, p, D)
    return (y,) + winograd.conv2d_backward(dyb, cache)


@pytest.mark.parametrize("case", CASES)
def test_equals_reference_float64(backend, case):
    x, w, b, p, dy = _data(case)
    y_ref, cache_ref = reference.conv2d(x, w, b, S, p, D)
    expected = (y_ref,) + reference.conv2d_backward(dy, cache_ref)
    got = _winograd_all(backend, case)
    assert isinstance(_cache(backend, case), winograd.ConvCache)
    for name, a, e in zip(("y", "dx", "dweight", "dbias"), got, expected):
        if e is None:
            assert a is None, name
        else:
            R.assert_close(a, e, atol=1e-10, rtol=1e-10)


def _cache(backend, case):
    x, w, b, p, _ = _data(case)
    return winograd.conv2d(*_on(backend, x, w, b), S, p, D)[1]


@pytest.mark.parametrize("case", CASES[:3])
def test_forward_equals_loop_reference(backend, case):
    x, w, b, p, _ = _data(case)
    y, _ = winograd.conv2d(*_on(backend, x, w, b), S, p, D)
    R.assert_close(y, R.conv2d(x, w, b, 1, p, 1), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[4]])
def test_many_bands_equal_one_band(backend, case, monkeypatch):
    monkeypatch.setattr(B, "BAND_ELEMENTS", 10**12)
    whole = _winograd_all(backend, case)
    monkeypatch.setattr(B, "BAND_ELEMENTS", 1)           # one tile row per band
    monkeypatch.setattr(winograd, "MIN_BAND_TILES", 1)
    banded = _winograd_all(backend, case)
    for a, e in zip(banded, whole):
        if e is None:
            assert a is None
        else:
            R.assert_close(a, to_numpy(e), atol=1e-12, rtol=1e-12)


def test_need_flags_skip_gradients(backend):
    x, w, b, p, dy = _data(CASES[0])
    xb, wb, bb, dyb = _on(backend, x, w, b, dy)
    _, cache = winograd.conv2d(xb, wb, bb, S, p, D)
    dx, dweight, dbias = winograd.conv2d_backward(dyb, cache, need_dx=False, need_dweight=False)
    assert dx is None and dweight is None
    R.assert_close(dbias, dy.sum(axis=(0, 2, 3)))


@pytest.mark.parametrize("out_size,extra", [((5, 7), (0, 0)), ((4, 6), (3, 1)), ((1, 2), (0, 2))])
def test_winograd_correlate_equals_bands_correlate(backend, out_size, extra):
    """The drop-in for bands.correlate: an already padded input, possibly larger than needed."""
    rng = np.random.default_rng(5)
    xpad = rng.standard_normal((2, 3, out_size[0] + 2 + extra[0], out_size[1] + 2 + extra[1]))
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    xb, wb, bb = _on(backend, xpad, w, b)
    got = winograd.winograd_correlate(xb, wb, bb, out_size)
    R.assert_close(got, to_numpy(bands.correlate(xb, wb, bb, S, D, out_size)), atol=1e-10, rtol=1e-10)


def test_weight_transforms_invert(backend):
    """G g G^T followed by (S G)^T . (S G) with the 16 signs of S x S is (G^T G) g (G^T G):
    checked against that product, so a wrong matrix or sign in either is caught."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((2, 3, 3, 3))
    u = to_numpy(winograd.transform_weight(backend.asarray(w)))                       # (16, 2, 3)
    g = np.array(winograd._G)
    np.testing.assert_allclose(u.reshape(4, 4, 2, 3).transpose(2, 3, 0, 1), g @ w @ g.T, atol=1e-12)
    s = np.array([1.0, 1.0, 1.0, -1.0])
    du = (u.reshape(4, 4, 2, 3) * (s[:, None] * s[None, :])[:, :, None, None]).reshape(16, 2, 3)
    back = to_numpy(winograd.inverse_transform_weight_gradient(backend.asarray(du)))
    np.testing.assert_allclose(back, (g.T @ g) @ w @ (g.T @ g), atol=1e-12)


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[4]])
def test_gradcheck_float64(backend, case):
    x, w, b, p, _ = _data(case, seed=1)
    inputs = _on(backend, x, w, b)

    def forward(x, w, b):
        return winograd.conv2d(x, w, b, S, p, D)

    report = check_backward(forward, winograd.conv2d_backward, inputs, seed=3)
    assert report.ok, report


def test_applies_to_3x3_stride1_only():
    assert winograd.applies((8, 4, 3, 3), (1, 1), (1, 1), (1, 1))
    assert winograd.applies((8, 4, 3, 3), (1, 1), (2, 0), (1, 1))
    assert not winograd.applies((8, 4, 3, 3), (2, 2), (1, 1), (1, 1))       # stride 2
    assert not winograd.applies((8, 4, 3, 3), (1, 1), (1, 1), (2, 2))       # dilated
    assert not winograd.applies((8, 4, 5, 5), (1, 1), (1, 1), (1, 1))       # 5x5
    assert not winograd.applies((8, 4, 3, 3), (1, 1), (3, 1), (1, 1))       # padding past the kernel's reach
    assert not winograd.applies((8, 4, 3, 1), (1, 1), (1, 0), (1, 1))


def _fcn_like(c_in, c_out, size, seed):
    """ReLU activations and He-initialised weights, as between FCN's 3x3 layers."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal((1, c_in, size, size)), 0.0)
    w = rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2.0 / (9 * c_in))
    b = 0.1 * rng.standard_normal(c_out)
    dy = rng.standard_normal((1, c_out, size, size))
    return x, w, b, dy


def _relative_errors(c_in, c_out, size, seed=0):
    """max |float32 - float64| / max |float64| of y, dx, dweight for the Winograd plan and for
    the banded im2col plan."""
    x, w, b, dy = _fcn_like(c_in, c_out, size, seed)
    y, cache = reference.conv2d(x, w, b, S, (1, 1), D)
    exact = (y,) + reference.conv2d_backward(dy, cache)[:2]
    x32, w32, b32, dy32 = (a.astype(np.float32) for a in (x, w, b, dy))
    errors = {}
    for name, plan in (("winograd", winograd), ("bands", bands)):
        y32, c32 = plan.conv2d(x32, w32, b32, S, (1, 1), D)
        got = (y32,) + plan.conv2d_backward(dy32, c32)[:2]
        errors[name] = [float(np.max(np.abs(g.astype(np.float64) - e)) / np.max(np.abs(e)))
                        for g, e in zip(got, exact)]
    return errors


@pytest.mark.parametrize("c_in,c_out,size", [(16, 16, 33), (64, 64, 15), (128, 128, 9)])
def test_float32_error_is_bounded(c_in, c_out, size):
    errors = _relative_errors(c_in, c_out, size)
    print(f"\nfloat32 relative error (y, dx, dweight) C {c_in}->{c_out} at {size}x{size}: "
          f"winograd {['%.1e' % e for e in errors['winograd']]}, bands {['%.1e' % e for e in errors['bands']]}")
    for name, e in zip(("y", "dx", "dweight"), errors["winograd"]):
        assert e < 1e-5, f"{name}: float32 error {e:.2e} relative to the output scale"
        assert e > 0.0, f"{name}: no rounding at all means the float32 path was not taken"


def test_matches_torch_float64():
    torch = pytest.importorskip("torch")
    x, w, b, p, dy = _data(CASES[0], seed=4)
    y, cache = winograd.conv2d(x, w, b, S, p, D)
    dx, dweight, dbias = winograd.conv2d_backward(dy, cache)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = torch.nn.functional.conv2d(xt, wt, bt, padding=p)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-10)
    for a, t in ((dx, xt), (dweight, wt), (dbias, bt)):
        np.testing.assert_allclose(a, t.grad.numpy(), atol=1e-10)


def test_input_gradient_pads_dy_by_two_minus_p():
    """dx for padding 2 needs no padding of dy and for padding 0 a full 2-pixel frame:
    both equal the banded plan's dx."""
    rng = np.random.default_rng(6)
    for p in ((0, 0), (2, 2), (0, 2)):
        x, w = rng.standard_normal((1, 2, 6, 5)), rng.standard_normal((3, 2, 3, 3))
        oh, ow = 6 + 2 * p[0] - 2, 5 + 2 * p[1] - 2
        dy = rng.standard_normal((1, 3, oh, ow))
        expected = bands.input_gradient(dy, w, S, p, D, (6, 5))
        np.testing.assert_allclose(winograd.input_gradient(dy, w, p, (6, 5)), expected, atol=1e-10)


@pytest.mark.parametrize("out_size,extra", [((5, 7), (0, 0)), ((4, 6), (3, 1))])
def test_weight_gradient_padded_equals_backward_bands(backend, out_size, extra):
    """The weight-gradient drop-in for a region of an already padded input (frame plan)."""
    rng = np.random.default_rng(7)
    xpad = rng.standard_normal((2, 3, out_size[0] + 2 + extra[0], out_size[1] + 2 + extra[1]))
    w, dy = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 4) + out_size)
    xb, wb, dyb = _on(backend, xpad, w, dy)
    expected = to_numpy(bands.backward_bands(xb, dyb, wb, S, D, None)).reshape(w.shape)
    R.assert_close(winograd.weight_gradient_padded(xb, dyb), expected, atol=1e-10, rtol=1e-10)
