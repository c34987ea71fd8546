"""Fully connected CRF post-processing: exact mean field and a permutohedral lattice.

Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
Potentials", NIPS 2011, connect every pair of pixels i, j of an image with the kernel

    k(i, j) = w_appearance * exp(-|p_i - p_j|^2 / (2 theta_alpha^2)
                                 -|I_i - I_j|^2 / (2 theta_beta^2))
            + w_smooth     * exp(-|p_i - p_j|^2 / (2 theta_gamma^2))

(p = (row, column) in pixels, I = RGB colour in 0..255) and approximate the posterior by
mean field. With unary -log probs_i(l) and the Potts compatibility mu(l, l') = [l != l']
one round of mean field is

    Q_i(l) = softmax_l( log probs_i(l) + sum_{j != i} k(i, j) Q_j(l) ),        (1)

started from Q = probs. The Potts message is really -sum_{j != i} k(i, j) sum_{l' != l}
Q_j(l') = sum_{j != i} k(i, j) Q_j(l) - sum_{j != i} k(i, j): the last term does not
depend on l and cancels in the softmax, so (1) is the same update.

The message m_i(l) = sum_{j != i} k(i, j) Q_j(l) is a Gaussian filter of Q over all
pixels. Two ways to compute it live here:

``method="exact"``
    The plain O((HW)^2) double sum, a block of rows of the kernel matrix at a time so
    memory stays bounded (:func:`message_exact`). The reference, for small images.

``method="lattice"``
    The appearance term is a 5-D Gaussian filter in the feature space
    f = (row / theta_alpha, col / theta_alpha, R / theta_beta, G / theta_beta,
    B / theta_beta); it runs on the permutohedral lattice of Adams, Baek & Davis,
    "Fast High-Dimensional Filtering Using the Permutohedral Lattice", Eurographics
    2010 (:class:`PermutohedralLattice`): each pixel is embedded in the hyperplane
    sum x = 0 of R^6, splatted onto the d + 1 = 6 vertices of its enclosing simplex with
    barycentric weights, the lattice values are blurred with [1 2 1] / 4 along each of
    the d + 1 lattice directions, and sliced back with the same weights. The smoothness
    term is separable, exp(-dr^2 / 2t^2) * exp(-dc^2 / 2t^2), so it is computed exactly
    as G_H @ Q @ G_W with two Gaussian matrices, each multiplied by its band (weights
    below 1e-14 dropped; :func:`smooth_separable`).

The lattice is built once per image on the host with NumPy (finding each pixel's
simplex and hashing the vertex keys with ``np.unique``); its index and weight tables
are then copied to the array backend, and every mean-field round is gathers
(``take``), a segment sum and element-wise array code on that backend, with no host
synchronisation. With NumPy, groups of classes are filtered side by side on the CPU
cores.

Normalisation of the lattice. The reference C++ implementations normalise the filter
(dividing by the filter of ones), which changes the model; here the lattice output is
scaled to approximate the *unnormalised* Gaussian sum that (1) asks for. With features
scaled by s = sqrt(2/3) (d + 1) (Adams et al.'s scale) the splat, blur and slice
together have exactly the second moment of exp(-|f|^2 / 2) (blur variance
(d+1)^2 / (2 s^2) per axis, plus (d+1)^2 / (12 s^2) from each of splat and slice).
The [1 2 1] / 4 blur and the barycentric splat/slice preserve mass, so the lattice
kernel integrates to the volume per lattice point, (d+1)^(d - 1/2) / s^d in feature
units, while the Gaussian integrates to (2 pi)^(d/2). Multiplying the lattice output by
their ratio, (4 pi / 3)^(d/2) sqrt(d + 1), makes the two agree in mass and width
(other scales s do worse against the exact sum). Mass blurred through lattice points
that no pixel touched is kept by "ghost" points (see :class:`PermutohedralLattice`),
and j = i is left out by subtracting the lattice's own weight from a pixel to itself
(0.68 to 1.42 by where the pixel sits in its simplex, against exp(0) = 1). What
remains is the [1 2 1] blur being only roughly Gaussian in shape: on 40 x 48 test
scenes the appearance sum is within 4 to 9 % (mean relative L1) of the exact one, and
mean field agrees with the exact path on over 99.6 % of the pixels (tests/test_crf.py).
"""
from __future__ import annotations

