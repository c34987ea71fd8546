"""The Winograd F(4x4, 3x3) plan (minifcn.functional.fast.winograd4) computes what the
plain convolution computes, on every backend.

* float64: equal to minifcn.functional.reference.conv2d / conv2d_backward (and to the
  loop reference of tests/reference.py) to 1e-10, sizes that are and are not multiples
  of 4, padding 0/1/2, batch 1 and 2, with and without bias; many tiny bands equal one.
* The transform matrices: U = G g G^T checked against an independent einsum, and
  A^T [(G g G^T) * (B^T d B)] A checked against the direct 3x3 correlation of one tile.
* float32: the error against a float64 result is reported and bounded relative to the
  output scale, on ReLU activations and He-initialised weights (FCN's).
* float64 finite-difference gradient checks; the dispatcher and the frame plan take it
  where it pays.
"""
import numpy as np
import pytest

import reference as R
from minifcn import backend as B
from minifcn import functional as F
from minifcn.backend import to_numpy
from minifcn.functional import reference
from minifcn.functional.fast import bands, frame, winograd, winograd4
from minifcn.gradcheck import check_backward

S, D = (1, 1), (1, 1)

# (x shape (N, C, H, W), C_out, padding, bias)
CASES = [
    ((1, 3, 5, 7), 4, (1, 1), True),      # OH, OW not multiples of 4: the last tiles are cut
    ((2, 2, 8, 10), 3, (0, 0), False),    # batch 2, valid, no bias
    ((1, 4, 9, 6), 2, (2, 2), True),      # full padding (dx then pads dy by 0)
    ((2, 3, 3, 3), 5, (0, 0), True),      # a single output pixel
    ((1, 2, 6, 13), 2, (1, 2), True),     # different padding per axis
    ((2, 2, 12, 5), 3, (2, 0), False),
]


@pytest.fixture(autouse=True)
def fast_path():
    """Run F.* on the fast paths even under MINIFCN_REFERENCE=1."""
    with F.use_reference(False):
        yield


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


def _plan_all(backend, case):
    x, w, b, p, dy = _data(case)
    xb, wb, bb, dyb = _on(backend, x, w, b, dy)
    y, cache = winograd4.conv2d(xb, wb, bb, S, p, D)
    assert isinstance(cache, winograd4.ConvCache)
    return (y,) + winograd4.conv2d_backward(dyb, cache)


@pytest.mark.parametrize("case", CASES)
def test_equals_reference_float64(backend, case):
    x, w, b, p, dy = _data(case)
    y_ref, cache_ref = reference.conv2d(x, w, b, S, p, D)
    expected = (y_ref,) + reference.conv2d_backward(dy, cache_ref)
    for name, a, e in zip(("y", "dx", "dweight", "dbias"), _plan_all(backend, case), expected):
        if e is None:
            assert a is None, name
        else:
            R.assert_close(a, e, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("case", CASES[:3])
def test_forward_equals_loop_reference(backend, case):
    x, w, b, p, _ = _data(case)
    y, _ = winograd4.conv2d(*_on(backend, x, w, b), S, p, D)
    R.assert_close(y, R.conv2d(x, w, b, 1, p, 1), atol=1e-10, rtol=1e-10)


def test_weight_gradient_from_the_f2x2_plan_at_many_channels(monkeypatch):
    """At winograd.MIN_CHANNELS and more, dweight comes from F(2x2, 3x3)'s adjoint: still
    the reference's (checked with the threshold lowered to this small layer)."""
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 3)
    calls = []
    inner = winograd.weight_gradient
    monkeypatch.setattr(winograd, "weight_gradient", lambda *a: calls.append(1) or inner(*a))
    x, w, b, p, dy = _data(((2, 3, 9, 7), 4, (1, 1), True), seed=5)
    _, cache = winograd4.conv2d(x, w, b, S, p, D)
    got = winograd4.conv2d_backward(dy, cache)
    assert calls, "the F(2x2, 3x3) weight gradient was not used"
    expected = reference.conv2d_backward(dy, reference.conv2d(x, w, b, S, p, D)[1])
    for a, e in zip(got, expected):
        R.assert_close(a, e, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[4]])
def test_many_bands_equal_one_band(backend, case, monkeypatch):
    monkeypatch.setattr(B, "BAND_ELEMENTS", 10**12)
    whole = _plan_all(backend, case)
    monkeypatch.setattr(B, "BAND_ELEMENTS", 1)           # one tile row per band
    monkeypatch.setattr(winograd4, "MIN_BAND_TILES", 1)
    banded = _plan_all(backend, case)
    for a, e in zip(banded, whole):
        if e is None:
            assert a is None
        else:
            R.assert_close(a, to_numpy(e), atol=1e-12, rtol=1e-12)


