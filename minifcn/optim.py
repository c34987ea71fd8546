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

from .backend import backend_of, namespace, to_backend
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
        for name, p in self.params:
            g = p.grad
            wd = self.weight_decay * p.decay_mult
            if wd:
                g = g + wd * p.data
            v = self.velocity.get(name)
            step = (-lr * p.lr_mult) * g
            v = step if v is None else self.momentum * v + step
            self.velocity[name] = v
            p.data = p.data + v

    def zero_grad(self):
        for _, p in self.params:
            p.grad = namespace(p.data).zeros_like(p.data)

    def state_dict(self):
        """``{name: momentum buffer}`` (arrays on the parameters' backend)."""
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
