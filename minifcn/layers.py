"""Parameters, buffers and layers: state (weights, statistics, caches) around the functional ops.

``layer.forward(x)`` (also ``layer(x)``) caches what backward needs;
``layer.backward(dy)`` returns dx and ADDS the parameter gradients into ``p.grad``,
so gradients accumulate across passes until ``zero_grad()``.

Every layer also describes itself, so code that aligns, times or mirrors a network
asks the layer instead of switching on its class:

* ``layer.coord_map()`` -> :class:`~minifcn.coordmap.CoordMap`: where its output
  pixels sit in its input (scale, shift, window radius), from its kernel, stride,
  padding and dilation (used by :mod:`minifcn.models.geometry` for the crop offsets
  and the receptive field);
* ``layer.category``: its row in ``minifcn bench``'s breakdown ("conv3x3",
  "conv1x1/fc", "transposed conv", "pooling", "elementwise"); None for containers,
  whose time is their children's;
* ``layer.flops(x_shape, y_shape, need_dx)``: floating-point operations of one
  forward and backward pass (0 for the cheap element-wise layers);
* ``layer.torch_module()``: the same layer in PyTorch, with the weights copied
  (``minifcn bench --compare torch``; torch is imported only there).

A new layer class overrides what applies to it; the base class raises a TypeError
naming the class for ``coord_map`` and ``torch_module``.
"""
from __future__ import annotations

from . import functional as F
from . import init as initializers
from .backend import RNG, backend_of, get_backend, namespace, to_backend, to_numpy
from .coordmap import IDENTITY, CoordMap
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


class Buffer:
    """A non-trainable array ``data`` that belongs to a layer's state (e.g. BatchNorm's
    running mean and variance).

    Buffers are saved by ``state_dict()`` / checkpoints, restored by
    ``load_state_dict()`` and moved by ``to()`` like parameters, but they have no
    gradient and ``named_parameters()`` never yields them, so the optimiser (SGD,
    weight decay) never touches them. The layer updates ``buffer.data`` itself.
    """

    def __init__(self, data):
        self.data = data

    @property
    def shape(self):
        return tuple(self.data.shape)

    def __repr__(self):
        return f"Buffer(shape={self.shape}, dtype={self.data.dtype})"


