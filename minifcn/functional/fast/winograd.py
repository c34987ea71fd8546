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
  (A dY A^T)[xi, nu] @ V[xi, nu]^T, then dg = G^T dU G. Both sides of the GEMM are
  transformed tiles (dy tiles 2x2 -> 4x4), the sum over tiles is the GEMM's inner axis.

Why faster: a 2x2 output block costs 16 multiplies per (o, c) instead of 36, 2.25x
fewer, and the GEMM's inner axis is C rather than 9C (the transformed tiles take 16 values
per 4 outputs where im2col takes 36). What it costs: the transforms (about 50 adds and
copies per tile and channel, memory-bound) -- they pay when C_in and C_out are large
enough for the GEMM to dominate; and float32 rounding: the transforms add and subtract
up to 9 terms, so the error is a small multiple of the direct sum's (measured in
tests/test_winograd.py: about 2e-7 relative to the output scale).

Work is done in bands of tile rows sized for a core's cache, on all cores
(:func:`minifcn.backend.parallel_for`), each band's V, M and transform buffers reused
(:func:`minifcn.backend.scratch`). The code is array API only; on NumPy/CuPy the adds
write into their buffers directly (ufunc ``out=``), elsewhere they allocate.
"""
from __future__ import annotations

from typing import NamedTuple

from ...backend import device, is_cupy, is_numpy, matmul, namespace, parallel_for, row_bands, scratch, threads_for
from ..im2col import pad2d

_B_T = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
# G with its last row negated: the weight gradient transforms dy with A S instead of A
# (S = diag(1, 1, 1, -1)), which turns two of the four row combinations into plain
# copies, and undoes S in the inverse transform (S G)^T dU (S G).
_G_SIGNED = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, -1.0))
_A_T = ((1, 1, 1, 0), (0, 1, -1, -1))

MIN_BAND_TILES = 256     # fewer tiles per band leave the 16 GEMMs too thin
BAND_SCALE = 1           # band size = BAND_SCALE * minifcn.backend's band elements


class ConvCache(NamedTuple):
    """The Winograd plan keeps the input (its tiles are transformed again in backward)."""

    x: object
    weight: object
    has_bias: bool
    stride: tuple
    padding: tuple
    dilation: tuple


def applies(w_shape, s, p, d):
    """Whether this plan computes the convolution: 3x3 kernel, stride 1, dilation 1, padding <= 2."""
    return (tuple(w_shape[2:]) == (3, 3) and tuple(s) == (1, 1) and tuple(d) == (1, 1)
            and 0 <= p[0] <= 2 and 0 <= p[1] <= 2)


def _fast(x):
    return is_numpy(x) or is_cupy(x)


def _put(fast, op, a, b, out, k):
    """``out[k] = op(a, b)``, written in place on NumPy/CuPy."""
    if fast:
        op(a, b, out=out[k])
    else:
        out[k, ...] = op(a, b)


def _tiles(size):
    return -(-size // 2)


def transform_weight(weight):
    """U = G g G^T for every (o, c): weight (C_out, C, 3, 3) -> (16, C_out, C), row-major (xi, nu)."""
    xp = namespace(weight)
    c_out, c_in = weight.shape[:2]
    g = xp.asarray(_G, dtype=weight.dtype, device=device(weight))
    u = g @ weight @ xp.matrix_transpose(g)                              # (C_out, C, 4, 4)
    return xp.reshape(xp.permute_dims(u, (2, 3, 0, 1)), (16, c_out, c_in))


def inverse_transform_weight_gradient(du):
    """dg = (S G)^T dU (S G): du (16, C_out, C) -> dweight (C_out, C, 3, 3)."""
    xp = namespace(du)
    c_out, c_in = du.shape[1:]
    g = xp.asarray(_G_SIGNED, dtype=du.dtype, device=device(du))
    du = xp.permute_dims(xp.reshape(du, (4, 4, c_out, c_in)), (2, 3, 0, 1))     # (C_out, C, 4, 4)
    return xp.matrix_transpose(g) @ du @ g


def _input_transform(src, t0, nt, tw, out, rows):
    """V = B^T d B of the tiles in tile rows t0 .. t0 + nt - 1 of ``src`` (N, C, >= 2(t0 + nt) + 2,
    >= 2 TW + 2), into ``out`` (16, N, C, nt, TW); ``rows`` (4, N, C, nt, 2 TW + 2) holds the row pass."""
    xp = namespace(src)
    fast = _fast(src)
    r, w2 = 2 * t0, 2 * tw + 2
    d = [src[:, :, r + i:r + i + 2 * nt - 1:2, :w2] for i in range(4)]
    _put(fast, xp.subtract, d[0], d[2], rows, 0)
    _put(fast, xp.add, d[1], d[2], rows, 1)
    _put(fast, xp.subtract, d[2], d[1], rows, 2)
    _put(fast, xp.subtract, d[1], d[3], rows, 3)
    for i in range(4):
        c = [rows[i, :, :, :, j:j + 2 * tw - 1:2] for j in range(4)]
        _put(fast, xp.subtract, c[0], c[2], out, 4 * i)
        _put(fast, xp.add, c[1], c[2], out, 4 * i + 1)
        _put(fast, xp.subtract, c[2], c[1], out, 4 * i + 2)
        _put(fast, xp.subtract, c[1], c[3], out, 4 * i + 3)


def _output_transform(m, y, t0, nt, tw, rows):
    """y[:, :, 2 t0 : 2 (t0 + nt), :] = A^T M A, dropping rows/columns past y's (OH, OW).

    m: (16, N, C_out, nt, TW); ``rows`` (2, 4, N, C_out, nt, TW) holds the row pass."""
    xp = namespace(m)
    fast = _fast(m)
    oh, ow = y.shape[2:]
    for j in range(4):
        if fast:
            xp.add(m[j], m[4 + j], out=rows[0, j])
            rows[0, j] += m[8 + j]
            xp.subtract(m[4 + j], m[8 + j], out=rows[1, j])
            rows[1, j] -= m[12 + j]
        else:
            rows[0, j, ...] = m[j] + m[4 + j] + m[8 + j]
            rows[1, j, ...] = m[4 + j] - m[8 + j] - m[12 + j]
    for a in range(2):
        ra = min(nt, (oh - a - 2 * t0 + 1) // 2)        # output rows 2(t0 + ty) + a that exist
        if ra < 1:
            continue
        z = [rows[a, j, :, :, :ra, :] for j in range(4)]
        for b in range(2):
            cb = (ow - b + 1) // 2
            dst = (slice(None), slice(None), slice(2 * t0 + a, 2 * t0 + a + 2 * ra - 1, 2),
                   slice(b, b + 2 * cb - 1, 2))
            first, second, third = (z[0], z[1], z[2]) if b == 0 else (z[1], z[2], z[3])
            op = xp.add if b == 0 else xp.subtract
            if fast:
                out = y[dst]
                op(first[..., :cb], second[..., :cb], out=out)
                if b == 0:
                    out += third[..., :cb]
                else:
                    out -= third[..., :cb]
            else:
                y[dst] = op(op(first[..., :cb], second[..., :cb]), third[..., :cb])


def _band_rows(th, tw, per_tile, like, min_tiles=None):
    """Bands of tile rows: about BAND_SCALE * the backend's band elements each (``per_tile``
    elements per tile), at least MIN_BAND_TILES tiles, but a band for every thread."""
    min_tiles = MIN_BAND_TILES if min_tiles is None else min_tiles
    min_rows = min(-(-min_tiles // tw), -(-th // threads_for(like)))
    return row_bands(th, per_tile * tw // max(1, BAND_SCALE), like, min_rows)


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
    ub = u[:, None, :, :] if n > 1 else u
    b4 = xp.reshape(bias, (1, c_out, 1, 1)) if bias is not None else None
    fast = _fast(xpad)

    def band(t0, t1):
        nt = t1 - t0
        rows = scratch((4, n, c_in, nt, 2 * tw + 2), xpad.dtype, xpad, slot=("winograd", 0))
        v = scratch((16, n, c_in, nt, tw), xpad.dtype, xpad, slot=("winograd", 1))
        _input_transform(xpad, t0, nt, tw, v, rows)
        m = scratch((16, n, c_out, nt * tw), xpad.dtype, xpad, slot=("winograd", 2))
        m = matmul(ub, xp.reshape(v, (16, n, c_in, nt * tw)) if n > 1 else xp.reshape(v, (16, c_in, nt * tw)),
                   m if n > 1 else xp.reshape(m, (16, c_out, nt * tw)))
        m = xp.reshape(m, (16, n, c_out, nt, tw))
        if b4 is not None:            # A^T column 1 is (1, 1): M[1, 1] feeds all four outputs of a tile
            if fast:
                m[5] += b4
            else:
                m[5, ...] = m[5] + b4
        zrows = scratch((2, 4, n, c_out, nt, tw), xpad.dtype, xpad, slot=("winograd", 3))
        _output_transform(m, y, t0, nt, tw, zrows)

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
    xp = namespace(dy, weight)
    (h, w) = x_size
    flipped = xp.permute_dims(xp.flip(weight, axis=(2, 3)), (1, 0, 2, 3))
    size = (2 * _tiles(h) + 2, 2 * _tiles(w) + 2)
    dypad = pad2d(dy, (2 - p[0], 2 - p[1]), size=size, slot=3)
    return _correlate(dypad, transform_weight(flipped), None, (h, w))


def _dy_transform(dy, t0, nt, tw, out, rows):
    """(A S) e (A S)^T of the 2x2 dy tiles in tile rows t0 .. t0 + nt - 1 of ``dy``
    (N, C_out, >= 2(t0 + nt), >= 2 TW), into ``out`` (16, N, C_out, nt, TW); rows (2, N, C_out, nt, 2 TW).

    A S = [[1, 0], [1, 1], [1, -1], [0, 1]]: the first and last combinations are copies."""
    xp = namespace(dy)
    fast = _fast(dy)
    r, w2 = 2 * t0, 2 * tw
    e = [dy[:, :, r + i:r + i + 2 * nt - 1:2, :w2] for i in range(2)]
    _put(fast, xp.add, e[0], e[1], rows, 0)
    _put(fast, xp.subtract, e[0], e[1], rows, 1)
    for i, src in enumerate((e[0], rows[0], rows[1], e[1])):
        c = [src[..., j:j + 2 * tw - 1:2] for j in range(2)]
        out[4 * i, ...] = c[0]
        _put(fast, xp.add, c[0], c[1], out, 4 * i + 1)
        _put(fast, xp.subtract, c[0], c[1], out, 4 * i + 2)
        out[4 * i + 3, ...] = c[1]


def weight_gradient(dy, x, p):
    """dweight (C_out, C, 3, 3) = sum over tiles of (A S dY S A^T) @ V^T, inverse-transformed."""
    xp = namespace(dy, x)
    n, c_out, oh, ow = dy.shape
    c_in = x.shape[1]
    th, tw = _tiles(oh), _tiles(ow)
    xpad = pad2d(x, p, size=(2 * th + 2, 2 * tw + 2), slot=2)
    dyx = _extended(dy, (2 * th, 2 * tw), ("winograd", "dy"))

    def band(t0, t1):
        nt = t1 - t0
        rows = scratch((4, n, c_in, nt, 2 * tw + 2), x.dtype, x, slot=("winograd", 0))
        v = scratch((16, n, c_in, nt, tw), x.dtype, x, slot=("winograd", 1))
        _input_transform(xpad, t0, nt, tw, v, rows)
        drows = scratch((2, n, c_out, nt, 2 * tw), x.dtype, x, slot=("winograd", 3))
        e = scratch((16, n, c_out, nt, tw), x.dtype, x, slot=("winograd", 2))
        _dy_transform(dyx, t0, nt, tw, e, drows)
        v2 = xp.reshape(v, (16, n, c_in, nt * tw))
        e2 = xp.reshape(e, (16, n, c_out, nt * tw))
        share = e2 @ xp.matrix_transpose(v2)                               # (16, N, C_out, C)
        return share[:, 0, ...] if n == 1 else xp.sum(share, axis=1)

    shares = parallel_for(band, _band_rows(th, tw, 16 * (c_in + c_out) * n, x), x)
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
