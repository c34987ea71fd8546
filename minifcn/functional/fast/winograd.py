"""Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions: equals :func:`..reference.conv2d`
and :func:`..reference.conv2d_backward` (kernel 3x3, stride 1, dilation 1, padding <= 2).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016. The
padded input is cut into 4x4 tiles d at stride 2 (neighbouring tiles overlap by two
rows/columns); each tile gives a 2x2 block of the output:

    U = G g G^T        (4x4 per (o, c): the transformed 3x3 kernel g = weight[o, c])
    V = B^T d B        (4x4 per (n, c, tile))
    M[xi, nu] = U[xi, nu] @ V[xi, nu]       16 GEMMs (C_out x C) @ (C x tiles)
    Y = A^T M A        (2x2 per (n, o, tile))

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

Tiles: TH = ceil(OH / 2) by TW = ceil(OW / 2); an odd OH/OW gets one zero row/column
past the padded input, and the outputs it would feed are dropped.

Backward, by the same machinery:

* dx is the stride-1 3x3 convolution of dy padded by 2 - P with the flipped,
  channel-swapped kernel (:func:`.bands.dx_by_convolution`), so it runs the forward.
* dweight is the adjoint of the forward in U: dU[xi, nu] = sum over tiles of
  (A e A^T)[xi, nu] @ V[xi, nu]^T for the 2x2 dy tiles e, then dg = G^T dU G. Both sides
  of the 16 GEMMs are transformed tiles; the sum over tiles is the GEMMs' inner axis.

Why faster: a 2x2 output block costs 16 multiplies per (o, c) instead of 36, 2.25x
fewer GEMM flops (the GEMMs' inner axis is C rather than 9C, and the transformed tiles
hold 16 values per 4 outputs where im2col copies 36). What it costs: the transforms,
memory-bound array ops (about 30 element writes per tile and input channel, 16 per tile
and output channel), which in NumPy eat most of the saving unless C_in and C_out are
both large enough for the GEMMs to dominate (see MIN_CHANNELS); and float32 rounding:
the transforms add and subtract up to 9 terms with weights 1/4 .. 1, so the error stays
of the direct sum's size (tests/test_winograd.py reports 2e-7 .. 5e-7 of the output
scale on FCN-like activations, the same as the im2col plan's).

Work is done in bands of tile rows sized for a core's cache, on all cores
(:func:`minifcn.backend.parallel_for`), each band's V, M and transform buffers reused
(:func:`minifcn.backend.scratch`). The code is array API only; on NumPy/CuPy the adds
write into their buffers directly (ufunc ``out=``), elsewhere they allocate.
"""
from __future__ import annotations

from ...backend import device, is_cupy, is_numpy, matmul, namespace, parallel_for, row_bands, scratch
from .. import reference
from . import bands
from ..im2col import pad2d

_B_T = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
# G with its last row negated: the weight gradient transforms dy with A S instead of A
# (S = diag(1, 1, 1, -1)), which turns two of the four row combinations into plain
# copies, and undoes S in the inverse transform (S G)^T dU (S G).
_G_SIGNED = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, -1.0))
_A_T = ((1, 1, 1, 0), (0, 1, -1, -1))

MIN_BAND_TILES = 32      # fewer tiles per band leave the 16 GEMMs too thin
MIN_BANDS = 4            # bands per call on NumPy, whatever the core count
BAND_SCALE = 4           # bands of BAND_SCALE x minifcn.backend's band elements: a band makes about 30
                         # NumPy calls, and at 4x im2col's band size their overhead stops mattering
                         # (measured at 256x256 on 2 cores: 16 channels 49 -> 24 ms, 32 channels 17 -> 13 ms)


class ConvCache(reference.ConvCache):
    """The Winograd plan keeps the input (its tiles are transformed again in backward):
    the reference cache's fields, its own type so that backward runs this plan."""

    __slots__ = ()


def applies(w_shape, s, p, d):
    """Whether this plan computes the convolution: 3x3 kernel, stride 1, dilation 1, padding <= 2."""
    return (tuple(w_shape[2:]) == (3, 3) and tuple(s) == (1, 1) and tuple(d) == (1, 1)
            and 0 <= p[0] <= 2 and 0 <= p[1] <= 2)


