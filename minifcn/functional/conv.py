"""Convolution and transposed convolution: validate, pick a plan, run it.

conv2d:            x (N, C, H, W), weight (C_out, C, KH, KW)  -> y (N, C_out, OH, OW)
    OH = floor((H + 2P - D(KH - 1) - 1) / S) + 1
conv_transpose2d:  x (N, C_in, H, W), weight (C_in, C_out, KH, KW) -> y (N, C_out, OH, OW)
    OH = (H - 1)S - 2P + D(KH - 1) + 1 + output_padding

The math is in :mod:`.reference` (read it first); this module chooses how to compute
it. On the reference path (``MINIFCN_REFERENCE=1``, :func:`.mode.use_reference`) every
call runs the reference function. Otherwise:

* padding beyond the kernel's reach (conv1_1's 100) -> :mod:`.fast.reach`, whose core
  is again dispatched here;
* an input with a constant frame (NumPy only) -> :mod:`.fast.frame`;
* a 3x3 stride-1 convolution with at least 64 input and output channels and an output
  of at least 48x48 (NumPy) -> :mod:`.fast.winograd4`, Winograd F(4x4, 3x3) (measured
  1.3-1.6x on such layers' forward and dx; with fewer channels or pixels its transforms
  or its thin GEMMs cost more than the saved multiplies);
* everything else -> :mod:`.fast.bands`;
* a transposed convolution -> :mod:`.fast.phase`, whose phase convolution is
  dispatched here, or runs channel by channel (:mod:`.fast.diagonal`) when the weight
  is zero off the channel diagonal (FCN's bilinear upsampling).

Each plan returns its own cache type, and the backward runs the plan its forward took.
"""
from __future__ import annotations

from . import reference
from .checks import check_bias, check_float, check_ndim, check_same_dtype
from .fast import bands, frame, phase, reach, winograd, winograd4
from .im2col import conv_output_size, conv_transpose_output_size, pair
from .mode import reference_enabled


