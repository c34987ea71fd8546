"""crf.py: the exact mean field against an independent dense reference, the
permutohedral lattice against the exact path, invariants, backends and input checks."""
import math

import numpy as np
import pytest

from minifcn import backend as bk
from minifcn import crf
from minifcn.crf import dense_crf
from minifcn.crf_bench import synthetic_scene


# ----------------------------------------------------------------------------
# An independent reference: the kernel matrix by a double loop, Potts compatibility
# written out, mean field as in Krähenbühl & Koltun 2011 (Algorithm 1).
# ----------------------------------------------------------------------------
def naive_kernel(image, w_app, t_alpha, t_beta, w_smooth, t_gamma):
    H, W, _ = image.shape
    pixels = [(r, c) for r in range(H) for c in range(W)]
    K = np.zeros((H * W, H * W))
    for i, (ri, ci) in enumerate(pixels):
        for j, (rj, cj) in enumerate(pixels):
            if i == j:
                continue
            dp = (ri - rj) ** 2 + (ci - cj) ** 2
            dI = sum((float(image[ri, ci, ch]) - float(image[rj, cj, ch])) ** 2 for ch in range(3))
            K[i, j] = (w_app * math.exp(-dp / (2 * t_alpha ** 2) - dI / (2 * t_beta ** 2))
                       + w_smooth * math.exp(-dp / (2 * t_gamma ** 2)))
    return K


def naive_dense_crf(probs, image, iterations, w_app, t_alpha, t_beta, w_smooth, t_gamma):
    C, H, W = probs.shape
    K = naive_kernel(image, w_app, t_alpha, t_beta, w_smooth, t_gamma)
    unary = -np.log(probs.reshape(C, H * W))
    mu = 1.0 - np.eye(C)                          # Potts: penalty for different labels
    Q = probs.reshape(C, H * W).copy()
    for _ in range(iterations):
        filtered = Q @ K.T                        # [l, i] = sum_j k(i, j) Q_j(l)
        energy = unary + mu @ filtered            # [l, i] = unary + sum_l' mu(l, l') filtered[l', i]
        Q = np.exp(-(energy - energy.min(axis=0)))
        Q /= Q.sum(axis=0)
    return Q.reshape(C, H, W)


def random_case(rng, C=3, H=6, W=7):
    image = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
    logits = rng.normal(0.0, 1.5, (C, H, W))
    probs = np.exp(logits)
    return probs / probs.sum(axis=0), image


PARAMS = [
    dict(w_appearance=0.05, theta_alpha=3.0, theta_beta=40.0, w_smooth=0.03, theta_gamma=1.5),
    dict(w_appearance=0.3, theta_alpha=2.0, theta_beta=90.0, w_smooth=0.1, theta_gamma=0.8),
    dict(),                                                            # the defaults: near hard labels
]


@pytest.mark.parametrize("params", PARAMS)
def test_exact_equals_naive_reference(params):
    rng = np.random.default_rng(len(params))
    probs, image = random_case(rng)
    full = {**dict(w_appearance=4.0, theta_alpha=121.0, theta_beta=5.0, w_smooth=3.0, theta_gamma=3.0), **params}
    for iterations in (1, 5):
        Q = dense_crf(probs, image, iterations=iterations, method="exact", **full)
        ref = naive_dense_crf(probs, image, iterations, full["w_appearance"], full["theta_alpha"],
                              full["theta_beta"], full["w_smooth"], full["theta_gamma"])
        np.testing.assert_allclose(Q, ref, rtol=1e-11, atol=1e-13)
    assert np.abs(Q - probs).max() > 1e-3           # the CRF did something


def test_exact_blocks_and_cache_do_not_change_the_result(monkeypatch):
    probs, image = random_case(np.random.default_rng(3), H=9, W=8)
    p = dict(w_appearance=0.2, theta_alpha=4.0, theta_beta=50.0, w_smooth=0.1, theta_gamma=2.0)
    cached = dense_crf(probs, image, 4, method="exact", **p)
    monkeypatch.setattr(crf, "EXACT_CACHE_ELEMENTS", 0)
    blocks = crf.kernel_blocks
    monkeypatch.setattr(crf, "kernel_blocks", lambda *a, **k: blocks(*a, block_rows=10))
    np.testing.assert_allclose(dense_crf(probs, image, 4, method="exact", **p), cached, rtol=1e-13, atol=1e-15)


