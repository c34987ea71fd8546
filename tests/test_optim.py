"""SGD update equations checked by hand on tiny arrays, on every backend; lr schedules."""
import numpy as np
import pytest

from minifcn.backend import to_numpy
from minifcn.layers import Parameter
from minifcn.optim import SGD, Schedule, constant, poly


def _param(backend, values, **kw):
    p = Parameter(backend.asarray(np.array(values, dtype=np.float64)), **kw)
    return p


def test_sgd_matches_hand_computed_steps(backend):
    w = _param(backend, [1.0, -2.0])
    b = _param(backend, [0.5], lr_mult=2.0, decay_mult=0.0)
    frozen = _param(backend, [3.0], frozen=True)
    opt = SGD([("w", w), ("b", b), ("f", frozen)], lr=0.1, momentum=0.9, weight_decay=0.01)
    grads = [([0.2, 0.4], [1.0]), ([-0.1, 0.3], [0.5])]
    for gw, gb in grads:
        w.grad = backend.asarray(np.array(gw))
        b.grad = backend.asarray(np.array(gb))
        frozen.grad = backend.asarray(np.array([100.0]))
        opt.step()
    # by hand: v1 = -lr*(g1 + wd*w0); w1 = w0 + v1; v2 = 0.9*v1 - lr*(g2 + wd*w1); w2 = w1 + v2
    # w[0]: v1 = -0.1*(0.2 + 0.01) = -0.021, w1 = 0.979; v2 = -0.0189 - 0.1*(-0.1 + 0.00979) = -0.009879
    # w[1]: v1 = -0.1*(0.4 - 0.02) = -0.038, w1 = -2.038; v2 = -0.0342 - 0.1*(0.3 - 0.02038) = -0.062162
    # b (lr 0.2, no decay): v1 = -0.2, b1 = 0.3; v2 = -0.18 - 0.1 = -0.28, b2 = 0.02
    np.testing.assert_allclose(to_numpy(w.data), [0.979 - 0.009879, -2.038 - 0.062162], rtol=0, atol=1e-12)
    np.testing.assert_allclose(to_numpy(b.data), [0.02], rtol=0, atol=1e-12)
    assert to_numpy(frozen.data).tolist() == [3.0]
    assert set(opt.state_dict()) == {"w", "b"}
    np.testing.assert_allclose(to_numpy(opt.state_dict()["b"]), [-0.28], atol=1e-12)


def test_state_dict_round_trip_continues_identically(backend):
    def run(split):
        p = _param(backend, [1.0, 2.0, 3.0])
        opt = SGD([p], lr=0.05, momentum=0.99, weight_decay=5e-4)
        for it in range(6):
            if it == split:
                state = {k: to_numpy(v) for k, v in opt.state_dict().items()}
                data = to_numpy(p.data)
                p = _param(backend, data)
                opt = SGD([p], lr=0.05, momentum=0.99, weight_decay=5e-4).load_state_dict(state)
            p.grad = backend.asarray(np.array([0.1, -0.2, 0.3]) * (it + 1))
            opt.step()
        return to_numpy(p.data)
    assert np.array_equal(run(None), run(3))


def test_zero_grad_and_bad_state():
    p = Parameter(np.ones(2))
    p.grad = np.array([np.nan, 1.0])
    opt = SGD([("p", p)], lr=0.1)
    opt.zero_grad()
    assert p.grad.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="unexpected keys: q"):
        opt.load_state_dict({"q": np.zeros(2)})
    with pytest.raises(ValueError, match=r"expected \(2,\), got \(3,\)"):
        opt.load_state_dict({"p": np.zeros(3)})
    with pytest.raises(ValueError, match="momentum"):
        SGD([p], lr=0.1, momentum=1.0)


def test_schedules():
    s = poly(0.02, max_iter=100, power=0.9, warmup=10)
    assert s(0) == pytest.approx(0.02 * 0.1 * (1 - 0 / 100) ** 0.9)
    assert s(9) == pytest.approx(0.02 * (1 - 9 / 100) ** 0.9)
    assert s(50) == pytest.approx(0.02 * 0.5 ** 0.9)
    assert s(100) == 0.0
    c = constant(1e-10)
    assert c(0) == c(10 ** 6) == 1e-10
    assert constant(0.1, 20, warmup=4)(1) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="policy"):
        Schedule(0.1, 10, policy="step")