import math

import numpy as np

from minifcn import backend as bk

METHODS = ("lattice", "exact")
EXACT_CACHE_ELEMENTS = 1 << 24   # "exact" keeps the whole kernel matrix up to this many entries


# ----------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------
def _check_inputs(probs, image, iterations, thetas, method):
    """Validate the arguments of :func:`dense_crf`; return ``image`` as a host uint8 array."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(map(repr, METHODS))}")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    for name, value in thetas.items():
        if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not hasattr(probs, "shape") or len(probs.shape) != 3:
        raise ValueError(f"probs must be an array of shape (C, H, W), got shape "
                         f"{getattr(probs, 'shape', type(probs).__name__)}")
    xp = bk.namespace(probs)
    if not xp.isdtype(probs.dtype, "real floating"):
        raise ValueError(f"probs must be floating point probabilities of shape (C, H, W), got dtype {probs.dtype}")
    C, H, W = probs.shape
    if C < 1 or H < 1 or W < 1:
        raise ValueError(f"probs must have shape (C, H, W) with C, H, W >= 1, got {tuple(probs.shape)}")
    # one host read-back per call, before any iteration
    lowest = float(xp.min(probs))
    total = xp.sum(probs, axis=0)
    deviation = float(xp.max(xp.abs(total - 1.0)))
    if not lowest >= 0.0:
        raise ValueError(f"probs must be non-negative probabilities of shape (C, H, W), got a minimum of {lowest}")
    tolerance = 1e-3                       # float32 softmax output, even cast to float64, passes
    if not deviation <= tolerance:
        raise ValueError(f"probs must sum to 1 over axis 0 (shape (C, H, W) = {tuple(probs.shape)}); "
                         f"the largest deviation is {deviation:.3g} (tolerance {tolerance:g})")

    host = image if isinstance(image, np.ndarray) else bk.to_numpy(image) if hasattr(image, "shape") else None
    if host is None:
        raise ValueError(f"image must be a uint8 RGB array of shape (H, W, 3) = ({H}, {W}, 3), "
                         f"got {type(image).__name__}")
    if host.dtype != np.uint8:
        raise ValueError(f"image must be uint8 RGB of shape (H, W, 3) = ({H}, {W}, 3), got dtype {host.dtype}")
    if host.shape != (H, W, 3):
        raise ValueError(f"image must have shape (H, W, 3) = ({H}, {W}, 3) to match probs {tuple(probs.shape)}, "
                         f"got {tuple(host.shape)}")
    return host


# ----------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------
def positions(H, W):
    """Pixel positions (row, column) as a float64 array of shape (H * W, 2), row-major."""
    rows, cols = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=1)


def appearance_features(image, theta_alpha, theta_beta):
    """f (H * W, 5) = (row, col) / theta_alpha and (R, G, B) / theta_beta, float64 on the host.

    exp(-|f_i - f_j|^2 / 2) is then the appearance kernel without its weight.
    """
    H, W, _ = image.shape
    colours = image.reshape(H * W, 3).astype(np.float64)
    return np.concatenate([positions(H, W) / theta_alpha, colours / theta_beta], axis=1)


# ----------------------------------------------------------------------------
# The reference: exact dense sum
# ----------------------------------------------------------------------------
def kernel_blocks(feats_app, feats_smooth, w_appearance, w_smooth, block_rows=512):
    """Yield (i0, i1, K) with K (i1 - i0, N) = rows i0..i1 of the kernel matrix, diagonal 0.

    K[i, j] = w_appearance exp(-|fa_i - fa_j|^2 / 2) + w_smooth exp(-|fs_i - fs_j|^2 / 2)
    for j != i, where feats_app (N, 5) and feats_smooth (N, 2) are already divided by
    their thetas. Memory O(block_rows * N).
    """
    xp, dev = bk.namespace(feats_app), bk.device(feats_app)
    N = feats_app.shape[0]
    columns = xp.arange(N, device=dev)
    for i0 in range(0, N, block_rows):
        i1 = min(i0 + block_rows, N)
        d_app = _squared_distances(feats_app[i0:i1, :], feats_app)          # (B, N)
        d_smooth = _squared_distances(feats_smooth[i0:i1, :], feats_smooth)
        K = w_appearance * xp.exp(-0.5 * d_app) + w_smooth * xp.exp(-0.5 * d_smooth)
        self_pair = xp.arange(i0, i1, device=dev)[:, None] == columns[None, :]
        yield i0, i1, xp.where(self_pair, xp.zeros_like(K), K)                # j != i


def message_exact(Q, blocks):
    """m (N, C), m_i = sum_{j != i} k(i, j) Q_j: each block of kernel rows times Q (N, C).

    ``blocks`` is an iterable of :func:`kernel_blocks`' (i0, i1, K).
    """
    xp = bk.namespace(Q)
    return xp.concat([K @ Q for _, _, K in blocks], axis=0)


def _squared_distances(a, b):
    """|a_i - b_j|^2 (len(a), len(b)), one feature dimension at a time (no cancellation)."""
    total = None
    for k in range(a.shape[1]):
        diff = a[:, k:k + 1] - b[:, k][None, :]
        total = diff * diff if total is None else total + diff * diff
    return total


# ----------------------------------------------------------------------------
# The fast path: separable smoothness term
# ----------------------------------------------------------------------------
def gaussian_matrix(n, theta, like):
    """G (n, n), G[a, b] = exp(-(a - b)^2 / (2 theta^2)), dtype and device of ``like``."""
    xp = bk.namespace(like)
    idx = np.arange(n, dtype=np.float64)
    G = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / theta) ** 2)
    return xp.asarray(G, dtype=like.dtype, device=bk.device(like))


def smooth_separable(Q, G_rows, G_cols, radius=None, block=128):
    """sum_j exp(-|p_i - p_j|^2 / (2 theta^2)) Q_j over ALL j (self included).

    Q (C, H, W); G_rows (H, H) and G_cols (W, W) from :func:`gaussian_matrix`. The
    position Gaussian factorises over rows and columns, so the 2-D sum is
    G_rows @ Q[c] @ G_cols for every class c (both symmetric): O(C H W (H + W))
    instead of O(C (HW)^2). Each pass is a big matmul, (C H, W) @ (W, W) and, on the
    transposed planes, (C W, H) @ (H, H). With ``radius`` (pixels), entries of G
    further than that from the diagonal are treated as zero and each pass multiplies
    ``block`` output columns by their band only (:func:`_band_matmul`); radius
    8 theta drops weights below exp(-32) ~ 1e-14.
    """
    xp = bk.namespace(Q)
    C, H, W = Q.shape
    along_cols = xp.reshape(_band_matmul(xp.reshape(Q, (C * H, W)), G_cols, radius, block), (C, H, W))
    transposed = xp.reshape(xp.permute_dims(along_cols, (0, 2, 1)), (C * W, H))
    return xp.permute_dims(xp.reshape(_band_matmul(transposed, G_rows, radius, block), (C, W, H)), (0, 2, 1))


def _band_matmul(X, G, radius, block):
    """X (R, n) @ G (n, n) for a G that is zero more than ``radius`` off the diagonal:
    output columns c0..c1 need only rows c0 - radius .. c1 + radius of G."""
    n = G.shape[0]
    if radius is None or block + 2 * radius >= n:
        return X @ G
    xp = bk.namespace(X)
    parts = []
    for c0 in range(0, n, block):
        c1 = min(n, c0 + block)
        a, b = max(0, c0 - radius), min(n, c1 + radius)
        parts.append(X[:, a:b] @ G[a:b, c0:c1])
    return xp.concat(parts, axis=1)


# ----------------------------------------------------------------------------
# The fast path: permutohedral lattice
# ----------------------------------------------------------------------------
class PermutohedralLattice:
    """Gaussian filter sum_j exp(-|f_i - f_j|^2 / 2) v_j over N points with d-D features.

    Adams, Baek & Davis 2010. The lattice A*_d is the set of integer points x of R^(d+1)
    with sum(x) = 0 whose coordinates are all congruent modulo d + 1 ("remainder k"
    points, k = 0..d). Its Delaunay cells are simplices; the one holding an embedded
    point x = s B f (B from :func:`_elevation_basis`) has the vertices y + v_k,
    k = 0..d, where y is the nearest remainder-0 point and v_k has the value k at the
    d + 1 - k coordinates of x - y that rank first and k - (d + 1) at the k that rank
    last. Barycentric weights come from the sorted differences z = x - y (decreasing):
    b_k = (z_(d-k) - z_(d-k+1)) / (d + 1) for k >= 1, b_0 = 1 - (z_(0) - z_(d)) / (d + 1).

    The filter is splat (each point adds b_k v to its d + 1 vertices), blur (along each
    lattice direction u_j = (d+1) e_j - (1, ..., 1), j = 0..d in turn,
    L[m] <- L[m] / 2 + (L[m + u_j] + L[m - u_j]) / 4), slice (each point reads
    sum_k b_k L[vertex_k]), times :attr:`norm`.

    Which lattice points exist. Only vertices of some point's simplex ("touched")
    are ever read, but mass on its way between them may pass through a point that no
    pixel touched; a lattice of touched points only drops it. So the lattice also keeps
    the "ghost" points one step (+-u_j) from a touched point: they receive no splat and
    are never sliced, but carry blurred mass. On 40 x 48 test scenes this takes the mean
    relative error of the appearance sum from 11 / 12 / 50 % to 9 / 4 / 6 % (colour noise
    3 / 8 / 20) for about 3 to 6 times as many lattice points; ghosts two steps out
    change it by under one percentage point (6.5 -> 5.8 % at noise 20, 2.9 times the points).

    Built once, on the host (NumPy), from ``features`` (N, d) float64. Tables, with M
    lattice points of which the first M0 are touched and index M a zero "missing" slot:
    ``vertex`` (d+1, N) lattice index of each point's k-th vertex, ``weight`` (d+1, N)
    barycentric weights, the splat entries sorted by lattice index with the bounds of
    each touched point's segment (``splat_pixel``, ``splat_weight``, ``splat_start``,
    ``splat_end``), ``neighbours`` (d+1, 2, M+1) the index of L[m + u_j] and L[m - u_j]
    (M where it does not exist), and ``self_response`` (N,) the lattice's own weight
    from a point to itself, so callers can leave out j = i. :meth:`to` copies the tables
    to a backend and :meth:`filter` runs there, with no host synchronisation.
    """

    def __init__(self, features, ghosts=True, _int_keys=True):
        features = np.asarray(features, dtype=np.float64)
        N, d = features.shape
        self.n_points, self.d = N, d
        self.scale = math.sqrt(2.0 / 3.0) * (d + 1)
        # lattice output * norm ~ sum_j exp(-|f_i - f_j|^2 / 2) v_j (see the module docstring)
        self.norm = (4.0 * math.pi / 3.0) ** (d / 2.0) * math.sqrt(d + 1.0)

        x = self.scale * features @ _elevation_basis(d).T                  # (N, d+1), rows sum to 0
        y, rank = _nearest_remainder_zero(x)
        weight = _barycentric(x - y, rank)                                  # (N, d+1)
        keys = _simplex_vertices(y, rank).reshape((d + 1) * N, d)           # entry e = k N + i
        steps = _lattice_steps(d)                                            # (2 (d+1), d)

        table = _KeyTable(keys, margin=2 * (d + 1), int_keys=_int_keys)
        touched_codes, first, entry_vertex = np.unique(table.encode(keys), return_index=True,
                                                       return_inverse=True)
        touched = keys[first]                                                # (M0, d), index order
        if ghosts:
            near = (touched[None, :, :] + steps[:, None, :]).reshape(-1, d)
            near_codes, near_first = np.unique(table.encode(near), return_index=True)
            is_ghost = ~np.isin(near_codes, touched_codes)
            points = np.concatenate([touched, near[near_first[is_ghost]]])
        else:
            points = touched
        table.index(points)
        M0, M = touched.shape[0], points.shape[0]
        self.n_touched, self.n_lattice = M0, M

        self.vertex = entry_vertex.reshape(d + 1, N).astype(np.int64)
        self.weight = weight.T.copy()                                        # (d+1, N)
        order = np.argsort(entry_vertex, kind="stable")                      # splat = segment sums
        self.splat_pixel = order % N
        self.splat_weight = self.weight.reshape(-1)[order]
        bounds = np.flatnonzero(np.diff(entry_vertex[order])) + 1
        self.splat_start = np.concatenate([[0], bounds]).astype(np.int64)
        self.splat_end = np.concatenate([bounds, [order.shape[0]]]).astype(np.int64)

        neighbours = np.full((d + 1, 2, M + 1), M, dtype=np.int64)
        for j in range(d + 1):
            neighbours[j, 0, :M] = table.lookup(points + steps[2 * j], missing=M)
            neighbours[j, 1, :M] = table.lookup(points + steps[2 * j + 1], missing=M)
        self.neighbours = neighbours
        self.self_response = self.norm * _full_lattice_self_response(self.weight)
        self._device = {}

    def to(self, like):
        """The tables as arrays beside ``like`` (dict; cached per backend and dtype)."""
        key = (bk.backend_of(like).name, str(like.dtype))
        if key not in self._device:
            xp, dev = bk.namespace(like), bk.device(like)
            ints = lambda a: xp.asarray(a, dtype=xp.int64, device=dev)
            reals = lambda a: xp.asarray(a, dtype=like.dtype, device=dev)
            self._device[key] = dict(
                vertex=[ints(v) for v in self.vertex], weight=[reals(w) for w in self.weight],
                splat_pixel=ints(self.splat_pixel), splat_weight=reals(self.splat_weight),
                splat_start=ints(self.splat_start), splat_end=ints(self.splat_end),
                neighbours=[(ints(n[0]), ints(n[1])) for n in self.neighbours],
                self_response=reals(self.self_response))
        return self._device[key]

    def filter(self, V):
        """out (C, N) ~ sum_j exp(-|f_i - f_j|^2 / 2) V[:, j], self (j = i) included. V (C, N)."""
        xp, dev = bk.namespace(V), bk.device(V)
        t = self.to(V)
        values = xp.take(V, t["splat_pixel"], axis=1) * t["splat_weight"]   # (C, E) splat entries
        touched = _segment_sum(values, t["splat_start"], t["splat_end"])     # (C, M0)
        lattice = xp.concat([touched, xp.zeros((V.shape[0], self.n_lattice - self.n_touched + 1),
                                                dtype=V.dtype, device=dev)], axis=1)   # (C, M + 1)
        for plus, minus in t["neighbours"]:                                  # blur [1 2 1] / 4
            lattice = 0.5 * lattice + 0.25 * (xp.take(lattice, plus, axis=1) + xp.take(lattice, minus, axis=1))
        out = None
        for vertex, weight in zip(t["vertex"], t["weight"]):                  # slice
            part = xp.take(lattice, vertex, axis=1) * weight
            out = part if out is None else out + part
        return out * self.norm

    def filter_others(self, V):
        """out (C, N) ~ sum_{j != i} exp(-|f_i - f_j|^2 / 2) V[:, j]: :meth:`filter` less
        the lattice's own i -> i weight (``self_response``), not less 1 (see there)."""
        return self.filter(V) - self.to(V)["self_response"] * V