# ----------------------------------------------------------------------------
# The lattice
# ----------------------------------------------------------------------------
def test_simplex_holds_the_point_with_barycentric_weights():
    f = np.random.default_rng(0).normal(0.0, 3.0, (500, 5))
    x = crf.PermutohedralLattice(f).scale * f @ crf._elevation_basis(5).T
    y, rank = crf._nearest_remainder_zero(x)
    b = crf._barycentric(x - y, rank)
    keys = crf._simplex_vertices(y, rank)                                   # (6, N, 5)
    vertices = np.concatenate([keys, -keys.sum(axis=2, keepdims=True)], axis=2)
    assert np.all(vertices % 6 == np.arange(6)[:, None, None])            # vertex k has remainder k
    assert b.min() >= 0.0
    np.testing.assert_allclose(b.sum(axis=1), 1.0, atol=1e-14)
    np.testing.assert_allclose(np.einsum("nk,kni->ni", b, vertices), x, atol=1e-10)
    B = crf._elevation_basis(5)
    np.testing.assert_allclose(B.T @ B, np.eye(5), atol=1e-14)
    np.testing.assert_allclose(B.sum(axis=0), 0.0, atol=1e-14)


def test_self_response_matches_a_complete_lattice():
    """The closed form for the splat-blur-slice weight between vertices of one simplex,
    against the blur run on every lattice point of A*_5 in a box around the simplex."""
    d, D, R = 5, 6, 18
    points = []
    for k in range(D):
        values = np.arange(-R, R + 1)
        values = values[(values - k) % D == 0]
        grid = np.stack(np.meshgrid(*[values] * d, indexing="ij"), axis=-1).reshape(-1, d)
        points.append(grid[np.abs(grid.sum(axis=1)) <= R])
    points = np.concatenate(points)
    table = crf._KeyTable(points, margin=D)
    table.index(points)
    M = points.shape[0]
    steps = crf._lattice_steps(d)
    look = lambda keys: np.append(table.lookup(keys, M), M)              # slot M: missing, stays 0
    neighbours = [(look(points + steps[2 * j]), look(points + steps[2 * j + 1])) for j in range(D)]
    rank = np.arange(D)[None, :]                                         # the canonical simplex
    vertex = table.lookup(crf._simplex_vertices(np.zeros((1, D), dtype=np.int64), rank)[:, 0, :], M)
    B = np.zeros((D, D))
    for k2 in range(D):
        L = np.zeros(M + 1)
        L[vertex[k2]] = 1.0
        for plus, minus in neighbours:
            L = 0.5 * L + 0.25 * (L[plus] + L[minus])
        B[:, k2] = L[vertex]
    eye = np.eye(D)
    for k in range(D):
        for k2 in range(D):
            b = (eye[k] + eye[k2])[:, None]
            expected = B[k, k] + B[k2, k2] + 2 * B[k, k2] if k != k2 else 4 * B[k, k]
            assert crf._full_lattice_self_response(b)[0] == pytest.approx(expected, rel=1e-12)
    assert B[0, 0] == pytest.approx(2.0 ** -6 + 2 * 4.0 ** -6)


def exact_gaussian_others(f, V):
    D = ((f[:, None, :] - f[None, :, :]) ** 2).sum(axis=2)
    K = np.exp(-0.5 * D)
    np.fill_diagonal(K, 0.0)
    return V @ K.T


