"""The Interpolate layer (DeepLab's Interp): equals the functional op, gradient checks on every
backend, its self-description (category, coordinate map, flops, PyTorch twin), validation."""
import numpy as np
import pytest

from minifcn import functional as F
from minifcn.backend import to_numpy
from minifcn.gradcheck import check_layer
from minifcn.layers import Interpolate


@pytest.mark.parametrize("align_corners", [True, False])
def test_interpolate_layer_equals_the_functional_op(backend, align_corners):
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.standard_normal((2, 3, 5, 4)))
    layer = Interpolate(align_corners)
    y = layer(x, (9, 7))
    y_ref, cache = F.interpolate_bilinear(x, (9, 7), align_corners)
    np.testing.assert_array_equal(to_numpy(y), to_numpy(y_ref))
    dy = backend.asarray(rng.standard_normal((2, 3, 9, 7)))
    np.testing.assert_array_equal(to_numpy(layer.backward(dy)),
                                  to_numpy(F.interpolate_bilinear_backward(dy, cache)))
    assert layer._cache is None and layer.parameters() == []


@pytest.mark.parametrize("align_corners", [True, False])
def test_interpolate_layer_gradcheck(backend, align_corners):
    x = backend.asarray(np.random.default_rng(1).standard_normal((1, 2, 4, 3)))
    report = check_layer(Interpolate(align_corners), x, forward_kwargs={"size": (6, 5)})
    assert report.ok, str(report)


def test_interpolate_layer_describes_itself():
    layer = Interpolate()
    assert layer.category == "interpolation" and layer.align_corners is True
    with pytest.raises(TypeError, match="Interpolate has no fixed coordinate map"):
        layer.coord_map()
    # (2, 3, 4, 5) -> (2, 3, 16, 20): columns first costs 4*20*(5+16) = 1680 per plane,
    # rows first 16*5*(4+20) = 1920; two flops per multiply-add, forward and backward
    assert layer.flops((2, 3, 4, 5), (2, 3, 16, 20), need_dx=False) == 2 * 6 * 1680
    assert layer.flops((2, 3, 4, 5), (2, 3, 16, 20)) == 4 * 6 * 1680


@pytest.mark.parametrize("align_corners", [True, False])
def test_interpolate_layer_torch_twin(align_corners):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).standard_normal((1, 2, 6, 5))
    twin = Interpolate(align_corners).torch_module()
    ty = twin(torch.tensor(x), (11, 3)).numpy()
    np.testing.assert_allclose(Interpolate(align_corners)(x, (11, 3)), ty, rtol=1e-12, atol=1e-12)


def test_interpolate_layer_rejects_bad_arguments():
    for bad in (1, "true", None):
        with pytest.raises(ValueError, match=r"Interpolate align_corners must be a bool \(True or False\), "
                                             r"got " + repr(bad)):
            Interpolate(bad)
    with pytest.raises(ValueError, match=r"size must be a positive int or a pair .* got \(0, 4\)"):
        Interpolate()(np.zeros((1, 1, 3, 3)), (0, 4))