def _lattice_steps(d):
    """steps (2 (d+1), d) int64: +u_j and -u_j for j = 0..d, first d coordinates only."""
    steps = np.full((d + 1, d), -1, dtype=np.int64)
    steps[np.arange(d), np.arange(d)] = d
    return np.stack([steps, -steps], axis=1).reshape(2 * (d + 1), d)


def _full_lattice_self_response(weight):
    """r (N,) = sum_{k, k'} b_k b_k' B[v_k, v_k'], the splat-blur-slice weight from a point
    to itself in the complete lattice, from its barycentric weights ``weight`` (d+1, N).

    v_k - v_k' is minus the sum of |k - k'| distinct directions u_j; since
    sum_j u_j = 0, a blur path of steps a_j in {-1, 0, 1} reaches it in two ways: -1 on
    those n directions and 0 elsewhere, or 0 on them and +1 elsewhere. With weights 1/4
    per step and 1/2 per stay: B = 4^-n 2^-(D-n) + 2^-n 4^-(D-n), D = d + 1 (n = 0 adds
    the two ways all +1 and all -1 to 2^-D). It is an approximation of the sparse
    lattice's value, exact when the blur paths' points exist.
    """
    D = weight.shape[0]
    n = np.abs(np.arange(D)[:, None] - np.arange(D)[None, :])
    B = 0.25 ** n * 0.5 ** (D - n) + 0.5 ** n * 0.25 ** (D - n)
    B[n == 0] = 0.5 ** D + 2.0 * 0.25 ** D
    return np.einsum("kn,kl,ln->n", weight, B, weight)