def _check_inputs(op, x, weight, bias, stride, padding, dilation, transposed):
    """Validate the inputs of conv2d (weight (C_out, C_in, KH, KW)) or conv_transpose2d
    (weight (C_in, C_out, KH, KW)); return the (S, P, D) pairs."""
    x_layout, w_layout = ("(N, C_in, H, W)", "(C_in, C_out, KH, KW)") if transposed else \
        ("(N, C, H, W)", "(C_out, C_in, KH, KW)")
    check_ndim(x, 4, f"{op} input x", x_layout)
    check_ndim(weight, 4, f"{op} weight", w_layout)
    check_float(x, f"{op} input x")
    check_same_dtype(x, weight, f"{op} input x", "weight")
    sh, sw = pair(stride, "stride")
    ph, pw = pair(padding, "padding")
    dh, dw = pair(dilation, "dilation")
    if min(sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"stride and dilation must be >= 1 and padding >= 0, got "
                         f"stride={stride!r}, padding={padding!r}, dilation={dilation!r}")
    if min(x.shape) < 1 or min(weight.shape) < 1:
        raise ValueError(f"{op} needs non-empty arrays, got input x of shape {tuple(x.shape)} "
                         f"and weight of shape {tuple(weight.shape)}")
    c_in, c_out = (weight.shape[0], weight.shape[1]) if transposed else (weight.shape[1], weight.shape[0])
    if x.shape[1] != c_in:
        raise ValueError(f"{op} channel mismatch: input x has C={x.shape[1]} channels (shape {tuple(x.shape)}) "
                         f"but weight expects C_in={c_in} (weight shape {tuple(weight.shape)})")
    check_bias(bias, c_out, f"{op} bias", like=x)
    return (sh, sw), (ph, pw), (dh, dw)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D cross-correlation (what deep learning calls convolution); see :func:`.reference.conv2d`.

    x: (N, C, H, W); weight: (C_out, C, KH, KW); bias: (C_out,) or None.
    Returns ``(y, cache)`` with y: (N, C_out, OH, OW).
    """
    s, p, d = _check_inputs("conv2d", x, weight, bias, stride, padding, dilation, transposed=False)
    (h, w), (kh, kw) = x.shape[2:], weight.shape[2:]
    if conv_output_size(h, kh, s[0], p[0], d[0]) < 1 or conv_output_size(w, kw, s[1], p[1], d[1]) < 1:
        raise ValueError(f"conv2d kernel {kh}x{kw} (dilation {d}) is larger than the padded input "
                         f"{h + 2 * p[0]}x{w + 2 * p[1]} (input {h}x{w}, padding {p})")
    return _conv2d(x, weight, bias, s, p, d)


def _conv2d(x, weight, bias, s, p, d):
    """Plan choice for validated arguments (also the core of the reach and phase plans)."""
    if reference_enabled():
        return reference.conv2d(x, weight, bias, s, p, d)
    if reach.reach(s, p, d, weight.shape[2:])[1] != (0, 0):
        return reach.conv2d(x, weight, bias, s, p, d, core_conv=_conv2d)
    plan = frame.frame_plan(x, s, p, d, weight.shape[2:])
    if plan is not None:
        return frame.conv2d(x, weight, bias, s, p, d, plan)
    if winograd4.pays(x, weight.shape, s, p, d):
        return winograd4.conv2d(x, weight, bias, s, p, d)
    return bands.conv2d(x, weight, bias, s, p, d)


def conv2d_backward(dy, cache, need_dx=True, need_dweight=True):
    """Gradients of :func:`conv2d`; see :func:`.reference.conv2d_backward`.

    dy: (N, C_out, OH, OW) -> ``(dx, dweight, dbias)``; dbias is None when the forward
    had no bias. ``need_dx=False`` / ``need_dweight=False`` skip (and return None for)
    a gradient nobody needs (a network's first layer; frozen weights).
    """
    if isinstance(cache, reach.ConvCache):
        return reach.conv2d_backward(dy, cache, need_dx, need_dweight, core_backward=conv2d_backward)
    backward = _CONV_BACKWARD.get(type(cache))
    if backward is None:
        raise ValueError(f"conv2d_backward got a {type(cache).__name__}, not the cache of a conv2d")
    return backward(dy, cache, need_dx, need_dweight)


_CONV_BACKWARD = {reference.ConvCache: reference.conv2d_backward,
                  bands.ConvCache: bands.conv2d_backward,
                  frame.ConvCache: frame.conv2d_backward,
                  winograd.ConvCache: winograd.conv2d_backward,
                  winograd4.ConvCache: winograd4.conv2d_backward}


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, dilation=1, output_padding=0):
    """Transposed convolution ("deconvolution"): the input-gradient of :func:`conv2d`;
    see :func:`.reference.conv_transpose2d`.

    x: (N, C_in, H, W); weight: (C_in, C_out, KH, KW); bias: (C_out,) or None.
    Returns ``(y, cache)`` with y: (N, C_out, OH, OW),
    OH = (H - 1)S - 2P + D(KH - 1) + 1 + output_padding (0 <= output_padding < S).
    """
    s, p, d = _check_inputs("conv_transpose2d", x, weight, bias, stride, padding, dilation, transposed=True)
    op = pair(output_padding, "output_padding")
    if not (0 <= op[0] < s[0] and 0 <= op[1] < s[1]):
        raise ValueError(f"conv_transpose2d output_padding {op} must be >= 0 and smaller than the stride {s}")
    (h, w), (kh, kw) = x.shape[2:], weight.shape[2:]
    oh = conv_transpose_output_size(h, kh, s[0], p[0], d[0]) + op[0]
    ow = conv_transpose_output_size(w, kw, s[1], p[1], d[1]) + op[1]
    if oh < 1 or ow < 1:
        raise ValueError(f"conv_transpose2d output would be {oh}x{ow}: padding {p} is too large for "
                         f"input {h}x{w}, kernel {kh}x{kw}, stride {s}")
    if reference_enabled():
        return reference.conv_transpose2d(x, weight, bias, s, p, d, op)
    return phase.conv_transpose2d(x, weight, bias, s, p, d, (oh, ow), conv=_conv2d)


def conv_transpose2d_backward(dy, cache, need_dx=True, need_dweight=True):
    """Gradients of :func:`conv_transpose2d`; see :func:`.reference.conv_transpose2d_backward`.

    dy: (N, C_out, OH, OW) -> ``(dx, dweight, dbias)``; ``need_dx`` / ``need_dweight``
    as in :func:`conv2d_backward`.
    """
    if isinstance(cache, reference.ConvTransposeCache):
        return reference.conv_transpose2d_backward(dy, cache, need_dx, need_dweight)
    if isinstance(cache, phase.ConvTransposeCache):
        return phase.conv_transpose2d_backward(dy, cache, need_dx, need_dweight, conv_backward=conv2d_backward)
    raise ValueError(f"conv_transpose2d_backward got a {type(cache).__name__}, "
                     f"not the cache of a conv_transpose2d")