@pytest.mark.parametrize("noise, bound", [(3.0, 0.11), (8.0, 0.05), (20.0, 0.08)])
def test_lattice_filter_close_to_exact_gaussian_sum(noise, bound):
    """Relative L1 error of sum_{j != i} exp(-|f_i - f_j|^2 / 2) V_j on a 40 x 48 scene
    (theta_alpha 12, theta_beta 5), colour noise 3, 8, 20: measured 0.090, 0.037, 0.065;
    without ghost points 0.108, 0.124, 0.498."""
    image, probs, _ = synthetic_scene(40, 48, 3, noise=noise)
    f = crf.appearance_features(image, 12.0, 5.0)
    V = probs.reshape(3, -1)
    exact = exact_gaussian_others(f, V)
    lattice = crf.PermutohedralLattice(f)
    error = np.abs(lattice.filter_others(V) - exact).mean() / exact.mean()
    assert error < bound
    sparse = crf.PermutohedralLattice(f, ghosts=False)
    assert sparse.n_lattice == sparse.n_touched < lattice.n_lattice
    assert np.abs(sparse.filter_others(V) - exact).mean() / exact.mean() > error


def test_byte_keys_give_the_same_lattice():
    image, probs, _ = synthetic_scene(12, 10, 3)
    f = crf.appearance_features(image, 5.0, 5.0)
    a, b = crf.PermutohedralLattice(f), crf.PermutohedralLattice(f, _int_keys=False)
    assert (a.n_touched, a.n_lattice) == (b.n_touched, b.n_lattice)
    V = probs.reshape(3, -1)
    np.testing.assert_allclose(a.filter(V), b.filter(V), rtol=1e-12)


@pytest.mark.parametrize("noise, seed", [(3.0, 0), (8.0, 1), (20.0, 0), (20.0, 1)])
def test_lattice_agrees_with_exact(noise, seed):
    """40 x 48, 3 classes, 10 rounds, defaults with theta_alpha scaled to the image
    (121 * 48 / 500). Measured argmax agreement 99.90 %, 99.95 %, 99.69 %, 99.90 %;
    mean |dQ| 6.6e-4, 2.7e-4, 1.9e-3, 6.1e-4."""
    image, probs, labels = synthetic_scene(40, 48, 3, seed=seed, noise=noise)
    theta_alpha = 121.0 * 48 / 500
    Qe = dense_crf(probs, image, theta_alpha=theta_alpha, method="exact")
    Ql = dense_crf(probs, image, theta_alpha=theta_alpha, method="lattice")
    agreement = np.mean(Qe.argmax(axis=0) == Ql.argmax(axis=0))
    assert agreement >= 0.99
    assert np.abs(Qe - Ql).mean() < 5e-3
    assert np.mean(Ql.argmax(axis=0) == labels) > np.mean(probs.argmax(axis=0) == labels) + 0.2


def test_smooth_separable_is_the_exact_position_sum():
    rng = np.random.default_rng(0)
    Q = rng.random((2, 5, 7))
    G_rows, G_cols = crf.gaussian_matrix(5, 1.3, Q), crf.gaussian_matrix(7, 1.3, Q)
    p = crf.positions(5, 7)
    K = np.exp(-((p[:, None, :] - p[None, :, :]) ** 2).sum(axis=2) / (2 * 1.3 ** 2))
    np.testing.assert_allclose(crf.smooth_separable(Q, G_rows, G_cols).reshape(2, -1),
                               Q.reshape(2, -1) @ K.T, rtol=1e-12)
    Q = rng.random((2, 30, 70))                                          # banded: drops < 1e-14 only
    G_rows, G_cols = crf.gaussian_matrix(30, 1.3, Q), crf.gaussian_matrix(70, 1.3, Q)
    np.testing.assert_allclose(crf.smooth_separable(Q, G_rows, G_cols, radius=11, block=8),
                               crf.smooth_separable(Q, G_rows, G_cols), rtol=1e-13)


# ----------------------------------------------------------------------------
# Invariants and backends
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", crf.METHODS)
def test_on_every_backend(backend, method):
    image, probs, _ = synthetic_scene(10, 12, 4, seed=2)
    params = dict(theta_alpha=3.0, w_appearance=0.5, w_smooth=0.3)
    ref = dense_crf(probs, image, 3, method=method, **params)
    for img in (image, backend.asarray(image)):
        Q = dense_crf(backend.asarray(probs), img, 3, method=method, **params)
        assert bk.backend_of(Q).name == backend.name and Q.dtype == backend.xp.float64
        assert Q.shape == probs.shape
        np.testing.assert_allclose(bk.to_numpy(Q), ref, rtol=1e-9, atol=1e-12)
    Q32 = dense_crf(backend.asarray(probs, dtype="float32"), image, 3, method=method, **params)
    assert Q32.dtype == backend.xp.float32
    np.testing.assert_allclose(bk.to_numpy(Q32), ref, atol=2e-4)