# The dispatcher takes the F(4x4, 3x3) plan (:mod:`.winograd4`) for forward and dx
# wherever a Winograd plan pays; this plan's weight gradient is what that plan uses with
# at least MIN_CHANNELS channels on both sides. Measured on the 2-core machine (float32,
# interleaved with the im2col bands): dweight 1.1-1.25x faster at 128 channels and
# 57x57, 1.27x at 256, even at 64; forward and dx 1.2-1.4x faster than im2col at 57x57
# with 128 channels and more, but slower than F(4x4, 3x3) there, and slower than
# im2col at 29x29.
MIN_CHANNELS = 128


def _fast(x):
    return is_numpy(x) or is_cupy(x)


def _tiles(size):
    return -(-size // 2)


def _combine(xp, fast, out, axis, terms):
    """The array whose k-th entry along ``axis`` is ``op(a, b)`` for the k-th ``(op, a, b)``
    of ``terms``: written into ``out`` on NumPy/CuPy (ufunc ``out=``), stacked anew elsewhere."""
    if fast:
        for k, (op, a, b) in enumerate(terms):
            op(a, b, out=out[(slice(None),) * axis + (k,)])
        return out
    return xp.stack([op(a, b) for op, a, b in terms], axis=axis)


def _kron(g):
    """kron(g, g) as nested lists: row 4 xi + nu, column 3 k + l holds g[xi][k] g[nu][l]."""
    return [[g[xi][k] * g[nu][l] for k in range(3) for l in range(3)] for xi in range(4) for nu in range(4)]


_GG = _kron(_G)                  # (16, 9): vec(G g G^T) = _GG @ vec(g)
_GG_SIGNED = _kron(_G_SIGNED)    # (16, 9): vec((S G)^T dU (S G)) = _GG_SIGNED^T @ vec(dU)


def transform_weight(weight):
    """U = G g G^T for every (o, c): weight (C_out, C, 3, 3) -> (16, C_out, C), row-major (xi, nu).

    One GEMM: U as (16, C_out C) = kron(G, G) (16, 9) @ weight as (9, C_out C)."""
    xp = namespace(weight)
    c_out, c_in = weight.shape[:2]
    gg = xp.asarray(_GG, dtype=weight.dtype, device=device(weight))
    # a lone item of parallel_for: BLAS with one thread (a small multi-threaded call waits for cores)
    u, = parallel_for(lambda: gg @ xp.matrix_transpose(xp.reshape(weight, (c_out * c_in, 9))), [()], weight)
    return xp.reshape(u, (16, c_out, c_in))


def inverse_transform_weight_gradient(du):
    """dg = (S G)^T dU (S G): du (16, C_out, C) -> dweight (C_out, C, 3, 3), as one GEMM
    du as (C_out C, 16) @ kron(S G, S G) (16, 9)."""
    xp = namespace(du)
    c_out, c_in = du.shape[1:]
    gg = xp.asarray(_GG_SIGNED, dtype=du.dtype, device=device(du))
    dg, = parallel_for(lambda: xp.matrix_transpose(xp.reshape(du, (16, c_out * c_in))) @ gg, [()], du)
    return xp.reshape(dg, (c_out, c_in, 3, 3))


# Band layout. A band holds tile rows t0 .. t0 + nt - 1. Each (n, c) plane's tiles are
# stored row after row, TW + 1 per row, and nt + 1 rows per plane, the planes one after
# another: every transform step is then one array op over the whole band with a
# unit-stride inner axis (NumPy's per-row overhead would otherwise dominate the small
# late layers). The extra tile of each row and the extra row of each plane are
# computed from finite neighbours and never output; the GEMMs skip the extra rows.


def transformed_input(xpad, t0, nt, tw):
    """V = B^T d B of a band's tiles: xpad (N, C, >= 2(t0 + nt) + 2, >= 2 TW + 2) ->
    (16, N, C, L), L = nt (TW + 1) (a view that skips each plane's extra row), in this
    thread's reused buffers.

    The band is first split into its four stride-2 phases ph[pr, pc][n, c, y, x] =
    xpad[n, c, 2 (t0 + y) + pr, 2 x + pc], y <= nt, x <= TW: tap (i, j) of tile (ty, tx) is
    phase (i % 2, j % 2) at (ty + i // 2, tx + j // 2), so the row pass shifts the flat
    phases by one phase row (TW + 1 elements), the column pass by one element."""
    xp = namespace(xpad)
    fast = _fast(xpad)
    n, c = xpad.shape[:2]
    wt = tw + 1
    plane = (nt + 1) * wt
    total = n * c * plane                  # V's flat length; the row pass needs one more, the phases wt + 1 more
    r = 2 * t0
    src = [[xpad[:, :, r + pr:r + pr + 2 * nt + 1:2, pc:pc + 2 * tw + 1:2] for pc in range(2)] for pr in range(2)]
    if fast:
        ph = scratch((2, 2, total + wt + 1), xpad.dtype, xpad, slot=("winograd", 0))
        for pr in range(2):
            for pc in range(2):
                xp.reshape(ph[pr, pc, :total], (n, c, nt + 1, wt))[...] = src[pr][pc]
        ph[:, :, total:] = 0
    else:
        zero = xp.zeros((wt + 1,), dtype=xpad.dtype, device=device(xpad))
        ph = xp.stack([xp.stack([xp.concat((xp.reshape(src[pr][pc], (total,)), zero))
                                 for pc in range(2)]) for pr in range(2)])
    d0, d1 = ph[0, :, :total + 1], ph[1, :, :total + 1]
    d2, d3 = ph[0, :, wt:], ph[1, :, wt:]
    rows = _combine(xp, fast, scratch((4, 2, total + 1), xpad.dtype, xpad, slot=("winograd", 5)), 0,
                    ((xp.subtract, d0, d2), (xp.add, d1, d2), (xp.subtract, d2, d1), (xp.subtract, d1, d3)))
    c0, c1 = rows[:, 0, :total], rows[:, 1, :total]
    c2, c3 = rows[:, 0, 1:], rows[:, 1, 1:]
    v = _combine(xp, fast, scratch((4, 4, total), xpad.dtype, xpad, slot=("winograd", 1)), 1,
                 ((xp.subtract, c0, c2), (xp.add, c1, c2), (xp.subtract, c2, c1), (xp.subtract, c1, c3)))
    return xp.reshape(v, (16, n, c, plane))[..., :nt * wt]


def _output_transform(m, y, t0, nt, tw):
    """y[:, :, 2 t0 : 2 (t0 + nt), :] = A^T M A of a band, m (16, N, C_out, L) contiguous;
    rows and columns past y's (OH, OW) and each row's extra tile are dropped."""
    xp = namespace(m)
    fast = _fast(m)
    n, c_out, oh, ow = y.shape
    wt = tw + 1
    total = n * c_out * nt * wt
    m4 = xp.reshape(m, (4, 4, total))
    if fast:
        rows = scratch((2, 4, total), m.dtype, m, slot=("winograd", 3))
        block = scratch((2, 2, total), m.dtype, m, slot=("winograd", 4))
        xp.add(m4[0], m4[1], out=rows[0])
        rows[0] += m4[2]
        xp.subtract(m4[1], m4[2], out=rows[1])
        rows[1] -= m4[3]
        xp.add(rows[:, 0], rows[:, 1], out=block[:, 0])
        block[:, 0] += rows[:, 2]
        xp.subtract(rows[:, 1], rows[:, 2], out=block[:, 1])
        block[:, 1] -= rows[:, 3]
    else:
        mm = [m4[i, ...] for i in range(4)]
        rows = xp.stack((mm[0] + mm[1] + mm[2], mm[1] - mm[2] - mm[3]))
        rr = [rows[:, j, ...] for j in range(4)]
        block = xp.stack((rr[0] + rr[1] + rr[2], rr[1] - rr[2] - rr[3]), axis=1)
    for a in range(2):
        ra = min(nt, (oh - a - 2 * t0 + 1) // 2)        # output rows 2 (t0 + ty) + a that exist
        for b in range(2):
            cb = (ow - b + 1) // 2
            if ra > 0:
                y[:, :, 2 * t0 + a:2 * t0 + a + 2 * ra - 1:2, b:b + 2 * cb - 1:2] = \
                    xp.reshape(block[a, b, ...], (n, c_out, nt, wt))[:, :, :ra, :cb]


def _band_rows(th, tw, per_tile, like):
    """Bands of tile rows: about BAND_SCALE x the backend's band elements each (``per_tile``
    elements per tile), at least MIN_BAND_TILES tiles; on NumPy at least MIN_BANDS bands,
    so that the cores share them and a thread that gets no core simply takes fewer. The
    split depends on the sizes only, never on the core count, so results do not either."""
    bands = row_bands(th, per_tile * (tw + 1) // max(1, BAND_SCALE), like, -(-MIN_BAND_TILES // (tw + 1)))
    if is_numpy(like) and len(bands) < MIN_BANDS:
        step = -(-th // MIN_BANDS)
        bands = [(r, min(r + step, th)) for r in range(0, th, step)]
    return bands


def _extended(xpad, size, slot):
    """xpad, or a copy with zero rows/columns added at the bottom/right to reach ``size``."""
    hp, wp = xpad.shape[2:]
    if hp >= size[0] and wp >= size[1]:
        return xpad
    return pad2d(xpad, 0, size=(max(hp, size[0]), max(wp, size[1])), slot=slot)


def _correlate(xpad, u, bias, out_size):
    """y (N, C_out, OH, OW) from a padded input with >= 2 TH + 2 rows and >= 2 TW + 2 columns
    and transformed weights u (16, C_out, C)."""
    xp = namespace(xpad, u)
    n, c_in = xpad.shape[:2]
    c_out = u.shape[1]
    oh, ow = out_size
    th, tw = _tiles(oh), _tiles(ow)
    y = xp.empty((n, c_out, oh, ow), dtype=xpad.dtype, device=device(xpad))
    b4 = xp.reshape(bias, (1, c_out, 1)) if bias is not None else None
    fast = _fast(xpad)

    def band(t0, t1):
        size = (t1 - t0) * (tw + 1)
        v = transformed_input(xpad, t0, t1 - t0, tw)                       # (16, N, C, L)
        m = scratch((16, n, c_out, size), xpad.dtype, xpad, slot=("winograd", 2))
        if n == 1:                                                         # 16 GEMMs (C_out, C) @ (C, L)
            m = xp.reshape(matmul(u, v[:, 0, ...], xp.reshape(m, (16, c_out, size))), (16, n, c_out, size))
        else:
            m = matmul(u[:, None, :, :], v, m)
        if b4 is not None:            # A^T's column 1 is (1, 1): M[1, 1] feeds all four outputs of a tile
            if fast:
                m[5] += b4
            else:
                m[5, ...] = m[5, ...] + b4
        _output_transform(m, y, t0, t1 - t0, tw)

    parallel_for(band, _band_rows(th, tw, 16 * (c_in + c_out) * n, xpad), xpad)
    return y


def winograd_correlate(xpad, weight, bias, out_size):
    """y = weight (*) xpad for an already padded input, like :func:`.bands.correlate` with
    stride and dilation 1: xpad (N, C, >= OH + 2, >= OW + 2), weight (C_out, C, 3, 3),
    bias (C_out,) or None -> y (N, C_out, OH, OW)."""
    th, tw = _tiles(out_size[0]), _tiles(out_size[1])
    xpad = _extended(xpad, (2 * th + 2, 2 * tw + 2), ("winograd", "ext"))
    return _correlate(xpad, transform_weight(weight), bias, out_size)


def conv2d(x, weight, bias, s, p, d):
    """The Winograd plan for validated arguments (pairs s, p, d with :func:`applies`): ``(y, ConvCache)``."""
    (h, w) = x.shape[2:]
    oh, ow = h + 2 * p[0] - 2, w + 2 * p[1] - 2
    xpad = pad2d(x, p, size=(2 * _tiles(oh) + 2, 2 * _tiles(ow) + 2), slot=2)
    y = _correlate(xpad, transform_weight(weight), bias, (oh, ow))
    return y, ConvCache(x, weight, bias is not None, s, p, d)


def input_gradient(dy, weight, p, x_size):
    """dx (N, C, H, W): the 3x3 convolution of dy padded by 2 - P with the flipped kernel,
    channel axes swapped (weight[o, c, 2 - ky, 2 - kx] as (C, C_out, 3, 3))."""
    (h, w) = x_size
    flipped = bands.flipped_kernel(weight)
    size = (2 * _tiles(h) + 2, 2 * _tiles(w) + 2)
    dypad = pad2d(dy, (2 - p[0], 2 - p[1]), size=size, slot=3)
    return _correlate(dypad, transform_weight(flipped), None, (h, w))


def transformed_dy(dy, t0, nt, tw):
    """(A S) e (A S)^T of a band's 2x2 dy tiles e: dy (N, C_out, >= 2(t0 + nt), >= 2 TW) ->
    (16, N, C_out, L), L = nt (TW + 1), each row's extra tile zero (it meets finite
    values of V in the weight-gradient GEMM).

    A S = [[1, 0], [1, 1], [1, -1], [0, 1]]: rows/columns 0 and 3 are dy's four stride-2
    phases as they are, rows/columns 1 and 2 their sums and differences."""
    xp = namespace(dy)
    fast = _fast(dy)
    n, c_out = dy.shape[:2]
    wt = tw + 1
    size = nt * wt
    r = 2 * t0
    src = [[dy[:, :, r + pr:r + pr + 2 * nt - 1:2, pc:pc + 2 * tw - 1:2] for pc in range(2)] for pr in range(2)]
    if fast:
        e = scratch((4, 4, n * c_out * size), dy.dtype, dy, slot=("winograd", 6))
        e[0::3, 0::3] = 0
        for pr in range(2):
            for pc in range(2):
                xp.reshape(e[3 * pr, 3 * pc], (n, c_out, nt, wt))[..., :tw] = src[pr][pc]
        xp.add(e[0::3, 0], e[0::3, 3], out=e[0::3, 1])
        xp.subtract(e[0::3, 0], e[0::3, 3], out=e[0::3, 2])
        xp.add(e[0], e[3], out=e[1])
        xp.subtract(e[0], e[3], out=e[2])
    else:
        zero = xp.zeros((n, c_out, nt, 1), dtype=dy.dtype, device=device(dy))
        q = [[xp.reshape(xp.concat((src[pr][pc], zero), axis=-1), (n * c_out * size,)) for pc in range(2)]
             for pr in range(2)]
        cols = [xp.stack((q[pr][0], q[pr][0] + q[pr][1], q[pr][0] - q[pr][1], q[pr][1])) for pr in range(2)]
        e = xp.stack((cols[0], cols[0] + cols[1], cols[0] - cols[1], cols[1]))
    return xp.reshape(e, (16, n, c_out, size))


def weight_gradient(dy, x, p):
    """dweight (C_out, C, 3, 3) of the convolution of x (N, C, H, W) padded by P, for dy (N, C_out, OH, OW)."""
    th, tw = _tiles(dy.shape[2]), _tiles(dy.shape[3])
    return weight_gradient_padded(pad2d(x, p, size=(2 * th + 2, 2 * tw + 2), slot=2), dy)


def weight_gradient_padded(xpad, dy):
    """dweight (C_out, C, 3, 3) = (S G)^T [sum over tiles of (A S e S A^T) @ V^T] (S G) for an
    already padded input xpad (N, C, >= OH + 2, >= OW + 2) and dy (N, C_out, OH, OW): the
    weight-gradient counterpart of :func:`winograd_correlate` (what
    ``bands.backward_bands(xpad, dy, weight, (1, 1), (1, 1), None)`` gives, reshaped)."""
    xp = namespace(dy, xpad)
    n, c_out, oh, ow = dy.shape
    c_in = xpad.shape[1]
    th, tw = _tiles(oh), _tiles(ow)
    xpad = _extended(xpad, (2 * th + 2, 2 * tw + 2), ("winograd", "ext"))
    dyx = _extended(dy, (2 * th, 2 * tw), ("winograd", "dy"))

    def band(t0, t1):
        v = transformed_input(xpad, t0, t1 - t0, tw)                       # (16, N, C, L)
        e = transformed_dy(dyx, t0, t1 - t0, tw)                           # (16, N, C_out, L)
        share = e @ xp.matrix_transpose(v)                                 # (16, N, C_out, C)
        return share[:, 0, ...] if n == 1 else xp.sum(share, axis=1)

    shares = parallel_for(band, _band_rows(th, tw, 16 * (c_in + c_out) * n, dy), dy)
    du = shares[0]
    for share in shares[1:]:          # in band order: the result does not depend on thread timing
        du = du + share
    return inverse_transform_weight_gradient(du)


def conv2d_backward(dy, cache, need_dx=True, need_dweight=True):
    """Gradients of the Winograd plan; equals :func:`..reference.conv2d_backward`."""
    x, weight, has_bias, s, p, d = cache
    xp = namespace(dy, weight)
    dbias = xp.sum(dy, axis=(0, 2, 3)) if has_bias else None
    dweight = weight_gradient(dy, x, p) if need_dweight else None
    dx = input_gradient(dy, weight, p, x.shape[2:]) if need_dx else None
    return dx, dweight, dbias
