"""Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions: equals :func:`..reference.conv2d`
and :func:`..reference.conv2d_backward` (kernel 3x3, stride 1, dilation 1, padding <= 2).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016, with the
interpolation points 0, 1, -1, 2, -2 and infinity. The padded input is cut into 6x6
tiles d at stride 4 (neighbouring tiles overlap by two rows/columns); each tile gives a
4x4 block of the output:

    U = G g G^T        (6x6 per (o, c): the transformed 3x3 kernel g = weight[o, c])
    V = B^T d B        (6x6 per (c, n, tile))
    M[xi, nu] = U[xi, nu] @ V[xi, nu]       36 GEMMs (C_out x C) @ (C x N tiles)
    Y = A^T M A        (4x4 per (o, n, tile))

    B^T = [[4,  0, -5,  0, 1, 0],      G = [[ 1/4,     0,    0],    A^T = [[1, 1,  1, 1,  1, 0],
           [0, -4, -4,  1, 1, 0],           [-1/6, -1/6, -1/6],            [0, 1, -1, 2, -2, 0],
           [0,  4, -4, -1, 1, 0],           [-1/6,  1/6, -1/6],            [0, 1,  1, 4,  4, 0],
           [0, -2, -1,  2, 1, 0],           [1/24, 1/12,  1/6],            [0, 1, -1, 8, -8, 1]]
           [0,  2, -1, -2, 1, 0],           [1/24, -1/12, 1/6],
           [0,  4,  0, -5, 0, 1]]           [   0,    0,    1]]

Tiles: TH = ceil(OH / 4) by TW = ceil(OW / 4); the input is zero-extended past its
padding to 4 TH + 2 rows and 4 TW + 2 columns, and the outputs those zeros would feed
are dropped.

Backward:

* dx is the stride-1 3x3 convolution of dy padded by 2 - P with the flipped,
  channel-swapped kernel (as in :mod:`.winograd`, the F(2x2, 3x3) plan), so it runs
  the forward.
* dweight has no Winograd F(4x4, 3x3) form here: the adjoint, dU[xi, nu] = sum over
  tiles of (A e A^T)[xi, nu] @ V[xi, nu]^T, runs GEMMs whose inner axis is a band's
  tiles (a few dozen) with a 36 x C_out x C result per band, measured 1.3-1.5x slower
  than im2col at 128 channels. It comes from the F(2x2, 3x3) plan at 128 channels and
  more (:func:`.winograd.weight_gradient`, measured 1.1-1.3x faster than im2col at
  57x57) and from the im2col bands below (:func:`.bands.backward_bands`).

Every transform is a product with one of these small matrices on both tile axes,
:func:`two_sided`: two GEMMs whose inner axis is the 6 taps, each streaming the band
once. That keeps the plan short and backend-neutral: in NumPy each is one BLAS call
over the band.

Why faster than the im2col plan, also at 64 channels where F(2x2, 3x3) does not pay: a
4x4 output block costs 36 multiplies per (o, c) instead of 144, 4x fewer GEMM flops,
and a tile holds 36 values per 16 outputs (2.25 per output; F(2x2, 3x3) 4, im2col 9),
so the memory-bound transforms are lighter too. What it costs is float32 rounding: the
transforms mix up to 6 terms with weights up to 8 and 1/24, so the error is about 10x
the im2col plan's (``tests/test_winograd4.py`` reports 2e-6 .. 5e-6 of the output scale
on FCN-like activations against 3e-7 .. 4e-7 for im2col, and 2e-7 .. 5e-7 for F(2x2,
3x3)); float64 results equal the reference's to 1e-10.

Work is done in bands of tile rows sized for a core's cache, on all cores
(:func:`minifcn.backend.parallel_for`), with the transforms' buffers reused
(:func:`minifcn.backend.scratch`).
"""
from __future__ import annotations

from ...backend import as_strided, device, element_strides, is_numpy, matmul, namespace, parallel_for, \
    row_bands, scratch
from .. import reference
from . import bands, winograd
from ..im2col import pad2d

_B_T = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
        (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))
_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))
_A_T = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))

M, R, T = 4, 3, 6                # output block, kernel, tile: T = M + R - 1
BIAS_ENTRY = 1 * T + 1           # A^T's column 1 is all ones: M[1, 1] feeds all 16 outputs of a tile

MIN_BAND_TILES = 32              # fewer tiles per band leave the 36 GEMMs too thin
MIN_BANDS = 4                    # bands per call on NumPy, whatever the core count
BAND_SCALE = 2                   # bands of BAND_SCALE x minifcn.backend's band elements


class ConvCache(reference.ConvCache):
    """The F(4x4, 3x3) plan keeps the input (its tiles are transformed again in backward):
    the reference cache's fields, its own type so that backward runs this plan."""

    __slots__ = ()