class Layer:
    """Base class: registers sub-layers, parameters and buffers in assignment order.

    Provides ``named_parameters``, ``named_buffers``, ``state_dict``/``load_state_dict``,
    ``zero_grad``, ``train``/``eval`` and ``to`` for every layer and model, and the
    self-description hooks listed in the module docstring.

    Members are registered by plain assignment (``self.conv = Conv2d(...)``,
    ``self.weight = Parameter(...)``, ``self.running_mean = Buffer(...)``, or
    :meth:`register_buffer`) and named ``attribute.sub.name``. A sub-layer registered
    with :meth:`register_inline` lends its members to this layer instead: they are
    named and reached as this layer's own (how a model holds its trunk without a
    ``trunk.`` prefix in its parameter names).
    """

    training = True
    category = None      # bench's layer type; None: a container (time counted in its children)

    def __setattr__(self, name, value):
        members = self.__dict__.setdefault("_members", {})
        if isinstance(value, (Layer, Parameter, Buffer)):
            owner = self._inline_owner(name)
            if owner is not None:
                raise ValueError(f"{type(self).__name__}.{name} is already a member of its inline "
                                 f"sub-layer {owner!r}; assign it there or choose another name")
            members[name] = value
        else:
            members.pop(name, None)     # e.g. ``layer.bias = None`` drops the old parameter
            self.__dict__.get("_inline", {}).pop(name, None)
        super().__setattr__(name, value)

    def __getattr__(self, name):
        # Only reached when normal lookup fails: members of inline sub-layers.
        d = self.__dict__
        for inner in d.get("_inline", ()):
            layer = d["_members"][inner]
            if name in layer.__dict__.get("_members", {}) or layer._inline_owner(name) is not None:
                return getattr(layer, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _inline_owner(self, name):
        """Name of the inline sub-layer that holds member ``name`` (or None)."""
        d = self.__dict__
        for inner in d.get("_inline", ()):
            layer = d["_members"][inner]
            if name in layer.__dict__.get("_members", {}) or layer._inline_owner(name) is not None:
                return inner
        return None

    def register_buffer(self, name, data) -> Buffer:
        """Register array ``data`` as the :class:`Buffer` ``self.<name>`` and return it."""
        buf = Buffer(data)
        setattr(self, name, buf)
        return buf

    def register_inline(self, name, layer):
        """Hold ``layer`` as ``self.<name>``, its members named and reached as this layer's own.

        ``model.register_inline("backbone", trunk)`` gives parameters ``conv1_1.weight``
        (not ``backbone.conv1_1.weight``) and ``model.conv1_1 is trunk.conv1_1``;
        ``train``/``eval``/``to``/``state_dict`` reach it like any sub-layer.
        Raises ValueError when a member name would be taken twice.
        """
        if not isinstance(layer, Layer):
            raise TypeError(f"register_inline needs a Layer, got {type(layer).__name__}")
        members = self.__dict__.get("_members", {})
        if name in members:
            raise ValueError(f"{type(self).__name__}.{name} is already a member; inline under another name")
        ours = {n for n, _ in self._named_members("", (Layer, Parameter, Buffer), top=True)}
        theirs = {n for n, _ in layer._named_members("", (Layer, Parameter, Buffer), top=True)}
        clash = sorted(ours & theirs)
        if clash:
            raise ValueError(f"cannot inline {type(layer).__name__} as {name!r} in {type(self).__name__}: "
                             f"names taken twice: {', '.join(clash)}")
        setattr(self, name, layer)
        self.__dict__.setdefault("_inline", {})[name] = None      # an ordered set
        return layer

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x):  # pragma: no cover - interface
        raise NotImplementedError

    def backward(self, dy):  # pragma: no cover - interface
        raise NotImplementedError

    # --- self-description ---------------------------------------------------------------
    def coord_map(self) -> CoordMap:
        """Where this layer's output pixels sit in its input (see :mod:`minifcn.coordmap`).

        Spatial layers override this; the base class has no map and says so."""
        raise TypeError(f"no coordinate map for layer {type(self).__name__}: give the class a "
                        f"coord_map() method returning a minifcn.coordmap.CoordMap")

    def flops(self, x_shape, y_shape, need_dx=True) -> int:
        """Floating-point operations (2 per multiply-add) of one forward and backward pass
        with input shape ``x_shape`` and output shape ``y_shape``; 0 unless overridden."""
        return 0

    def torch_module(self):
        """This layer as a ``torch.nn.Module`` with the same hyper-parameters and weights."""
        raise TypeError(f"no PyTorch twin for layer {type(self).__name__}: give the class a "
                        f"torch_module() method")

    # --- the registry -------------------------------------------------------------------
    def children(self):
        return [(k, v) for k, v in self.__dict__.get("_members", {}).items() if isinstance(v, Layer)]

    def _named_members(self, prefix, kinds, top=False):
        """``(name, member)`` of the given kinds, in assignment order, depth first; inline
        sub-layers add no prefix. ``top``: only this layer's own level (inline ones flattened)."""
        inline = self.__dict__.get("_inline", ())
        for name, member in self.__dict__.get("_members", {}).items():
            if name in inline:
                yield from member._named_members(prefix, kinds, top)
                continue
            full = prefix + name
            if isinstance(member, kinds):
                yield full, member
            if isinstance(member, Layer) and not top:
                yield from member._named_members(full + ".", kinds)

    def named_parameters(self, prefix=""):
        """Yield ``(name, Parameter)`` in a stable order (assignment order, depth first)."""
        yield from self._named_members(prefix, Parameter)

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        """Yield ``(name, Buffer)`` in a stable order (assignment order, depth first)."""
        yield from self._named_members(prefix, Buffer)

    def buffers(self):
        return [b for _, b in self.named_buffers()]

    def _state_members(self):
        return list(self._named_members("", (Parameter, Buffer)))

    def state_dict(self):
        """``{name: array}`` of every parameter and buffer, in registration order (the
        arrays themselves, not copies)."""
        return {name: m.data for name, m in self._state_members()}

    def load_state_dict(self, state):
        """Copy arrays from ``state`` into the parameters and buffers, onto their backend and dtype.

        Raises ValueError naming every missing, unexpected and mis-shaped entry (and
        changes nothing then).
        """
        members = dict(self._state_members())
        missing = [k for k in members if k not in state]
        extra = [k for k in state if k not in members]
        shapes = [f"{k}: expected {members[k].shape}, got {tuple(state[k].shape)}"
                  for k in members if k in state and tuple(state[k].shape) != members[k].shape]
        if missing or extra or shapes:
            parts = []
            if missing:
                parts.append("missing keys: " + ", ".join(missing))
            if extra:
                parts.append("unexpected keys: " + ", ".join(extra))
            if shapes:
                parts.append("shape mismatches: " + "; ".join(shapes))
            raise ValueError(f"state dict does not fit {type(self).__name__}: " + " | ".join(parts))
        for name, m in members.items():
            b = backend_of(m.data)
            m.data = b.xp.astype(to_backend(state[name], b), m.data.dtype)
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
        """Move every parameter and buffer to ``backend`` and/or cast it to ``dtype``;
        gradients restart at zero. Buffers that are not floating point (counters) keep
        their dtype.

        ``dtype`` is a name ("float32"), a NumPy dtype, or a dtype of the target namespace.
        """
        for _, m in self._state_members():
            b = get_backend(backend) if backend is not None else backend_of(m.data)
            data = to_backend(m.data, b)
            if dtype is not None and (isinstance(m, Parameter) or b.xp.isdtype(data.dtype, "real floating")):
                data = b.xp.astype(data, b.dtype(dtype))
            m.data = data
            if isinstance(m, Parameter):
                m.grad = b.xp.zeros_like(data)
        return self