class _KeyTable:
    """Lattice keys (rows of d int64) -> indices, for the host-side build.

    Keys are encoded as one int64 each (mixed radix over the keys' range plus
    ``margin``) when that fits in 62 bits, otherwise as opaque byte strings; both sort
    and compare, which is all ``np.unique`` and ``np.searchsorted`` need.
    """

    def __init__(self, keys, margin, int_keys=True):
        self.low = keys.min(axis=0) - margin
        span = (keys.max(axis=0) + margin - self.low + 1).astype(np.float64)
        self.radix = None
        if int_keys and float(np.prod(span)) < 2.0 ** 62:
            self.radix = np.concatenate([[1.0], np.cumprod(span[:-1])]).astype(np.int64)

    def encode(self, keys):
        if self.radix is not None:
            return ((keys - self.low) * self.radix).sum(axis=1)
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        return keys.view(np.dtype((np.void, 8 * keys.shape[1]))).ravel()

    def index(self, points):
        """Remember ``points`` (M, d): row m gets index m."""
        codes = self.encode(points)
        self.order = np.argsort(codes, kind="stable")
        self.sorted = codes[self.order]

    def lookup(self, keys, missing):
        """Index of each row of ``keys`` among the points, or ``missing``."""
        codes = self.encode(keys)
        pos = np.minimum(np.searchsorted(self.sorted, codes), self.sorted.shape[0] - 1)
        return np.where(self.sorted[pos] == codes, self.order[pos], missing)


