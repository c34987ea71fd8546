"""Convolution and transposed convolution, each the other's backward.

conv2d:            x (N, C, H, W), weight (C_out, C, KH, KW)  -> y (N, C_out, OH, OW)
    OH = floor((H + 2P - D(KH - 1) - 1) / S) + 1
    y[n] = weight.reshape(C_out, C*KH*KW) @ im2col(x)[n]   (+ bias)

conv_transpose2d:  x (N, C_in, H, W), weight (C_in, C_out, KH, KW) -> y (N, C_out, OH, OW)
    OH = (H - 1)S - 2P + D(KH - 1) + 1
    y[n] = col2im(weight.reshape(C_in, C_out*KH*KW)^T @ x[n])   (+ bias)
    computed as S*S stride-1 "phase" convolutions in one conv2d, then a pixel shuffle

The transposed convolution *is* the gradient of conv2d with respect to its input,
so the backward of one is the forward of the other (im2col <-> col2im).
"""
from __future__ import annotations

from ..backend import constant_frame, device, namespace, parallel_for
from .checks import check_bias, check_float, check_ndim, check_same_dtype
from .conv_bands import backward_bands, correlate, padded
from .im2col import _window, conv_output_size, conv_transpose_output_size, pair


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
    c_in, c_out = (weight.shape[0], weight.shape[1]) if transposed else (weight.shape[1], weight.shape[0])
    if x.shape[1] != c_in:
        raise ValueError(f"{op} channel mismatch: input x has C={x.shape[1]} channels (shape {tuple(x.shape)}) "
                         f"but weight expects C_in={c_in} (weight shape {tuple(weight.shape)})")
    check_bias(bias, c_out, f"{op} bias", like=x)
    return (sh, sw), (ph, pw), (dh, dw)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D cross-correlation (what deep learning calls convolution).

    x: (N, C, H, W); weight: (C_out, C, KH, KW); bias: (C_out,) or None.
    Returns ``(y, cache)`` with y: (N, C_out, OH, OW); the output-size formula is in
    the module docstring. ``cache`` holds the input x (backward rebuilds the columns
    from it) and how the output was computed:

    * band by band of output rows (:func:`.conv_bands.correlate`), so that on a CPU the im2col
      columns stay in cache and the bands run on all cores;
    * padding beyond the kernel's reach only adds bias-valued borders (:func:`_reach`);
    * where x has a constant frame (NumPy; the 100-pixel padding of conv1_1 leaves one
      on every trunk activation up to conv4), outputs whose window lies in the frame
      are one value per channel, computed once (:func:`_frame_plan`).
    """
    s, p, d = _check_inputs("conv2d", x, weight, bias, stride, padding, dilation, transposed=False)
    n, c, h, w = x.shape
    c_out, c_in, kh, kw = weight.shape
    oh = conv_output_size(h, kh, s[0], p[0], d[0])
    ow = conv_output_size(w, kw, s[1], p[1], d[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d kernel {kh}x{kw} (dilation {d}) is larger than the padded input "
                         f"{h + 2 * p[0]}x{w + 2 * p[1]} (input {h}x{w}, padding {p})")
    xp = namespace(x, weight, bias)
    q, off = _reach(s, p, d, (kh, kw))
    if off != (0, 0):
        # Output pixels whose window lies wholly in the zero padding equal the bias (most
        # of conv1_1's output, padded by 100): compute only the windows that touch x.
        core, core_cache = conv2d(x, weight, bias, s, q, d)
        y = xp.zeros((n, c_out, oh, ow), dtype=x.dtype, device=device(x))
        if bias is not None:
            y[...] = xp.reshape(bias, (1, c_out, 1, 1))
        y[:, :, off[0]:off[0] + core.shape[2], off[1]:off[1] + core.shape[3]] = core
        return y, (x, weight, bias is not None, s, p, d, ("reach", off, tuple(core.shape[2:]), core_cache))
    xpad = padded(x, p, slot=2)
    frame = _frame_plan(x, s, p, d, (kh, kw))
    if frame is None:
        return correlate(xpad, weight, bias, s, d, (oh, ow)), (x, weight, bias is not None, s, p, d, None)
    regions, v = frame                       # v: (N, C_in), the frame's value per plane
    const = v @ xp.matrix_transpose(xp.sum(weight, axis=(2, 3)))          # (N, C_out)
    if bias is not None:
        const = const + bias
    y = xp.empty((n, c_out, oh, ow), dtype=x.dtype, device=device(x))
    y[...] = xp.reshape(const, (n, c_out, 1, 1))
    def region(r0, r1, c0, c1):              # windows that see x's core, its ring or the zero padding
        sub = xpad[:, :, r0:r1 + d[0] * (kh - 1), c0:c1 + d[1] * (kw - 1)]
        y[:, :, r0:r1, c0:c1] = correlate(sub, weight, bias, s, d, (r1 - r0, c1 - c0))

    region(*regions[0])                      # the core, in bands on all cores
    parallel_for(region, regions[1:], x)     # the thin ring pieces, one per core
    return y, (x, weight, bias is not None, s, p, d, ("frame", regions, v))


def conv2d_backward(dy, cache, need_dx=True, need_dweight=True):
    """Gradients of :func:`conv2d`.

    dy: (N, C_out, OH, OW) -> ``(dx, dweight, dbias)``:
    dweight = sum_n dy[n] @ cols[n]^T, dx = col2im(weight^T @ dy), dbias = sum of dy
    over (N, OH, OW); dbias is None when the forward had no bias. ``need_dx=False`` /
    ``need_dweight=False`` skip (and return None for) a gradient nobody needs.
    The columns are rebuilt from the cached input x, band by band, never stored; for
    stride 1, dx is computed as the equivalent convolution of dy (:func:`_dx_by_convolution`).
    """
    x, weight, has_bias, s, p, d, plan = cache
    xp = namespace(dy, weight)
    n, c_out, oh, ow = dy.shape
    _, c_in, kh, kw = weight.shape
    h, w = x.shape[2:]
    dy_sum = xp.sum(dy, axis=(2, 3))                                          # (N, C_out)
    dbias = xp.sum(dy_sum, axis=0) if has_bias else None
    if plan is not None and plan[0] == "reach":   # outside the core dy only reaches the bias
        _, off, (hc, wc), core_cache = plan
        dx, dweight, _ = conv2d_backward(dy[:, :, off[0]:off[0] + hc, off[1]:off[1] + wc], core_cache,
                                         need_dx, need_dweight)
        return dx, dweight, dbias
    fold = need_dx and not _dx_by_convolution(weight.shape, s, p, d)
    xpad = padded(x, p, slot=2) if need_dweight or fold else None
    dxpad = xp.zeros((n, c_in, h + 2 * p[0], w + 2 * p[1]), dtype=dy.dtype, device=device(dy)) if fold else None
    dweight = None
    if plan is None:                # one band loop for both gradients
        dw2 = backward_bands(xpad if need_dweight else None, dy, weight, s, d, dxpad)
        dweight = xp.reshape(dw2, weight.shape) if need_dweight else None
    elif fold:
        backward_bands(None, dy, weight, s, d, dxpad)
    if plan is not None and need_dweight:
        # Windows inside the frame all hold v[n, c]: they add v[n, c] * (dy summed over them).
        _, regions, v = plan
        dw2 = xp.zeros((c_out, c_in * kh * kw), dtype=dy.dtype, device=device(dy))
        dy_frame = dy_sum
        def region(r0, r1, c0, c1):
            sub = xpad[:, :, r0:r1 + d[0] * (kh - 1), c0:c1 + d[1] * (kw - 1)]
            return backward_bands(sub, dy[:, :, r0:r1, c0:c1], weight, s, d, None)

        for (r0, r1, c0, c1), share in zip(regions, [region(*regions[0])] + parallel_for(region, regions[1:], dy)):
            dw2 = dw2 + share
            dy_frame = dy_frame - xp.sum(dy[:, :, r0:r1, c0:c1], axis=(2, 3))
        dweight = xp.reshape(dw2, weight.shape) + xp.reshape(
            xp.matrix_transpose(dy_frame) @ v, (c_out, c_in, 1, 1))
    if fold:
        dx = dxpad[:, :, p[0]:p[0] + h, p[1]:p[1] + w]
    elif need_dx:                   # a full convolution of dy with the flipped, transposed kernel
        flipped = xp.permute_dims(xp.flip(weight, axis=(2, 3)), (1, 0, 2, 3))       # (C_in, C_out, KH, KW)
        dypad = padded(dy, (d[0] * (kh - 1) - p[0], d[1] * (kw - 1) - p[1]), slot=3)
        dx = correlate(dypad, flipped, None, (1, 1), d, (h, w))
    else:
        dx = None
    return dx, dweight, dbias


# A frame pays when the windows that must be computed cover at most this share of the output.
FRAME_MAX_SHARE = 0.7


def _frame_plan(x, s, p, d, k):
    """Where x (N, C, H, W) is constant outside a box, the output regions to compute.

    Returns ``(regions, v)`` -- v: (N, C) the frame value; regions: output boxes
    (r0, r1, c0, c1) whose windows see x's non-constant core, its outer ring
    (:func:`minifcn.backend.constant_frame`) or the zero padding -- or None when there is
    no frame (on backends other than NumPy the data is never inspected), the stride is
    not 1, or the frame is too thin to pay. Every other output window lies inside the
    frame, so its value is the same everywhere.
    """
    if s != (1, 1):
        return None
    frame = constant_frame(x)
    if frame is None:
        return None
    (b0, b1, e0, e1), (a, b) = frame
    h, w = x.shape[2:]
    (ph, pw), (rh, rw) = p, (d[0] * (k[0] - 1), d[1] * (k[1] - 1))
    oh, ow = h + 2 * ph - rh, w + 2 * pw - rw
    core = (max(0, b0 + ph - rh), min(oh, b1 + ph), max(0, e0 + pw - rw), min(ow, e1 + pw))
    # output rows/columns whose windows reach the ring or the padding: the first a + P, the last b + P
    top, bottom, left, right = a + ph, oh - b - ph, a + pw, ow - b - pw
    # the core must stay clear of that outer band, so that the regions do not overlap
    if core[0] < top or core[1] > bottom or core[2] < left or core[3] > right or core[0] >= core[1] \
            or core[2] >= core[3]:
        return None
    ring = [(0, top, 0, ow), (bottom, oh, 0, ow), (top, bottom, 0, left), (top, bottom, right, ow)]
    regions = [core] + [r for r in ring if r[0] < r[1] and r[2] < r[3]]
    if sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in regions) > FRAME_MAX_SHARE * oh * ow:
        return None
    return regions, x[:, :, a, a]


def _reach(s, p, d, k):
    """Padding that still reaches x, and where its output sits in the full output.

    With stride 1 a window whose last tap D(K - 1) lies in the padding sees zeros
    only, so padding beyond D(K - 1) adds nothing but bias-valued borders: the output
    of padding P is the output of padding Q = min(P, D(K - 1)) framed by P - Q pixels
    of bias. Returns ``(Q, P - Q)`` (``(P, 0)`` for strided convolutions).
    """
    if s != (1, 1):
        return p, (0, 0)
    q = tuple(min(pi, di * (ki - 1)) for pi, di, ki in zip(p, d, k))
    return q, (p[0] - q[0], p[1] - q[1])


def _dx_by_convolution(w_shape, s, p, d):
    """Whether dx of a conv is cheaper as a convolution of dy than as col2im(weight^T @ dy).

    For stride 1, dx[c, i, j] = sum_{o, ky, kx} weight[o, c, ky, kx] dy[o, i + P - ky D, j + P - kx D]:
    a stride-1 convolution of dy, padded by D(K - 1) - P (>= 0 needed), with the kernel
    flipped and its channel axes swapped. Its im2col copies C_out*KH*KW rows where col2im
    adds C_in*KH*KW rows into overlapping windows, so it pays unless C_out >> C_in.
    """
    c_out, c_in, kh, kw = w_shape
    return (s == (1, 1) and p[0] <= d[0] * (kh - 1) and p[1] <= d[1] * (kw - 1)
            and c_out <= 2 * c_in)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """Transposed convolution ("deconvolution"): the input-gradient of :func:`conv2d`.

    x: (N, C_in, H, W); weight: (C_in, C_out, KH, KW); bias: (C_out,) or None.
    Each input pixel scatters a copy of its kernel, scaled by its value, into the
    output at stride S; overlaps add; P rows/columns are then cropped from each side.
    Returns ``(y, cache)`` with y: (N, C_out, OH, OW), OH = (H - 1)S - 2P + D(KH - 1) + 1.

    Computed as one stride-1 :func:`conv2d` of x with the S*S phase kernels stacked as
    output channels, followed by a pixel shuffle (see :func:`_phase_weight`); this equals
    ``col2im(weight.reshape(C_in, -1)^T @ x)`` without its C_out*KH*KW x H*W columns.
    """
    s, p, d = _check_inputs("conv_transpose2d", x, weight, bias, stride, padding, dilation, transposed=True)
    n, c, h, w = x.shape
    c_in, c_out, kh, kw = weight.shape
    oh = conv_transpose_output_size(h, kh, s[0], p[0], d[0])
    ow = conv_transpose_output_size(w, kw, s[1], p[1], d[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"conv_transpose2d output would be {oh}x{ow}: padding {p} is too large for "
                         f"input {h}x{w}, kernel {kh}x{kw}, stride {s}")
    xp = namespace(x, weight, bias)
    wq, (qh, qw) = _phase_weight(weight, s, d)
    yq, conv_cache = conv2d(x, wq, None, 1, (qh - 1, qw - 1))       # (N, C_out*SH*SW, BH, BW)
    y = _pixel_shuffle(yq, c_out, s)[:, :, p[0]:p[0] + oh, p[1]:p[1] + ow]
    if bias is not None:
        y = y + xp.reshape(bias, (1, c_out, 1, 1))
    cache = (conv_cache, tuple(weight.shape), tuple(yq.shape[2:]), bias is not None, s, p, d)
    return y, cache


def conv_transpose2d_backward(dy, cache, need_dx=True, need_dweight=True):
    """Gradients of :func:`conv_transpose2d`.

    dy: (N, C_out, OH, OW) -> ``(dx, dweight, dbias)``. Undo the crop (zeros) and the
    pixel shuffle, then take the gradients of the phase convolution and fold the phase
    kernel's gradient back into (C_in, C_out, KH, KW). ``need_dx`` / ``need_dweight``
    as in :func:`conv2d_backward`.
    """
    conv_cache, w_shape, (bh, bw), has_bias, s, p, d = cache
    xp = namespace(dy)
    n, c_out, oh, ow = dy.shape
    dfull = xp.zeros((n, c_out, bh * s[0], bw * s[1]), dtype=dy.dtype, device=device(dy))
    dfull[:, :, p[0]:p[0] + oh, p[1]:p[1] + ow] = dy
    dq = xp.reshape(xp.permute_dims(xp.reshape(dfull, (n, c_out, bh, s[0], bw, s[1])), (0, 1, 3, 5, 2, 4)),
                    (n, c_out * s[0] * s[1], bh, bw))
    dx, dwq, _ = conv2d_backward(dq, conv_cache, need_dx, need_dweight)
    dweight = _phase_weight_grad(dwq, w_shape, s, d) if need_dweight else None
    dbias = xp.sum(dy, axis=(0, 2, 3)) if has_bias else None
    return dx, dweight, dbias


# A transposed convolution with stride S is S*S ordinary stride-1 convolutions, one per
# output phase (ry, rx) = (oy mod SH, ox mod SW): output row oy = (iy + qy)*SH + ry gets
# kernel row ky = qy*SH + ry from input row iy. Stacking the phase kernels as output
# channels gives ONE convolution of x (padding Q - 1, Q = ceil(KH_dilated / SH) taps per
# phase); a pixel shuffle then interleaves the phases into the (SH*BH, SW*BW) output.
def _phase_weight(weight, s, d):
    """(C_in, C_out, KH, KW) -> the phase kernel (C_out*SH*SW, C_in, QH, QW), and (QH, QW)."""
    xp = namespace(weight)
    c_in, c_out, kh, kw = weight.shape
    kdh, kdw = d[0] * (kh - 1) + 1, d[1] * (kw - 1) + 1                # dilated kernel size
    qh, qw = -(-kdh // s[0]), -(-kdw // s[1])
    wp = xp.zeros((c_in, c_out, qh * s[0], qw * s[1]), dtype=weight.dtype, device=device(weight))
    wp[:, :, _window(0, kh, d[0]), _window(0, kw, d[1])] = weight      # dilate, pad to Q*S taps
    w6 = xp.flip(xp.reshape(wp, (c_in, c_out, qh, s[0], qw, s[1])), axis=(2, 4))  # tap q -> Q-1-q
    wq = xp.permute_dims(w6, (1, 3, 5, 0, 2, 4))                          # (C_out, SH, SW, C_in, QH, QW)
    return xp.reshape(wq, (c_out * s[0] * s[1], c_in, qh, qw)), (qh, qw)


def _phase_weight_grad(dwq, w_shape, s, d):
    """Adjoint of :func:`_phase_weight`: (C_out*SH*SW, C_in, QH, QW) -> (C_in, C_out, KH, KW)."""
    xp = namespace(dwq)
    c_in, c_out, kh, kw = w_shape
    qh, qw = dwq.shape[2:]
    w6 = xp.permute_dims(xp.reshape(dwq, (c_out, s[0], s[1], c_in, qh, qw)), (3, 0, 4, 1, 5, 2))
    wp = xp.reshape(xp.flip(w6, axis=(2, 4)), (c_in, c_out, qh * s[0], qw * s[1]))
    return wp[:, :, _window(0, kh, d[0]), _window(0, kw, d[1])]


def _pixel_shuffle(yq, c_out, s):
    """(N, C_out*SH*SW, BH, BW) phase planes -> (N, C_out, BH*SH, BW*SW), y[.., b*S + r, ..] = plane r at b."""
    xp = namespace(yq)
    n, _, bh, bw = yq.shape
    y6 = xp.permute_dims(xp.reshape(yq, (n, c_out, s[0], s[1], bh, bw)), (0, 1, 4, 2, 5, 3))
    return xp.reshape(y6, (n, c_out, bh * s[0], bw * s[1]))