def test_need_flags_skip_gradients(backend):
    x, w, b, p, dy = _data(CASES[0])
    xb, wb, bb, dyb = _on(backend, x, w, b, dy)
    _, cache = winograd4.conv2d(xb, wb, bb, S, p, D)
    dx, dweight, dbias = winograd4.conv2d_backward(dyb, cache, need_dx=False, need_dweight=False)
    assert dx is None and dweight is None
    R.assert_close(dbias, dy.sum(axis=(0, 2, 3)))


@pytest.mark.parametrize("out_size,extra", [((5, 7), (0, 0)), ((8, 6), (3, 1)), ((1, 2), (0, 2))])
def test_correlate_equals_bands_correlate(backend, out_size, extra):
    """The drop-in for bands.correlate (the frame plan's core): an already padded input,
    possibly larger than needed."""
    rng = np.random.default_rng(5)
    xpad = rng.standard_normal((2, 3, out_size[0] + 2 + extra[0], out_size[1] + 2 + extra[1]))
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    xb, wb, bb = _on(backend, xpad, w, b)
    got = winograd4.correlate(xb, wb, bb, out_size)
    R.assert_close(got, to_numpy(bands.correlate(xb, wb, bb, S, D, out_size)), atol=1e-10, rtol=1e-10)


def test_weight_transform_is_g_g_gt(backend):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((2, 3, 3, 3))
    u = to_numpy(winograd4.transform_weight(backend.asarray(w)))                      # (36, 2, 3)
    g = np.array(winograd4._G)
    np.testing.assert_allclose(u.reshape(6, 6, 2, 3), np.einsum("ak,ockl,bl->aboc", g, w, g), atol=1e-12)


def test_one_tile_by_hand():
    """Y = A^T [(G g G^T) * (B^T d B)] A is the 4x4 'valid' correlation of a 6x6 tile d
    with g: the three matrices as printed in the module docstring."""
    rng = np.random.default_rng(7)
    d, g = rng.standard_normal((6, 6)), rng.standard_normal((3, 3))
    bt, gm, at = (np.array(m, dtype=float) for m in (winograd4._B_T, winograd4._G, winograd4._A_T))
    y = at @ ((gm @ g @ gm.T) * (bt @ d @ bt.T)) @ at.T
    direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(y, direct, atol=1e-12)


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[4]])
def test_gradcheck_float64(backend, case):
    x, w, b, p, _ = _data(case, seed=1)
    inputs = _on(backend, x, w, b)

    def forward(x, w, b):
        return winograd4.conv2d(x, w, b, S, p, D)

    report = check_backward(forward, winograd4.conv2d_backward, inputs, seed=3)
    assert report.ok, report


