"""Numerical gradient checking: is a hand-written backward pass the derivative of its forward?

Given a scalar probe L(inputs) = <dy, f(inputs)> with a random upstream gradient dy,
the analytic gradients from ``backward(dy)`` must match central differences

    dL/dx_i  ~  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)

computed in float64. Two modes:

* element-wise: every entry of every input is perturbed (tiny shapes only);
* random directions: for a random unit direction v, (L(x + eps v) - L(x - eps v)) / (2 eps)
  must equal sum_i <grad_i, v_i> (cheap on realistic shapes).

An entry passes when |numeric - analytic| <= atol + rtol * |numeric|.

    >>> from minifcn import functional as F, gradcheck
    >>> report = gradcheck.check_backward(F.relu, F.relu_backward, [x])  # x float64
    >>> report.ok, report.max_error
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .backend import RNG, namespace


@dataclasses.dataclass
class GradcheckReport:
    """Outcome of a check: per-input worst errors and where they occurred."""

    name: str
    ok: bool
    max_error: float            # worst |numeric - analytic| over all checked entries
    max_rel_error: float        # worst |numeric - analytic| / max(|numeric|, |analytic|, tiny)
    worst: str                  # which input / entry / direction produced max_error
    checked: int                # number of scalar comparisons made

    def __str__(self):
        status = "ok" if self.ok else "FAILED"
        return (f"{self.name}: {status}  max abs err {self.max_error:.2e}  max rel err "
                f"{self.max_rel_error:.2e}  ({self.checked} checks; worst at {self.worst})")


def _as_tuple(g):
    return tuple(g) if isinstance(g, (tuple, list)) else (g,)


def _dot(xp, a, b):
    return float(xp.sum(a * b))


def check_backward(forward, backward, inputs, *, wrt=None, eps=1e-6, atol=1e-6, rtol=1e-4,
                   directions=0, seed=0, name=None, dy=None):
    """Compare ``backward`` with central differences of ``forward``.

    forward(*inputs) -> (y, cache); backward(dy, cache) -> gradient or tuple of gradients,
    one per input (None where an input has no gradient). ``inputs`` must be float64
    arrays of one backend (integer or None inputs are passed through unchecked).
    ``wrt``: indices of the inputs to check (default: every float input whose gradient
    is not None). ``directions=0`` checks element-wise; ``directions=k > 0`` checks k random
    directions. ``dy``: the upstream gradient (default: random normal of y's shape).
    Returns a :class:`GradcheckReport`; it does not raise.
    """
    inputs = list(inputs)
    ref = next(a for a in inputs if a is not None and hasattr(a, "dtype"))
    xp = namespace(ref)
    for i, a in enumerate(inputs):
        if a is not None and hasattr(a, "dtype") and xp.isdtype(a.dtype, "real floating") \
                and a.dtype != xp.float64:
            raise ValueError(f"gradient checks run in float64; input {i} has dtype {a.dtype}")
    rng = RNG(seed)
    y, cache = forward(*inputs)
    if dy is None:
        dy = rng.normal(tuple(y.shape), like=y)
    grads = _as_tuple(backward(dy, cache))
    if wrt is None:
        wrt = [i for i, g in enumerate(grads) if g is not None and inputs[i] is not None]

    def probe(args):
        out, _ = forward(*args)
        return _dot(xp, dy, out)

    worst_err, worst_rel, worst_at = 0.0, 0.0, "-"
    ok, checked = True, 0

    def record(num, ana, where):
        nonlocal worst_err, worst_rel, worst_at, ok, checked
        err = abs(num - ana)
        checked += 1
        ok = ok and err <= atol + rtol * abs(num)
        worst_rel = max(worst_rel, err / max(abs(num), abs(ana), 1e-300))
        if err >= worst_err:
            worst_err, worst_at = err, where

    if directions == 0:
        for i in wrt:
            x = inputs[i]
            g = grads[i]
            flat_n = int(np.prod(x.shape))
            for j in range(flat_n):
                idx = np.unravel_index(j, x.shape)
                orig = float(x[idx])
                x[idx] = orig + eps
                lp = probe(inputs)
                x[idx] = orig - eps
                lm = probe(inputs)
                x[idx] = orig
                record((lp - lm) / (2 * eps), float(g[idx]), f"input {i} index {tuple(int(k) for k in idx)}")
    else:
        for k in range(directions):
            vs = {i: rng.normal(tuple(inputs[i].shape), like=inputs[i]) for i in wrt}
            norm = sum(_dot(xp, v, v) for v in vs.values()) ** 0.5
            vs = {i: v / norm for i, v in vs.items()}
            plus = [a + eps * vs[i] if i in vs else a for i, a in enumerate(inputs)]
            minus = [a - eps * vs[i] if i in vs else a for i, a in enumerate(inputs)]
            num = (probe(plus) - probe(minus)) / (2 * eps)
            ana = sum(_dot(xp, grads[i], vs[i]) for i in wrt)
            record(num, ana, f"direction {k}")
    label = name or getattr(getattr(forward, "func", forward), "__name__", "function")
    return GradcheckReport(label, ok, worst_err, worst_rel, worst_at, checked)


def check_layer(layer, x, *, eps=1e-6, atol=1e-6, rtol=1e-4, directions=0, seed=0, name=None,
                include_frozen=True, forward_kwargs=None):
    """Gradient-check a :class:`~minifcn.layers.Layer` or model w.r.t. its input and parameters.

    The layer must hold float64 parameters and be deterministic (call ``eval()`` or
    use dropout p=0). Frozen parameters are unfrozen for the check when
    ``include_frozen``; their flags are restored afterwards. ``forward_kwargs`` are
    extra keyword arguments passed to ``layer.forward``.
    """
    params = [p for _, p in layer.named_parameters() if include_frozen or not p.frozen]
    frozen = [p.frozen for p in params]
    kwargs = forward_kwargs or {}
    try:
        for p in params:
            p.frozen = False

        def forward(x_, *datas):
            saved = [p.data for p in params]
            for p, d in zip(params, datas):
                p.data = d
            try:
                y = layer.forward(x_, **kwargs)
            finally:
                for p, d in zip(params, saved):
                    p.data = d
            return y, None

        def backward(dy_, _cache):
            # re-run forward on the real parameters so the layer's caches are fresh
            layer.zero_grad()
            layer.forward(x, **kwargs)
            dx = layer.backward(dy_)
            return (dx, *[p.grad for p in params])

        datas = [p.data for p in params]
        return check_backward(forward, backward, [x, *datas], eps=eps, atol=atol, rtol=rtol,
                              directions=directions, seed=seed,
                              name=name or type(layer).__name__)
    finally:
        for p, f in zip(params, frozen):
            p.frozen = f