@pytest.mark.parametrize("method", crf.METHODS)
def test_q_is_a_distribution_and_zero_iterations_return_probs(method):
    image, probs, _ = synthetic_scene(16, 20, 5, seed=3)
    Q = dense_crf(probs, image, 4, theta_alpha=5.0, method=method)
    assert Q.min() >= 0.0
    np.testing.assert_allclose(Q.sum(axis=0), 1.0, atol=1e-12)
    Q0 = dense_crf(probs, image, 0, method=method)
    np.testing.assert_array_equal(Q0, probs)
    assert Q0 is not probs


@pytest.mark.parametrize("method", crf.METHODS)
def test_uniform_probs_on_a_uniform_image_stay_uniform(method):
    image = np.full((9, 11, 3), 97, dtype=np.uint8)
    probs = np.full((4, 9, 11), 0.25)
    Q = dense_crf(probs, image, 5, theta_alpha=4.0, method=method)
    np.testing.assert_allclose(Q, 0.25, atol=1e-12)


# ----------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------
def _ok():
    image, probs, _ = synthetic_scene(6, 7, 3)
    return probs, image


@pytest.mark.parametrize("change, message", [
    (lambda p, i: (p, i.astype(np.float32)), r"image must be uint8 RGB of shape \(H, W, 3\) = \(6, 7, 3\), got dtype float32"),
    (lambda p, i: (p, i[..., :2]), r"image must have shape \(H, W, 3\) = \(6, 7, 3\) .* got \(6, 7, 2\)"),
    (lambda p, i: (p, i[:5]), r"image must have shape \(H, W, 3\) = \(6, 7, 3\) to match probs \(3, 6, 7\), got \(5, 7, 3\)"),
    (lambda p, i: (p, i.tolist()), r"image must be a uint8 RGB array of shape \(H, W, 3\)"),
    (lambda p, i: (p[0], i), r"probs must be an array of shape \(C, H, W\), got shape \(6, 7\)"),
    (lambda p, i: (-p, i), r"probs must be non-negative .* got a minimum of -"),
    (lambda p, i: (2 * p, i), r"probs must sum to 1 over axis 0 \(shape \(C, H, W\) = \(3, 6, 7\)\); the largest deviation is 1"),
    (lambda p, i: ((p * 10).astype(np.int64), i), r"probs must be floating point .* got dtype int64"),
    (lambda p, i: (np.where(p > 0.5, np.nan, p), i), r"probs must be non-negative|probs must sum to 1"),
])
def test_bad_inputs_raise(change, message):
    probs, image = change(*_ok())
    with pytest.raises(ValueError, match=message):
        dense_crf(probs, image)


@pytest.mark.parametrize("kwargs, message", [
    (dict(iterations=-1), r"iterations must be an integer >= 0, got -1"),
    (dict(iterations=2.5), r"iterations must be an integer >= 0, got 2.5"),
    (dict(theta_alpha=0.0), r"theta_alpha must be a positive number, got 0.0"),
    (dict(theta_beta=-5), r"theta_beta must be a positive number, got -5"),
    (dict(theta_gamma=float("nan")), r"theta_gamma must be a positive number, got nan"),
    (dict(w_smooth=float("inf")), r"w_smooth must be a finite number, got inf"),
    (dict(method="mean-shift"), r"unknown method 'mean-shift'; expected one of 'lattice', 'exact'"),
])
def test_bad_parameters_raise(kwargs, message):
    probs, image = _ok()
    with pytest.raises(ValueError, match=message):
        dense_crf(probs, image, **kwargs)


def test_bad_inputs_on_a_device_backend():
    b = bk.get_backend("strict:device1")
    probs, image = _ok()
    with pytest.raises(ValueError, match="probs must sum to 1"):
        dense_crf(b.asarray(probs * 0.5), image)
    with pytest.raises(ValueError, match="got dtype int64"):
        dense_crf(b.asarray(probs), b.asarray(image.astype(np.int64)))
