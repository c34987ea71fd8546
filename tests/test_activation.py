"""relu and dropout: values, masks, statistics, gradient checks."""
import numpy as np
import pytest

import reference as R
from minifcn import functional as F
from minifcn.backend import RNG, to_numpy
from minifcn.gradcheck import check_backward


def test_relu_values_and_gradient_at_zero(backend):
    x = np.array([-2.0, -0.0, 0.0, 1e-300, 3.5]).reshape(1, 1, 1, 5)
    y, cache = F.relu(backend.asarray(x))
    R.assert_close(y, np.array([0, 0, 0, 1e-300, 3.5]).reshape(1, 1, 1, 5), atol=0, rtol=0)
    dx = F.relu_backward(backend.asarray(np.full((1, 1, 1, 5), 2.0)), cache)
    R.assert_close(dx, np.array([0, 0, 0, 2.0, 2.0]).reshape(1, 1, 1, 5), atol=0, rtol=0)  # 0 at x = 0, as PyTorch


def test_relu_keeps_dtype(backend):
    y, cache = F.relu(backend.asarray(np.ones((1, 1, 2, 2)), dtype="float32"))
    assert y.dtype == backend.xp.float32 and F.relu_backward(y, cache).dtype == backend.xp.float32


def test_relu_gradcheck(backend):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep finite differences away from the kink
    r = check_backward(F.relu, F.relu_backward, [backend.asarray(x)])
    assert r.ok, str(r)


def test_relu_agrees_with_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5))
    x[0, 0, 0, :2] = 0.0
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.relu(tx)
    y, cache = F.relu(x)
    dy = np.random.default_rng(2).standard_normal(x.shape)
    ty.backward(torch.tensor(dy))
    R.assert_close(y, ty.detach().numpy(), atol=0, rtol=0)
    R.assert_close(F.relu_backward(dy, cache), tx.grad.numpy(), atol=0, rtol=0)


# ---------------------------------------------------------------------------- dropout
def test_dropout_scales_kept_values_and_zeroes_the_rest(backend):
    p = 0.3
    x = np.random.default_rng(3).uniform(1.0, 2.0, (2, 3, 8, 8))   # never 0, so zeros mean "dropped"
    y, mask = F.dropout(backend.asarray(x), p, True, RNG(0))
    y = to_numpy(y)
    kept = y != 0
    assert 0 < kept.sum() < kept.size
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-15)


def test_dropout_backward_uses_the_forward_mask(backend):
    x = backend.asarray(np.ones((2, 3, 6, 6)))
    y, cache = F.dropout(x, 0.5, True, RNG(1))
    dy = np.random.default_rng(4).standard_normal((2, 3, 6, 6))
    dx = to_numpy(F.dropout_backward(backend.asarray(dy), cache))
    np.testing.assert_array_equal(dx, dy * to_numpy(y))   # y = mask / (1 - p) since x = 1


def test_dropout_gradcheck_with_a_fixed_mask(backend):
    def fwd(x):
        return F.dropout(x, 0.5, True, RNG(7))   # same seed: same mask on every probe
    x = backend.asarray(np.random.default_rng(5).standard_normal((2, 3, 4, 5)))
    r = check_backward(fwd, F.dropout_backward, [x])
    assert r.ok, str(r)


def test_dropout_is_identity_in_eval_mode_and_for_p0(backend):
    x = backend.asarray(np.random.default_rng(6).standard_normal((1, 2, 3, 4)))
    dy = backend.asarray(np.random.default_rng(7).standard_normal((1, 2, 3, 4)))
    for training, p in ((False, 0.5), (True, 0.0)):
        y, cache = F.dropout(x, p, training, RNG(0))
        R.assert_close(y, to_numpy(x), atol=0, rtol=0)
        R.assert_close(F.dropout_backward(dy, cache), to_numpy(dy), atol=0, rtol=0)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_keep_rate_is_one_minus_p(backend, p):
    n = 40_000
    y, _ = F.dropout(backend.asarray(np.ones((1, 1, 200, 200))), p, True, RNG(11))
    keep = float(np.count_nonzero(to_numpy(y))) / n
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(keep - (1 - p)) < 5 * sigma, (keep, 1 - p)
    # and the expectation is preserved: mean(y) ~ 1
    assert abs(float(np.mean(to_numpy(y))) - 1.0) < 5 * sigma / (1 - p)


def test_dropout_is_reproducible_from_the_seed_and_differs_across_seeds(backend):
    x = backend.asarray(np.ones((1, 2, 8, 8)), dtype="float32")
    a, _ = F.dropout(x, 0.5, True, RNG(3))
    b, _ = F.dropout(x, 0.5, True, RNG(3))
    c, _ = F.dropout(x, 0.5, True, RNG(4))
    assert a.dtype == backend.xp.float32
    assert np.array_equal(to_numpy(a), to_numpy(b)) and not np.array_equal(to_numpy(a), to_numpy(c))


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_bad_p(backend, p):
    with pytest.raises(ValueError, match=r"dropout probability p must be in \[0, 1\), got " + str(p)):
        F.dropout(backend.asarray(np.ones((1, 1, 2, 2))), p)


def test_dropout_matches_torch_scaling():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    t = torch.nn.functional.dropout(torch.ones(10_000, dtype=torch.float64), 0.25, training=True).numpy()
    y, _ = F.dropout(np.ones((1, 1, 100, 100)), 0.25, True, RNG(0))
    assert set(np.unique(t)) == set(np.unique(y)) == {0.0, 1 / 0.75}


def test_relu_and_dropout_gradcheck_random_directions(backend):
    x = backend.asarray(np.random.default_rng(8).standard_normal((2, 16, 9, 11)))
    r = check_backward(F.relu, F.relu_backward, [x], directions=3)
    assert r.ok, str(r)
    r = check_backward(lambda v: F.dropout(v, 0.3, True, RNG(9)), F.dropout_backward, [x], directions=3)
    assert r.ok, str(r)