def _fcn_like(c_in, c_out, size, seed):
    """ReLU activations and He-initialised weights, as between FCN's 3x3 layers."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal((1, c_in, size, size)), 0.0)
    w = rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2.0 / (9 * c_in))
    b = 0.1 * rng.standard_normal(c_out)
    dy = rng.standard_normal((1, c_out, size, size))
    return x, w, b, dy


@pytest.mark.parametrize("c_in,c_out,size", [(16, 16, 33), (64, 64, 15), (128, 128, 9)])
def test_float32_error_is_bounded(c_in, c_out, size):
    """max |float32 - float64| / max |float64| of y and dx, F(4x4, 3x3) against im2col."""
    x, w, b, dy = _fcn_like(c_in, c_out, size, seed=0)
    y, cache = reference.conv2d(x, w, b, S, (1, 1), D)
    exact = (y, reference.conv2d_backward(dy, cache)[0])
    x32, w32, b32, dy32 = (a.astype(np.float32) for a in (x, w, b, dy))
    errors = {}
    for name, plan in (("winograd4", winograd4), ("bands", bands)):
        y32, c32 = plan.conv2d(x32, w32, b32, S, (1, 1), D)
        got = (y32, plan.conv2d_backward(dy32, c32)[0])
        errors[name] = [float(np.max(np.abs(g.astype(np.float64) - e)) / np.max(np.abs(e)))
                        for g, e in zip(got, exact)]
    print(f"\nfloat32 relative error (y, dx) C {c_in}->{c_out} at {size}x{size}: "
          f"winograd4 {['%.1e' % e for e in errors['winograd4']]}, bands {['%.1e' % e for e in errors['bands']]}")
    for name, e in zip(("y", "dx"), errors["winograd4"]):
        assert e < 1e-5, f"{name}: float32 error {e:.2e} relative to the output scale"
        assert e > 0.0, f"{name}: no rounding at all means the float32 path was not taken"


def test_pays_only_where_measured(monkeypatch):
    x = np.zeros((1, 64, 57, 57), np.float32)
    assert winograd4.pays(x, (64, 64, 3, 3), S, (1, 1), D)
    assert not winograd4.pays(x, (32, 64, 3, 3), S, (1, 1), D)                # too few input channels
    assert not winograd4.pays(np.zeros((1, 64, 29, 29)), (64, 64, 3, 3), S, (1, 1), D)   # too small
    assert not winograd4.pays(x, (64, 64, 3, 3), S, (1, 1), (2, 2))           # dilated
    assert not winograd4.pays(x, (64, 64, 3, 3), (2, 2), (1, 1), D)           # strided


def test_dispatcher_and_frame_plan_take_it(monkeypatch):
    """F.conv2d takes the plan where it pays, and so does the frame plan for its core and
    its dx; both still equal the reference."""
    monkeypatch.setattr(winograd4, "MIN_CHANNELS", 2)
    monkeypatch.setattr(winograd4, "MIN_OUTPUT", 4)
    monkeypatch.setattr(B, "FRAME_MIN_PIXELS", 1)
    calls = []
    inner = winograd4._correlate
    monkeypatch.setattr(winograd4, "_correlate", lambda *a: calls.append(a[0].shape) or inner(*a))
    rng = np.random.default_rng(8)
    w, b = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)

    x = rng.standard_normal((1, 2, 9, 10))
    y, cache = F.conv2d(x, w, b, 1, 1)
    assert isinstance(cache, winograd4.ConvCache)
    R.assert_close(y, R.conv2d(x, w, b, 1, 1, 1))

    x = rng.standard_normal((1, 2, 20, 20))                # constant outside a 10x10 core
    x[:, :, :5, :] = x[:, :, 15:, :] = x[:, :, :, :5] = x[:, :, :, 15:] = rng.standard_normal((1, 2, 1, 1))
    calls.clear()
    y, cache = F.conv2d(x, w, b, 1, 1)
    assert isinstance(cache, frame.ConvCache) and calls, "the frame plan's core did not use F(4x4, 3x3)"
    dy = rng.standard_normal(y.shape)
    got = F.conv2d_backward(dy, cache)
    expected = reference.conv2d_backward(dy, reference.conv2d(x, w, b, S, (1, 1), D)[1])
    R.assert_close(y, R.conv2d(x, w, b, 1, 1, 1))
    for a, e in zip(got, expected):
        R.assert_close(a, e, atol=1e-10, rtol=1e-10)


def test_matches_torch_float64():
    torch = pytest.importorskip("torch")
    x, w, b, p, dy = _data(CASES[0], seed=4)
    y, cache = winograd4.conv2d(x, w, b, S, p, D)
    dx, dweight, dbias = winograd4.conv2d_backward(dy, cache)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = torch.nn.functional.conv2d(xt, wt, bt, padding=p)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-10)
    for a, t in ((dx, xt), (dweight, wt), (dbias, bt)):
        np.testing.assert_allclose(a, t.grad.numpy(), atol=1e-10)


def test_dispatcher_results_do_not_depend_on_the_core_count(monkeypatch):
    """A layer where the plan pays (64 channels, 48x48): F.conv2d takes it, and output, dx
    and dweight are bit-identical for 1, 2 and 16 threads; float64 equals the reference."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 64, 48, 48))
    w = rng.standard_normal((64, 64, 3, 3)) * 0.05
    b = rng.standard_normal(64)
    results = []
    for threads in (1, 2, 16):
        monkeypatch.setattr(B, "THREADS", threads)
        y, cache = F.conv2d(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), 1, 1)
        assert isinstance(cache, winograd4.ConvCache)
        results.append((y,) + F.conv2d_backward(np.ones_like(y), cache))
    for other in results[1:]:
        for a, e in zip(results[0], other):
            np.testing.assert_array_equal(a, e)
    y, cache = F.conv2d(x, w, b, 1, 1)
    dy = rng.standard_normal(y.shape)
    got = (y,) + F.conv2d_backward(dy, cache)
    y_ref, cache_ref = reference.conv2d(x, w, b, 1, 1)
    for a, e in zip(got, (y_ref,) + reference.conv2d_backward(dy, cache_ref)):
        np.testing.assert_allclose(a, e, atol=1e-10, rtol=1e-10)
    assert not isinstance(F.conv2d(x[:, :32], w[:32, :32], None, 1, 1)[1], winograd4.ConvCache)  # 32: bands