def _elevation_basis(d):
    """B (d+1, d): orthonormal basis of the hyperplane sum x = 0 in R^(d+1).

    Column k is (1, ..., 1, -(k+1), 0, ..., 0) / sqrt((k+1)(k+2)) with k + 1 ones.
    """
    B = np.zeros((d + 1, d))
    for k in range(d):
        B[:k + 1, k] = 1.0
        B[k + 1, k] = -(k + 1.0)
        B[:, k] /= math.sqrt((k + 1.0) * (k + 2.0))
    return B


def _ranks(z):
    """rank (N, d+1): 0 for each row's largest entry, d for its smallest (ties by index)."""
    order = np.argsort(-z, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(z.shape[1])[None, :], axis=1)
    return rank


def _nearest_remainder_zero(x):
    """y (N, d+1) int64: the remainder-0 lattice point of the simplex holding each row of x.

    Round every coordinate to a multiple of d + 1, then fix the sum back to 0 by moving
    the coordinates that rounded furthest: when the sum is +k (d+1), the k coordinates
    with the smallest x - y go down by d + 1; when it is -k (d+1), the k largest go up.
    Returns (y, rank of x - y).
    """
    D = x.shape[1]
    y = np.rint(x / D).astype(np.int64) * D
    excess = y.sum(axis=1) // D                                              # (N,)
    rank = _ranks(x - y)
    down = (excess[:, None] > 0) & (rank >= D - excess[:, None])
    up = (excess[:, None] < 0) & (rank < -excess[:, None])
    y = y - D * down + D * up
    return y, _ranks(x - y)


