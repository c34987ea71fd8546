"""minifcn.backend: names, namespaces, host transfers, RNG, the native fast paths with
their portable fallbacks, and the package's re-exports and settings."""
import numpy as np
import pytest

import minifcn.backend.frame
import minifcn.backend.threads
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


def test_as_strided_on_numpy_and_none_elsewhere(backend):
    x = backend.asarray(np.arange(10.0))
    view = bk.as_strided(x, (4, 3), (2, 1))    # overlapping windows of 3, every 2nd start
    if backend.name in ("numpy", "cupy"):
        np.testing.assert_array_equal(bk.to_numpy(view), [[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 7, 8]])
    else:
        assert view is None


def test_to_numpy_of_python_values():
    assert bk.to_numpy(None) is None
    assert bk.to_numpy(3.0).shape == ()


def test_package_reexports_every_public_name_from_its_module():
    homes = {"arrays": ["BACKEND_NAMES", "namespace", "device", "is_numpy", "is_cupy", "cupy_available",
                        "Backend", "get_backend", "backend_of", "to_numpy", "to_backend"],
             "rng": ["RNG"], "native": ["bincount", "matmul", "element_strides", "as_strided"],
             "threads": ["blas_info", "threads_for", "parallel_for", "row_bands", "by_channels"],
             "buffers": ["scratch"], "frame": ["constant_frame"]}
    for module, names in homes.items():
        home = getattr(bk, module)
        for name in names:
            assert getattr(bk, name) is getattr(home, name), (module, name)
            assert name in bk.__all__
    assert not hasattr(bk, "scatter_add") and not hasattr(bk, "scalar")


def test_settings_set_through_the_package_reach_the_module_that_reads_them(monkeypatch):
    like = np.zeros(1)
    threads, frame = minifcn.backend.threads, minifcn.backend.frame
    default = bk.row_bands(23, 30, like)
    with monkeypatch.context() as m:
        m.setattr(bk, "BAND_ELEMENTS", 90)
        assert threads.BAND_ELEMENTS == bk.BAND_ELEMENTS == 90
        assert bk.row_bands(23, 30, like) == [(r, min(r + 3, 23)) for r in range(0, 23, 3)]
        m.setattr(bk, "THREADS", 3)
        assert bk.threads_for(like) == 3
        m.setattr(bk, "FRAME_MIN_PIXELS", 10**9)
        assert frame.FRAME_MIN_PIXELS == 10**9
        x = np.zeros((1, 1, 40, 40))
        x[:, :, 10:20, 10:20] = 1.0
        assert bk.constant_frame(x) is None          # now "too small to inspect"
    assert threads.BAND_ELEMENTS is None and threads.THREADS is None    # undone in the module too
    assert bk.row_bands(23, 30, like) == default
    assert bk.constant_frame(x) == ((10, 20, 10, 20), (0, 0))
    monkeypatch.setattr(threads, "CPU_BAND_ELEMENTS", 60)   # and set in the module, read via the package
    assert bk.CPU_BAND_ELEMENTS == 60 and bk.row_bands(4, 30, like) == [(0, 2), (2, 4)]
    from minifcn.backend import DEVICE_BAND_ELEMENTS
    assert DEVICE_BAND_ELEMENTS == threads.DEVICE_BAND_ELEMENTS


def test_matmul_writes_into_out_on_numpy_and_returns_fresh_elsewhere(backend):
    a, b = np.arange(6.0).reshape(2, 3), np.arange(12.0).reshape(3, 4)
    out = backend.asarray(np.zeros((2, 4)))
    y = bk.matmul(backend.asarray(a), backend.asarray(b), out=out)
    np.testing.assert_array_equal(bk.to_numpy(y), a @ b)
    assert (y is out) == (backend.name == "numpy")
    strides = bk.element_strides(backend.asarray(np.zeros((2, 3, 4))))
    assert strides == ((12, 4, 1) if backend.name in ("numpy", "cupy") else None)


def test_scatter_add_rows_sums_repeats_natively_and_portably(backend):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((3, 7))
    index = rng.integers(0, 5, (3, 7))                        # repeats within a row
    expected = np.zeros((3, 5))
    for p in range(3):
        for k in range(7):
            expected[p, index[p, k]] += values[p, k]
    v, i = backend.asarray(values), backend.asarray(index, dtype="int64")
    np.testing.assert_allclose(bk.to_numpy(bk.scatter_add_rows(v, i, 5)), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bk.to_numpy(bk.scatter_add_rows_portable(v, i, 5)), expected, rtol=1e-12, atol=1e-12)