def _copy_into_torch(module, layer, parts=("weight", "bias")):
    """Copy ``layer``'s parameters into ``module``'s (same names), keeping ``frozen``; the
    module takes the parameters' dtype (a float64 layer's twin is float64, unrounded)."""
    import torch

    with torch.no_grad():
        for part in parts:
            p = getattr(layer, part, None)
            if p is not None:
                value = torch.tensor(to_numpy(p.data))
                module.to(dtype=value.dtype)
                getattr(module, part).copy_(value)
                getattr(module, part).requires_grad_(not p.frozen)
    return module


def _conv_flops(macs, weight, need_dx):
    """2 * macs per pass: forward, input gradient (``need_dx``), weight gradient (unfrozen)."""
    return 2 * macs * (1 + bool(need_dx) + (not weight.frozen))


class Conv2d(Layer):
    """2-D convolution, weight (C_out, C_in, KH, KW), optional bias (C_out,).

    ``init`` is "he" (He-normal weights) or "zeros"; biases start at zero and train at
    2x lr without weight decay, as in the FCN reference. Coordinate map: a window of
    K' = D (K - 1) + 1 at stride S, padding P.
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

    @property
    def category(self):
        return "conv3x3" if tuple(self.weight.shape[2:]) == (3, 3) else "conv1x1/fc"

    def coord_map(self):
        return CoordMap.window(self.weight.shape[2:], self.stride, self.padding, self.dilation)

    def flops(self, x_shape, y_shape, need_dx=True):
        """Each pass is N*OH*OW * C_out*C_in*KH*KW multiply-adds."""
        c_out, c_in, kh, kw = self.weight.shape
        return _conv_flops(y_shape[0] * y_shape[2] * y_shape[3] * c_out * c_in * kh * kw, self.weight, need_dx)

    def torch_module(self):
        from torch import nn

        w = self.weight.shape
        return _copy_into_torch(nn.Conv2d(w[1], w[0], w[2:], self.stride, self.padding, self.dilation,
                                          bias=self.bias is not None), self)

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
    initialised bilinear (``init="bilinear"``) and frozen by default. Coordinate map:
    the inverse of a convolution's with the same kernel, stride and padding."""

    category = "transposed conv"

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

    def coord_map(self):
        return CoordMap.transposed_window(self.weight.shape[2:], self.stride, self.padding)

    def flops(self, x_shape, y_shape, need_dx=True):
        """Each pass is N*H*W * C_in*C_out*KH*KW multiply-adds (H, W: the input's)."""
        c_in, c_out, kh, kw = self.weight.shape
        return _conv_flops(x_shape[0] * x_shape[2] * x_shape[3] * c_out * c_in * kh * kw, self.weight, need_dx)

    def torch_module(self):
        from torch import nn

        w = self.weight.shape
        return _copy_into_torch(nn.ConvTranspose2d(w[0], w[1], w[2:], self.stride, self.padding,
                                                   bias=self.bias is not None), self)

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
    """Max pooling over K x K windows at stride S (default K), padding P, optionally in
    ceil mode (see :func:`minifcn.functional.max_pool2d`). Coordinate map: a window
    like a convolution's.

    ``return_indices=True`` (SegNet) also keeps where each maximum was: after
    ``forward(x)`` (which still returns y only, so a trunk's ``x = layer(x)`` loop
    needs no change) ``self.indices`` holds the int64 flat positions (N, C, OH, OW)
    of :func:`minifcn.functional.max_pool2d_with_indices` and ``self.input_size``
    the pooled input's (H, W), which a :class:`MaxUnpool2d` puts values back to.
    """

    category = "pooling"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, return_indices=False):
        self.kernel_size, self.stride, self.padding, self.ceil_mode = kernel_size, stride, padding, ceil_mode
        self.return_indices = return_indices
        self.indices = self.input_size = None      # set by forward when return_indices
        self._cache = None

    def coord_map(self):
        stride = self.stride if self.stride is not None else self.kernel_size
        return CoordMap.window(self.kernel_size, stride, self.padding)

    def torch_module(self):
        from torch import nn

        return nn.MaxPool2d(self.kernel_size, self.stride, self.padding, ceil_mode=self.ceil_mode,
                            return_indices=self.return_indices)

    def forward(self, x):
        if self.return_indices:
            y, self.indices, self._cache = F.max_pool2d_with_indices(x, self.kernel_size, self.stride,
                                                                     self.padding, self.ceil_mode)
            self.input_size = tuple(x.shape[2:])
            return y
        y, self._cache = F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode)
        return y

    def backward(self, dy):
        dx = F.max_pool2d_backward(dy, self._cache)
        self._cache = None
        return dx