def _barycentric(z, rank):
    """b (N, d+1): barycentric weights of z = x - y on the vertices v_0 .. v_d."""
    N, D = z.shape
    zs = np.zeros_like(z)
    np.put_along_axis(zs, rank, z, axis=1)                                   # sorted, decreasing
    b = np.empty_like(z)
    b[:, 1:] = (zs[:, D - 2::-1] - zs[:, D - 1:0:-1]) / D                    # b_k, k = 1..d
    b[:, 0] = 1.0 - (zs[:, 0] - zs[:, D - 1]) / D
    return b


def _simplex_vertices(y, rank):
    """keys (d+1, N, d) int64: the first d coordinates of the vertices y + v_k.

    v_k = k at coordinates ranked < d + 1 - k and k - (d + 1) at the others; the last
    coordinate is left out, since sum = 0 fixes it.
    """
    N, D = y.shape
    keys = np.empty((D, N, D - 1), dtype=np.int64)
    for k in range(D):
        v = k - D * (rank >= D - k)
        keys[k] = (y + v)[:, :D - 1]
    return keys


def _segment_sum(values, start, end):
    """S (C, M), S[:, m] = values[:, start[m]:end[m]].sum(axis=1); segments non-empty, in order.

    NumPy: ``np.add.reduceat``. Other backends: differences of a float64 running sum
    (array API ``cumulative_sum``; float64 so the differences keep their digits).
    """
    if bk.is_numpy(values):
        return np.add.reduceat(values, start, axis=1)
    xp = bk.namespace(values)
    running = xp.cumulative_sum(xp.astype(values, xp.float64), axis=1, include_initial=True)
    return xp.astype(xp.take(running, end, axis=1) - xp.take(running, start, axis=1), values.dtype)


