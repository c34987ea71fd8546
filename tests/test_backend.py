"""backend.py: names, namespaces, host transfers, RNG and the native fast paths with
their portable fallbacks."""
import numpy as np
import pytest

from minifcn import backend as bk


def test_names_and_unknown_backend():
    assert bk.get_backend("numpy").name == "numpy"
    assert bk.get_backend(bk.get_backend("strict")).name == "strict"
    with pytest.raises(ValueError, match=r"unknown backend 'torch'; expected one of numpy, cupy, strict, strict:device1"):
        bk.get_backend("torch")


@pytest.mark.skipif(bk.cupy_available(), reason="a GPU is present")
def test_cupy_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CuPy is not installed or sees no GPU"):
        bk.get_backend("cupy")


def test_asarray_namespace_device_and_round_trip(backend):
    host = np.arange(6, dtype=np.float64).reshape(2, 3)
    a = backend.asarray(host)
    assert bk.namespace(a) is backend.xp or bk.namespace(a).__name__ == backend.xp.__name__
    assert bk.device(a) == backend.device
    assert bk.backend_of(a).name == backend.name
    np.testing.assert_array_equal(bk.to_numpy(a), host)
    f32 = backend.asarray(host, dtype="float32")
    assert f32.dtype == backend.xp.float32
    assert backend.asarray([1, 2, 3]).shape == (3,)
    assert bk.namespace(a, None) is bk.namespace(a)   # None entries are skipped


@pytest.mark.parametrize("target", ["numpy", "strict", "strict:device1"])
def test_to_backend_moves_between_backends(backend, target):
    host = np.random.default_rng(0).standard_normal((2, 3))
    a = bk.to_backend(backend.asarray(host), target)
    assert bk.backend_of(a).name == target
    np.testing.assert_array_equal(bk.to_numpy(a), host)
    same = backend.asarray(host)
    assert bk.to_backend(same, backend.name) is same     # no copy when already there


def test_device1_refuses_implicit_host_conversion():
    """The fake device behaves like CuPy: that is what makes it a useful test backend."""
    a = bk.get_backend("strict:device1").asarray(np.ones(3))
    with pytest.raises(RuntimeError):
        np.asarray(a)
    with pytest.raises(TypeError):
        a + np.ones(3)


def test_rng_is_reproducible_and_resumable(backend):
    like = backend.asarray(np.zeros(1))
    r1, r2 = bk.RNG(5), bk.RNG(5)
    np.testing.assert_array_equal(bk.to_numpy(r1.uniform((4, 5), like)), bk.to_numpy(r2.uniform((4, 5), like)))
    state = r1.state()
    a = bk.to_numpy(r1.normal((3,), like))
    r1.set_state(state)
    np.testing.assert_array_equal(bk.to_numpy(r1.normal((3,), like)), a)
    assert not np.array_equal(bk.to_numpy(bk.RNG(6).uniform((4, 5), like)), bk.to_numpy(bk.RNG(5).uniform((4, 5), like)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rng_distributions_dtype_and_device(backend, dtype):
    like = backend.asarray(np.zeros(1), dtype=dtype)
    u = bk.RNG(0).uniform((100_000,), like)
    z = bk.RNG(1).normal((100_000,), like, std=3.0)
    assert u.dtype == like.dtype == z.dtype and bk.device(u) == backend.device == bk.device(z)
    u, z = bk.to_numpy(u), bk.to_numpy(z)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005 and abs(z.mean()) < 0.05 and abs(z.std() - 3.0) < 0.05


def test_bincount_matches_numpy(backend):
    x = np.random.default_rng(0).integers(0, 7, 500)
    counts = bk.bincount(backend.asarray(x), minlength=9)
    np.testing.assert_array_equal(bk.to_numpy(counts), np.bincount(x, minlength=9))


def test_scatter_add_sums_repeated_indices(backend):
    rng = np.random.default_rng(1)
    index = np.array([0, 2, 2, 4, 0, 0])
    values = rng.standard_normal((6, 3))
    expected = np.ones((5, 3))
    for i, v in zip(index, values):
        expected[i] += v
    target = backend.asarray(np.ones((5, 3)))
    out = bk.scatter_add(target, backend.asarray(index), backend.asarray(values))
    assert out is target
    np.testing.assert_allclose(bk.to_numpy(target), expected, rtol=1e-15)


def test_as_strided_on_numpy_and_none_elsewhere(backend):
    x = backend.asarray(np.arange(10.0))
    view = bk.as_strided(x, (4, 3), (2, 1))    # overlapping windows of 3, every 2nd start
    if backend.name in ("numpy", "cupy"):
        np.testing.assert_array_equal(bk.to_numpy(view), [[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 7, 8]])
    else:
        assert view is None


def test_scalar_and_to_numpy_of_python_values():
    assert bk.scalar(np.float64(2.5)) == 2.5
    assert bk.to_numpy(None) is None
    assert bk.to_numpy(3.0).shape == ()