# Measured on the 2-core machine (float32, same process, interleaved with the im2col
# bands): forward and dx 1.3-1.6x faster with 64-256 channels at 57x57 and 114x114; even
# at 32 channels, slower at 16; slower at 29x29 and below (conv5 of FCN), where a band
# has too few tiles for its 36 GEMMs.
MIN_CHANNELS = 64
MIN_OUTPUT = 48                  # output rows and columns, both


def applies(w_shape, s, p, d):
    """Whether this plan computes the convolution: the layers of F(2x2, 3x3), 3x3 kernel,
    stride 1, dilation 1, padding <= 2 (:func:`.winograd.applies`)."""
    return winograd.applies(w_shape, s, p, d)


def pays(x, w_shape, s, p, d):
    """Whether the dispatcher should take this plan: it :func:`applies`, x is a NumPy array
    (measured on CPUs only), C_in and C_out are at least MIN_CHANNELS and the output is at
    least MIN_OUTPUT square."""
    oh, ow = x.shape[2] + 2 * p[0] - 2, x.shape[3] + 2 * p[1] - 2
    return (applies(w_shape, s, p, d) and is_numpy(x) and min(w_shape[0], w_shape[1]) >= MIN_CHANNELS
            and min(oh, ow) >= MIN_OUTPUT)


