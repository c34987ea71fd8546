"""Parameters and layers: state (weights, gradients, caches) around the functional ops.

``layer.forward(x)`` (also ``layer(x)``) caches what backward needs;
``layer.backward(dy)`` returns dx and ADDS the parameter gradients into ``p.grad``,
so gradients accumulate across passes until ``zero_grad()``.
"""
from __future__ import annotations

from . import functional as F
from . import init as initializers
from .backend import RNG, backend_of, get_backend, namespace, to_backend
from .functional.im2col import pair


class Parameter:
    """A trainable array ``data`` with its gradient ``grad`` (same shape, starts at zero).

    ``frozen`` parameters get no gradient and are skipped by the optimiser.
    ``lr_mult`` / ``decay_mult`` scale the learning rate and weight decay for this
    parameter (the FCN reference trains biases at 2x lr without decay).
    """

    def __init__(self, data, frozen=False, lr_mult=1.0, decay_mult=1.0):
        self.data = data
        self.grad = namespace(data).zeros_like(data)
        self.frozen = frozen
        self.lr_mult = lr_mult
        self.decay_mult = decay_mult

    @property
    def shape(self):
        return tuple(self.data.shape)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.data.dtype}, frozen={self.frozen})"


class Layer:
    """Base class: registers sub-layers and parameters in assignment order.

    Provides ``named_parameters``, ``state_dict``/``load_state_dict``, ``zero_grad``,
    ``train``/``eval`` and ``to`` for every layer and model.
    """

    training = True

    def __setattr__(self, name, value):
        members = self.__dict__.setdefault("_members", {})
        if isinstance(value, (Layer, Parameter)):
            members[name] = value
        else:
            members.pop(name, None)     # e.g. ``layer.bias = None`` drops the old parameter
        super().__setattr__(name, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x):  # pragma: no cover - interface
        raise NotImplementedError

    def backward(self, dy):  # pragma: no cover - interface
        raise NotImplementedError

    def children(self):
        return [(k, v) for k, v in self.__dict__.get("_members", {}).items() if isinstance(v, Layer)]

    def named_parameters(self, prefix=""):
        """Yield ``(name, Parameter)`` in a stable order (assignment order, depth first)."""
        for name, member in self.__dict__.get("_members", {}).items():
            full = prefix + name
            if isinstance(member, Parameter):
                yield full, member
            else:
                yield from member.named_parameters(full + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def state_dict(self):
        """``{name: array}`` of every parameter (the arrays themselves, not copies)."""
        return {name: p.data for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy arrays from ``state`` into the parameters, onto their backend and dtype.

        Raises ValueError naming every missing, unexpected and mis-shaped entry.
        """
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state]
        extra = [k for k in state if k not in params]
        shapes = [f"{k}: expected {params[k].shape}, got {tuple(state[k].shape)}"
                  for k in params if k in state and tuple(state[k].shape) != params[k].shape]
        if missing or extra or shapes:
            parts = []
            if missing:
                parts.append("missing keys: " + ", ".join(missing))
            if extra:
                parts.append("unexpected keys: " + ", ".join(extra))
            if shapes:
                parts.append("shape mismatches: " + "; ".join(shapes))
            raise ValueError(f"state dict does not fit {type(self).__name__}: " + " | ".join(parts))
        for name, p in params.items():
            b = backend_of(p.data)
            p.data = b.xp.astype(to_backend(state[name], b), p.data.dtype)
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.grad = namespace(p.data).zeros_like(p.data)

    def train(self, mode=True):
        """Training mode (dropout active) for this layer and all sub-layers."""
        self.training = mode
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, backend=None, dtype=None):
        """Move every parameter to ``backend`` and/or cast it to ``dtype``; gradients restart at zero.

        ``dtype`` is a name ("float32"), a NumPy dtype, or a dtype of the target namespace.
        """
        for p in self.parameters():
            b = get_backend(backend) if backend is not None else backend_of(p.data)
            data = to_backend(p.data, b)
            if dtype is not None:
                data = b.xp.astype(data, b.dtype(dtype))
            p.data = data
            p.grad = b.xp.zeros_like(data)
        return self


class Conv2d(Layer):
    """2-D convolution, weight (C_out, C_in, KH, KW), optional bias (C_out,).

    ``init`` is "he" (He-normal weights) or "zeros"; biases start at zero and train at
    2x lr without weight decay, as in the FCN reference.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, init="he", rng=None):
        kh, kw = pair(kernel_size, "kernel_size")
        shape = (out_channels, in_channels, kh, kw)
        if init == "he":
            w = initializers.he_normal(shape, rng)
        elif init == "zeros":
            w = initializers.zeros(shape)
        else:
            raise ValueError(f"unknown init {init!r}; expected 'he' or 'zeros'")
        self.weight = Parameter(w)
        self.bias = Parameter(initializers.zeros((out_channels,)), lr_mult=2.0, decay_mult=0.0) if bias else None
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self._cache = None

    def forward(self, x):
        b = self.bias.data if self.bias is not None else None
        y, self._cache = F.conv2d(x, self.weight.data, b, self.stride, self.padding, self.dilation)
        return y

    def backward(self, dy, need_dx=True):
        """``need_dx=False`` skips the input gradient (a network's first layer) and returns None."""
        dx, dw, db = F.conv2d_backward(dy, self._cache, need_dx=need_dx, need_dweight=not self.weight.frozen)
        _accumulate(self.weight, dw)
        if self.bias is not None:
            _accumulate(self.bias, db)
        self._cache = None
        return dx


class ConvTranspose2d(Layer):
    """Transposed convolution, weight (C_in, C_out, KH, KW); FCN uses it without bias,
    initialised bilinear (``init="bilinear"``) and frozen by default."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=False,
                 init="bilinear", frozen=True, rng=None):
        kh, kw = pair(kernel_size, "kernel_size")
        if init == "bilinear":
            if kh != kw:
                raise ValueError(f"bilinear init needs a square kernel, got {kernel_size!r}")
            w = initializers.bilinear_kernel(in_channels, out_channels, kh)
        elif init == "he":
            w = initializers.he_normal((in_channels, out_channels, kh, kw), rng, fan_in=in_channels * kh * kw)
        elif init == "zeros":
            w = initializers.zeros((in_channels, out_channels, kh, kw))
        else:
            raise ValueError(f"unknown init {init!r}; expected 'bilinear', 'he' or 'zeros'")
        self.weight = Parameter(w, frozen=frozen)
        self.bias = Parameter(initializers.zeros((out_channels,)), lr_mult=2.0, decay_mult=0.0) if bias else None
        self.stride, self.padding = stride, padding
        self._cache = None

    def forward(self, x):
        b = self.bias.data if self.bias is not None else None
        y, self._cache = F.conv_transpose2d(x, self.weight.data, b, self.stride, self.padding)
        return y

    def backward(self, dy):
        dx, dw, db = F.conv_transpose2d_backward(dy, self._cache, need_dweight=not self.weight.frozen)
        _accumulate(self.weight, dw)
        if self.bias is not None:
            _accumulate(self.bias, db)
        self._cache = None
        return dx


class MaxPool2d(Layer):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        self.kernel_size, self.stride, self.padding, self.ceil_mode = kernel_size, stride, padding, ceil_mode
        self._cache = None

    def forward(self, x):
        y, self._cache = F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode)
        return y

    def backward(self, dy):
        dx = F.max_pool2d_backward(dy, self._cache)
        self._cache = None
        return dx


class ReLU(Layer):
    def __init__(self):
        self._cache = None

    def forward(self, x):
        y, self._cache = F.relu(x)
        return y

    def backward(self, dy):
        dx = F.relu_backward(dy, self._cache)
        self._cache = None
        return dx


class Dropout(Layer):
    """Caffe-style dropout; the identity in eval mode. ``rng`` is a :class:`~minifcn.backend.RNG`."""

    def __init__(self, p=0.5, rng=None):
        self.p = p
        self.rng = rng if rng is not None else RNG(None)
        self._cache = None

    def forward(self, x):
        y, self._cache = F.dropout(x, self.p, self.training, self.rng)
        return y

    def backward(self, dy):
        dx = F.dropout_backward(dy, self._cache)
        self._cache = None
        return dx


class Crop(Layer):
    """Crop to a reference size at a fixed ``offset`` = (oy, ox): ``forward(x, size)``."""

    def __init__(self, offset):
        self.offset = offset
        self._cache = None

    def forward(self, x, size):
        y, self._cache = F.crop(x, self.offset, size)
        return y

    def backward(self, dy):
        dx = F.crop_backward(dy, self._cache)
        self._cache = None
        return dx


def _accumulate(param, grad):
    """``param.grad += grad`` unless the parameter is frozen."""
    if not param.frozen:
        param.grad += grad