# ----------------------------------------------------------------------------
# Mean field
# ----------------------------------------------------------------------------
def _softmax(logits, axis):
    xp = bk.namespace(logits)
    e = xp.exp(logits - xp.max(logits, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def _log_probs(probs):
    """log probs, with zeros clamped to the dtype's smallest normal number (no -inf)."""
    xp = bk.namespace(probs)
    return xp.log(xp.maximum(probs, xp.finfo(probs.dtype).smallest_normal))


def dense_crf(probs, image, iterations=10, w_appearance=4.0, theta_alpha=121.0, theta_beta=5.0,
              w_smooth=3.0, theta_gamma=3.0, method="lattice"):
    """Mean-field inference in the fully connected CRF of Krähenbühl & Koltun (2011).

    Parameters
    ----------
    probs : (C, H, W) floating array (NumPy, CuPy, array_api_strict)
        Softmax probabilities; the unary is -log probs. Must be non-negative and sum
        to 1 over axis 0.
    image : (H, W, 3) uint8 RGB, a NumPy array or an array of probs' backend.
    iterations : int >= 0
        Mean-field rounds; 0 returns a copy of probs.
    w_appearance, theta_alpha, theta_beta : appearance kernel
        w * exp(-|p_i - p_j|^2 / (2 theta_alpha^2) - |I_i - I_j|^2 / (2 theta_beta^2)),
        p in pixels (row, column), I in 0..255.
    w_smooth, theta_gamma : smoothness kernel w * exp(-|p_i - p_j|^2 / (2 theta_gamma^2)).
    method : "lattice" (fast, approximate appearance term) or "exact" (O((HW)^2)).

    Returns
    -------
    Q : (C, H, W) on probs' backend and dtype, each pixel a distribution, after
        ``iterations`` rounds of Q_i(l) = softmax_l(log probs_i(l) + sum_{j != i} k(i, j) Q_j(l))
        starting at Q = probs (the Potts update; see the module docstring).
    """
    thetas = dict(theta_alpha=theta_alpha, theta_beta=theta_beta, theta_gamma=theta_gamma)
    image = _check_inputs(probs, image, iterations, thetas, method)
    for name, value in (("w_appearance", w_appearance), ("w_smooth", w_smooth)):
        if not (isinstance(value, (int, float, np.number)) and math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    w_appearance, w_smooth = float(w_appearance), float(w_smooth)
    xp = bk.namespace(probs)
    if iterations == 0:
        return xp.asarray(probs, copy=True)
    if method == "exact":
        return _mean_field_exact(probs, image, iterations, w_appearance, theta_alpha, theta_beta,
                                 w_smooth, theta_gamma)
    return _mean_field_lattice(probs, image, iterations, w_appearance, theta_alpha, theta_beta,
                               w_smooth, theta_gamma)


def _mean_field_exact(probs, image, iterations, w_appearance, theta_alpha, theta_beta, w_smooth, theta_gamma):
    """Equation (1) with the message from :func:`message_exact`; works in (N, C).

    The kernel rows are rebuilt every round unless the (N, N) matrix has at most
    ``EXACT_CACHE_ELEMENTS`` entries (a 64 x 64 image), when they are built once.
    """
    xp, dev = bk.namespace(probs), bk.device(probs)
    C, H, W = probs.shape
    f_app = xp.asarray(appearance_features(image, theta_alpha, theta_beta), dtype=probs.dtype, device=dev)
    f_smooth = xp.asarray(positions(H, W) / theta_gamma, dtype=probs.dtype, device=dev)
    unary = xp.permute_dims(xp.reshape(_log_probs(probs), (C, H * W)), (1, 0))   # (N, C)
    Q = xp.permute_dims(xp.reshape(probs, (C, H * W)), (1, 0))
    blocks = lambda: kernel_blocks(f_app, f_smooth, w_appearance, w_smooth)
    if (H * W) ** 2 <= EXACT_CACHE_ELEMENTS:       # small image: build the kernel matrix once
        cached = list(blocks())
        blocks = lambda: cached
    for _ in range(iterations):
        Q = _softmax(unary + message_exact(Q, blocks()), axis=1)
    return xp.reshape(xp.permute_dims(Q, (1, 0)), (C, H, W))


def _filter_by_classes(lattice, V):
    """``lattice.filter_others(V)`` for V (C, N); with NumPy, groups of classes run side
    by side on the CPU cores (``backend.parallel_for``), elsewhere one call."""
    xp = bk.namespace(V)
    C = V.shape[0]
    groups = min(C, 2 * bk.threads_for(V))
    if groups <= 1:
        return lattice.filter_others(V)
    bounds = [(C * g // groups, C * (g + 1) // groups) for g in range(groups)]
    parts = bk.parallel_for(lambda c0, c1: lattice.filter_others(V[c0:c1, :]), bounds, V)
    return xp.concat(parts, axis=0)


def _mean_field_lattice(probs, image, iterations, w_appearance, theta_alpha, theta_beta, w_smooth, theta_gamma):
    """Equation (1) with the lattice appearance term and the separable smoothness term; (C, H, W)."""
    xp = bk.namespace(probs)
    C, H, W = probs.shape
    lattice = PermutohedralLattice(appearance_features(image, theta_alpha, theta_beta))
    lattice.to(probs)                                                        # tables onto the device, once
    G_rows, G_cols = gaussian_matrix(H, theta_gamma, probs), gaussian_matrix(W, theta_gamma, probs)
    radius = math.ceil(8.0 * theta_gamma)
    unary = _log_probs(probs)
    Q = probs
    for _ in range(iterations):
        appearance = xp.reshape(_filter_by_classes(lattice, xp.reshape(Q, (C, H * W))), (C, H, W))
        smooth = smooth_separable(Q, G_rows, G_cols, radius) - Q              # drop j = i
        message = w_appearance * appearance + w_smooth * smooth
        Q = _softmax(unary + message, axis=0)
    return Q