def _tiles(size):
    return -(-size // M)


def _matrix(rows, like):
    xp = namespace(like)
    return xp.asarray(rows, dtype=like.dtype, device=device(like))


def two_sided(mat, t, out=None):
    """``mat @ t @ mat^T`` on the two leading axes of ``t``: t (K, K, X) -> (P, P, X) for
    mat (P, K), as two GEMMs with inner axis K (6 taps, 3 for a kernel); ``out`` (P, P, X)
    is written on NumPy.

    First rows: r[a, j] = sum_i mat[a, i] t[i, j] (one GEMM (P, K) @ (K, K X)); then
    columns: out[a, b] = sum_j mat[b, j] r[a, j] (P GEMMs (P, K) @ (K, X))."""
    xp = namespace(t)
    k, x = t.shape[0], t.shape[2]
    p = mat.shape[0]
    rows = xp.reshape(mat @ xp.reshape(t, (k, k * x)), (p, k, x))
    return matmul(mat[None, ...], rows, out)


def transform_weight(weight):
    """U = G g G^T for every (o, c): weight (C_out, C, 3, 3) -> (36, C_out, C), row-major (xi, nu)."""
    xp = namespace(weight)
    c_out, c_in = weight.shape[:2]
    g = xp.reshape(xp.permute_dims(weight, (2, 3, 0, 1)), (R, R, c_out * c_in))
    u, = parallel_for(lambda: two_sided(_matrix(_G, weight), g), [()], weight)
    return xp.reshape(u, (T * T, c_out, c_in))


def _taps(a, r0, nt, tw, size, stride, slot):
    """t[i, j, c, n, y, x] = a[n, c, r0 + stride y + i, stride x + j] for i, j < size,
    y < nt, x < tw: the (size x size) tiles at ``stride`` of a band, as (size, size, C, N nt tw)."""
    xp = namespace(a)
    n, c = a.shape[:2]
    shape = (size, size, c, n, nt, tw)
    es = element_strides(a)
    view = None
    if es is not None:
        view = as_strided(a[:, :, r0:, :], shape, (es[2], es[3], es[1], es[0], stride * es[2], stride * es[3]))
    if view is not None:
        t = scratch(shape, a.dtype, a, slot=slot)
        t[...] = view
    else:
        t = xp.stack([xp.stack([xp.permute_dims(a[:, :, r0 + i:r0 + i + stride * (nt - 1) + 1:stride,
                                                   j:j + stride * (tw - 1) + 1:stride], (1, 0, 2, 3))
                                for j in range(size)]) for i in range(size)])
    return xp.reshape(t, (size, size, c * n * nt * tw))


def transformed_input(xpad, t0, nt, tw):
    """V = B^T d B of a band's tiles: xpad (N, C, >= 4(t0 + nt) + 2, >= 4 TW + 2) ->
    (36, C, N nt TW), in this thread's reused buffers."""
    xp = namespace(xpad)
    n, c = xpad.shape[:2]
    d = _taps(xpad, M * t0, nt, tw, T, M, ("winograd4", 0))
    v = two_sided(_matrix(_B_T, xpad), d, scratch(d.shape, xpad.dtype, xpad, slot=("winograd4", 1)))
    return xp.reshape(v, (T * T, c, n * nt * tw))


def _correlate(xpad, u, bias, out_size):
    """y (N, C_out, OH, OW) from a padded input with >= 4 TH + 2 rows and >= 4 TW + 2 columns
    and transformed weights u (36, C_out, C)."""
    xp = namespace(xpad, u)
    n, c_in = xpad.shape[:2]
    c_out = u.shape[1]
    oh, ow = out_size
    th, tw = _tiles(oh), _tiles(ow)
    y = xp.empty((n, c_out, oh, ow), dtype=xpad.dtype, device=device(xpad))
    b2 = xp.reshape(bias, (c_out, 1)) if bias is not None else None
    a_t = _matrix(_A_T, xpad)

    def band(t0, t1):
        nt = t1 - t0
        v = transformed_input(xpad, t0, nt, tw)                             # (36, C, N nt TW)
        m = matmul(u, v, scratch((T * T, c_out, n * nt * tw), xpad.dtype, xpad, slot=("winograd4", 2)))
        if b2 is not None:
            m[BIAS_ENTRY, ...] = m[BIAS_ENTRY, ...] + b2
        blocks = two_sided(a_t, xp.reshape(m, (T, T, c_out * n * nt * tw)),
                           scratch((M, M, c_out * n * nt * tw), xpad.dtype, xpad, slot=("winograd4", 3)))
        # blocks[a, b, o, n, y, x] is output pixel (4 (t0 + y) + a, 4 x + b) of (n, o)
        blocks = xp.permute_dims(xp.reshape(blocks, (M, M, c_out, n, nt, tw)), (3, 2, 4, 0, 5, 1))
        rows = min(M * nt, oh - M * t0)
        y[:, :, M * t0:M * t0 + rows, :] = xp.reshape(blocks, (n, c_out, M * nt, M * tw))[:, :, :rows, :ow]

    parallel_for(band, _band_rows(th, tw, T * T * (c_in + c_out) * n, xpad), xpad)
    return y


def _band_rows(th, tw, per_tile, like):
    """Bands of tile rows: about BAND_SCALE x the backend's band elements each, at least
    MIN_BAND_TILES tiles; on NumPy at least MIN_BANDS bands. The split depends on the
    sizes only, never on the core count, so results do not either."""
    bands = row_bands(th, per_tile * tw // max(1, BAND_SCALE), like, -(-MIN_BAND_TILES // tw))
    if is_numpy(like) and len(bands) < MIN_BANDS:
        step = -(-th // MIN_BANDS)
        bands = [(r, min(r + step, th)) for r in range(0, th, step)]
    return bands


def correlate(xpad, weight, bias, out_size):
    """y = weight (*) xpad for an already padded input, like :func:`.bands.correlate` with
    stride and dilation 1: xpad (N, C, >= OH + 2, >= OW + 2), weight (C_out, C, 3, 3),
    bias (C_out,) or None -> y (N, C_out, OH, OW)."""
    hp, wp = xpad.shape[2:]
    size = (M * _tiles(out_size[0]) + 2, M * _tiles(out_size[1]) + 2)
    if hp < size[0] or wp < size[1]:
        xpad = pad2d(xpad, 0, size=(max(hp, size[0]), max(wp, size[1])), slot=("winograd4", "ext"))
    return _correlate(xpad, transform_weight(weight), bias, out_size)


def conv2d(x, weight, bias, s, p, d):
    """The F(4x4, 3x3) plan for validated arguments (pairs s, p, d with :func:`applies`): ``(y, ConvCache)``."""
    (h, w) = x.shape[2:]
    oh, ow = h + 2 * p[0] - 2, w + 2 * p[1] - 2
    xpad = pad2d(x, p, size=(M * _tiles(oh) + 2, M * _tiles(ow) + 2), slot=2)
    y = _correlate(xpad, transform_weight(weight), bias, (oh, ow))
    return y, ConvCache(x, weight, bias is not None, s, p, d)


def input_gradient(dy, weight, p, x_size):
    """dx (N, C, H, W): the 3x3 convolution of dy padded by 2 - P with the flipped kernel,
    channel axes swapped (weight[o, c, 2 - ky, 2 - kx] as (C, C_out, 3, 3))."""
    (h, w) = x_size
    flipped = bands.flipped_kernel(weight)
    dypad = pad2d(dy, (2 - p[0], 2 - p[1]), size=(M * _tiles(h) + 2, M * _tiles(w) + 2), slot=3)
    return _correlate(dypad, transform_weight(flipped), None, (h, w))


def conv2d_backward(dy, cache, need_dx=True, need_dweight=True):
    """Gradients of the F(4x4, 3x3) plan; equals :func:`..reference.conv2d_backward`."""
    x, weight, has_bias, s, p, d = cache
    xp = namespace(dy, weight)
    dbias = xp.sum(dy, axis=(0, 2, 3)) if has_bias else None
    dweight = None
    if need_dweight and min(weight.shape[:2]) >= winograd.MIN_CHANNELS:
        dweight = winograd.weight_gradient(dy, x, p)
    elif need_dweight:
        dweight = xp.reshape(bands.backward_bands(pad2d(x, p, slot=2), dy, weight, s, d, None), weight.shape)
    dx = input_gradient(dy, weight, p, x.shape[2:]) if need_dx else None
    return dx, dweight, dbias