class ReLU(Layer):
    category = "elementwise"

    def __init__(self):
        self._cache = None

    def coord_map(self):
        return IDENTITY

    def torch_module(self):
        from torch import nn

        return nn.ReLU()

    def forward(self, x):
        y, self._cache = F.relu(x)
        return y

    def backward(self, dy):
        dx = F.relu_backward(dy, self._cache)
        self._cache = None
        return dx


class Dropout(Layer):
    """Caffe-style dropout; the identity in eval mode. ``rng`` is a :class:`~minifcn.backend.RNG`."""

    category = "elementwise"

    def __init__(self, p=0.5, rng=None):
        if not (isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= p < 1.0):
            raise ValueError(f"dropout probability p must be in [0, 1), got {p!r}")
        self.p = p
        self.rng = rng if rng is not None else RNG(None)
        self._cache = None

    def coord_map(self):
        return IDENTITY

    def torch_module(self):
        from torch import nn

        return nn.Dropout(self.p)

    def forward(self, x):
        y, self._cache = F.dropout(x, self.p, self.training, self.rng)
        return y

    def backward(self, dy):
        dx = F.dropout_backward(dy, self._cache)
        self._cache = None
        return dx


class Crop(Layer):
    """Crop to a reference size at a fixed ``offset`` = (oy, ox): ``forward(x, size)``.
    Coordinate map: a shift by the offset."""

    category = "elementwise"

    def __init__(self, offset):
        self.offset = offset
        self._cache = None

    def coord_map(self):
        return CoordMap.offset(self.offset)

    def forward(self, x, size):
        y, self._cache = F.crop(x, self.offset, size)
        return y

    def backward(self, dy):
        dx = F.crop_backward(dy, self._cache)
        self._cache = None
        return dx


