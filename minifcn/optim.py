"""SGD with momentum and weight decay, per-parameter multipliers, and lr schedules.

For every trainable parameter w with gradient g (frozen ones are skipped), at
learning rate ``lr`` (from the schedule):

    lr_p = lr * p.lr_mult            wd_p = weight_decay * p.decay_mult
    v    = momentum * v - lr_p * (g + wd_p * w)
    w    = w + v

This is Caffe's SGD (the FCN reference's solver): the decay is added to the gradient
and the momentum buffer ``v`` holds the last step. Biases in minifcn's layers have
lr_mult 2 and decay_mult 0, as in the reference.
"""
from __future__ import annotations

import math

from .backend import backend_of, namespace, parallel_for, row_bands, to_backend
from .layers import Parameter


class SGD:
    """SGD with momentum (see the module docstring).

    params: an iterable of :class:`Parameter` or of ``(name, Parameter)`` pairs (e.g.
    ``model.named_parameters()``); names key the state dict (indices if unnamed).
    """

    def __init__(self, params, lr=0.01, momentum=0.9, weight_decay=5e-4):
        if lr < 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(f"need lr >= 0, 0 <= momentum < 1, weight_decay >= 0; got lr={lr}, "
                             f"momentum={momentum}, weight_decay={weight_decay}")
        named = []
        for i, item in enumerate(params):
            name, p = (str(i), item) if isinstance(item, Parameter) else item
            if not p.frozen:
                named.append((name, p))
        self.params = named
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.velocity = {}  # name -> array like p.data, created on first step

    def step(self, lr=None):
        """One update of every trainable parameter, at ``lr`` (default ``self.lr``)."""
        lr = self.lr if lr is None else lr
        tasks = []
        for name, p in self.params:
            v = self.velocity.get(name)
            if v is None:
                v = self.velocity[name] = namespace(p.data).zeros_like(p.data)
            rows = p.data.shape[0] if p.data.ndim else 1
            for r0, r1 in row_bands(rows, p.data.size // max(1, rows), p.data):
                tasks.append((p, v, self.momentum, lr * p.lr_mult, self.weight_decay * p.decay_mult, r0, r1))
        if tasks:
            parallel_for(_update, tasks, tasks[0][0].data)

    def zero_grad(self):
        for _, p in self.params:
            p.grad = namespace(p.data).zeros_like(p.data)

    def state_dict(self):
        """``{name: momentum buffer}`` (the buffers themselves, on the parameters' backend;
        later steps update them in place)."""
        return dict(self.velocity)

    def load_state_dict(self, state):
        """Restore momentum buffers, moved onto each parameter's backend and dtype."""
        params = dict(self.params)
        extra = sorted(set(state) - set(params))
        bad = [f"{k}: expected {params[k].shape}, got {tuple(state[k].shape)}"
               for k in state if k in params and tuple(state[k].shape) != params[k].shape]
        if extra or bad:
            raise ValueError("optimiser state does not fit the parameters: "
                             + "; ".join((["unexpected keys: " + ", ".join(extra)] if extra else []) + bad))
        self.velocity = {}
        for k, v in state.items():
            b = backend_of(params[k].data)
            self.velocity[k] = b.xp.astype(to_backend(v, b), params[k].data.dtype)
        return self


def _update(p, v, momentum, lr_p, wd, r0, r1):
    """Rows [r0, r1) of one parameter's update, in place: the momentum buffer v and the
    parameter are modified, not replaced. On NumPy the rows are a cache-sized band
    (:func:`minifcn.backend.row_bands`): the scaled terms stay in cache and the bands
    run on all cores."""
    rows = (slice(r0, r1), ...) if p.data.ndim else ...         # views, written through
    w, vb = p.data[rows], v[rows]
    vb *= momentum
    vb -= lr_p * p.grad[rows]
    if wd:
        vb -= (lr_p * wd) * w
    w += vb


# ----------------------------------------------------------------------------
# Learning-rate schedules: iteration (0-based) -> learning rate
# ----------------------------------------------------------------------------
class Schedule:
    """``lr(it)`` for ``it`` in [0, max_iter): a policy times a linear warm-up.

    policy "constant": base_lr;  "poly": base_lr * (1 - it / max_iter) ** power.
    During the first ``warmup`` iterations the rate is scaled by (it + 1) / warmup.
    """

    def __init__(self, base_lr, max_iter, policy="poly", power=0.9, warmup=0):
        if policy not in ("constant", "poly"):
            raise ValueError(f"unknown lr policy {policy!r}; expected 'constant' or 'poly'")
        if max_iter < 1 or warmup < 0:
            raise ValueError(f"need max_iter >= 1 and warmup >= 0, got {max_iter} and {warmup}")
        self.base_lr, self.max_iter, self.policy = base_lr, max_iter, policy
        self.power, self.warmup = power, warmup

    def __call__(self, it):
        lr = self.base_lr
        if self.policy == "poly":
            lr *= max(0.0, 1.0 - it / self.max_iter) ** self.power
        if it < self.warmup:
            lr *= (it + 1) / self.warmup
        return lr


def constant(base_lr, max_iter=math.inf, warmup=0):
    return Schedule(base_lr, 1 if max_iter == math.inf else max_iter, "constant", warmup=warmup)


def poly(base_lr, max_iter, power=0.9, warmup=0):
    return Schedule(base_lr, max_iter, "poly", power=power, warmup=warmup)