class BatchNorm2d(Layer):
    """Batch normalisation of C channels (Ioffe & Szegedy 2015; see
    :func:`minifcn.functional.batch_norm2d`): x (N, C, H, W) -> y (N, C, H, W),
    ``y = weight * (x - mu) / sqrt(var + eps) + bias`` per channel.

    Parameters ``weight`` (C,) = 1 and ``bias`` (C,) = 0 (``affine=False``: neither).
    Buffers ``running_mean`` (C,) = 0 and ``running_var`` (C,) = 1, saved by
    ``state_dict`` and checkpoints, never seen by the optimiser. In training mode the
    layer normalises with the batch's mean and biased variance over the M = N*H*W values
    of each channel and then updates the buffers exactly as PyTorch does::

        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)

    (the unbiased variance; with M = 1 that factor is undefined and the biased variance,
    0, is used, where PyTorch refuses). In eval mode it normalises with the buffers and
    leaves them alone. Coordinate map: the identity.
    """

    category = "elementwise"

    def __init__(self, num_features, momentum=0.1, eps=1e-5, affine=True):
        if not (isinstance(num_features, int) and num_features >= 1):
            raise ValueError(f"BatchNorm2d num_features must be an int >= 1, got {num_features!r}")
        if not (isinstance(momentum, (int, float)) and 0.0 <= momentum <= 1.0):
            raise ValueError(f"BatchNorm2d momentum must be in [0, 1], got {momentum!r}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"BatchNorm2d eps must be > 0, got {eps!r}")
        self.num_features, self.momentum, self.eps, self.affine = num_features, momentum, eps, affine
        zeros = initializers.zeros((num_features,))
        self.weight = Parameter(zeros + 1.0) if affine else None
        self.bias = Parameter(zeros.copy()) if affine else None
        self.running_mean = Buffer(zeros.copy())
        self.running_var = Buffer(zeros + 1.0)
        self._cache = None

    def coord_map(self):
        return IDENTITY

    def torch_module(self):
        import torch
        from torch import nn

        dtype = getattr(torch, str(self.running_mean.data.dtype).rsplit(".", 1)[-1])   # float32 / float64
        m = nn.BatchNorm2d(self.num_features, eps=self.eps, momentum=self.momentum, affine=self.affine,
                           dtype=dtype)
        if self.affine:
            _copy_into_torch(m, self)
        with torch.no_grad():
            m.running_mean.copy_(torch.tensor(to_numpy(self.running_mean.data)))
            m.running_var.copy_(torch.tensor(to_numpy(self.running_var.data)))
        return m.train(self.training)

    def forward(self, x):
        w = self.weight.data if self.weight is not None else None
        b = self.bias.data if self.bias is not None else None
        y, cache = F.batch_norm2d(x, w, b, self.running_mean.data, self.running_var.data,
                                  training=self.training, eps=self.eps)
        if self.training:
            m, count = self.momentum, cache.count
            unbiased = cache.var * (count / (count - 1)) if count > 1 else cache.var
            self.running_mean.data = (1.0 - m) * self.running_mean.data + m * cache.mean
            self.running_var.data = (1.0 - m) * self.running_var.data + m * unbiased
        self._cache = cache
        return y

    def backward(self, dy):
        dx, dw, db = F.batch_norm2d_backward(dy, self._cache)
        if self.weight is not None:
            _accumulate(self.weight, dw)
            _accumulate(self.bias, db)
        self._cache = None
        return dx


class MaxUnpool2d(Layer):
    """Max-unpooling (SegNet's decoder; see :func:`minifcn.functional.max_unpool2d`):
    ``forward(x, indices, output_size=None)``, x and indices (N, C, h, w) -> y (N, C, H, W),
    each value put back at its flat position ``row * W + col``, zeros elsewhere.

    ``indices`` and the pre-pool ``output_size`` (H, W) normally come from the
    ``MaxPool2d(return_indices=True)`` layer it mirrors (``pool.indices``,
    ``pool.input_size``); without ``output_size`` it is PyTorch's default
    ``((h - 1) S - 2P + K, (w - 1) S - 2P + K)``. Coordinate map: the inverse of the
    pool's window map (like a transposed convolution with the same K, S, P).
    """

    category = "pooling"

    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self._cache = None

    def _default_size(self, h, w):
        (kh, kw) = pair(self.kernel_size, "kernel_size")
        (sh, sw) = pair(self.stride if self.stride is not None else self.kernel_size, "stride")
        (ph, pw) = pair(self.padding, "padding")
        return (h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw

    def coord_map(self):
        stride = self.stride if self.stride is not None else self.kernel_size
        return CoordMap.transposed_window(self.kernel_size, stride, self.padding)

    def torch_module(self):
        from torch import nn

        return nn.MaxUnpool2d(self.kernel_size, self.stride, self.padding)

    def forward(self, x, indices, output_size=None):
        if output_size is None:
            output_size = self._default_size(x.shape[2], x.shape[3])
        y, self._cache = F.max_unpool2d(x, indices, output_size)
        return y

    def backward(self, dy):
        dx = F.max_unpool2d_backward(dy, self._cache)
        self._cache = None
        return dx


def _accumulate(param, grad):
    """``param.grad += grad`` unless the parameter is frozen."""
    if not param.frozen:
        param.grad += grad


class Interpolate(Layer):
    """Bilinear resize to a size given at call time: ``forward(x, size)``, x (N, C, H, W) ->
    y (N, C, OH, OW) with size = (OH, OW), y = A_h @ x @ A_w^T (see
    :func:`minifcn.functional.interpolate_bilinear`, PyTorch's rule for ``align_corners``).
    DeepLab's Interp layer (scores back to the image size) is ``align_corners=True``.

    No parameters. Its coordinate map depends on the sizes it is called with
    (``align_corners=True``: scale (H - 1) / (OH - 1), shift 0; otherwise scale H / OH,
    shift (H / OH - 1) / 2), so :meth:`coord_map` raises; models compose the maps of the
    layers before it.
    """

    category = "interpolation"

    def __init__(self, align_corners=True):
        if not isinstance(align_corners, bool):
            raise ValueError(f"Interpolate align_corners must be a bool (True or False), got {align_corners!r}")
        self.align_corners = align_corners
        self._cache = None

    def coord_map(self):
        raise TypeError("Interpolate has no fixed coordinate map: it resizes to the size given at call time "
                        "(compose the layers before it instead)")

    def flops(self, x_shape, y_shape, need_dx=True):
        """Two matmuls per pass, in the cheaper order: 2 N C min(H OW (W + OH), OH W (H + OW))."""
        n, c, h, w = x_shape
        oh, ow = y_shape[2:]
        one = 2 * n * c * min(h * ow * (w + oh), oh * w * (h + ow))
        return one * (2 if need_dx else 1)

    def torch_module(self):
        import torch

        align_corners = self.align_corners

        class Resize(torch.nn.Module):
            def forward(self, x, size):
                return torch.nn.functional.interpolate(x, size=tuple(size), mode="bilinear",
                                                       align_corners=align_corners)

        return Resize()

    def forward(self, x, size):
        y, self._cache = F.interpolate_bilinear(x, size, self.align_corners)
        return y

    def backward(self, dy):
        dx = F.interpolate_bilinear_backward(dy, self._cache)
        self._cache = None
        return dx
