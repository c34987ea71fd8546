# %% [markdown]
# # Lesson 2 — Convolution as im2col and a matrix multiply
#
# Every FCN layer with weights is a convolution, so how a convolution is computed
# decides how fast the whole net runs. minifcn computes it the way Caffe did: unfold
# the input's sliding windows into the columns of a matrix (**im2col**), then do ONE
# matrix multiply. The backward pass falls out of the same picture:
#
# - dW is a matrix product of the upstream gradient with the same columns;
# - dX comes from a matrix product followed by **col2im**, which folds columns back
#   into an image, adding where windows overlap.
#
# This lesson writes convolution as naive loops (its definition), checks im2col +
# matmul against it, draws the shapes, derives the backward pass, and gradient-checks
# it live. Notation: input (N, C, H, W), weight (C_out, C, KH, KW), stride S, padding P,
# output (N, C_out, OH, OW) with OH = floor((H + 2P - KH) / S) + 1.
#
# Set-up (first cell): `from _lesson import savefig, plt` makes minifcn importable
# from a checkout (when it is not installed) and sends figures to `tutorials/figures/`
# (or `$MINIFCN_FIGURES`).

# %%
import numpy as np

from _lesson import savefig, plt
from minifcn import functional as F
from minifcn.gradcheck import check_backward

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The definition, as loops
#
# Output pixel (oy, ox) of output channel o is the dot product of the kernel
# `w[o]` (C x KH x KW) with the input window whose top-left corner is (S*oy, S*ox)
# in the zero-padded input. (Deep learning's "convolution" does not flip the kernel:
# mathematically it is a cross-correlation.)

# %%
def conv2d_loops(x, w, stride, padding):
    """Convolution straight from the definition (slow; for checking only)."""
    n, c, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (wd + 2 * padding - kw) // stride + 1
    y = np.zeros((n, c_out, oh, ow))
    for b in range(n):
        for o in range(c_out):
            for oy in range(oh):
                for ox in range(ow):
                    window = xp[b, :, stride * oy:stride * oy + kh, stride * ox:stride * ox + kw]
                    y[b, o, oy, ox] = np.sum(window * w[o])
    return y


N, C, H, W, C_OUT, K, S, P = 2, 3, 6, 7, 4, 3, 2, 1
x = rng.standard_normal((N, C, H, W))
w = rng.standard_normal((C_OUT, C, K, K))
y_loops = conv2d_loops(x, w, S, P)
y_lib, cache = F.conv2d(x, w, stride=S, padding=P)
OH, OW = F.conv_output_size(H, K, S, P), F.conv_output_size(W, K, S, P)
print("output shape", y_lib.shape, "= (N, C_out, OH, OW) with OH, OW =", (OH, OW))
assert y_lib.shape == (N, C_OUT, OH, OW) == y_loops.shape
assert np.allclose(y_lib, y_loops, rtol=1e-12, atol=1e-12)

# %% [markdown]
# ## 2. im2col: every window becomes a column
#
# `F.im2col(x, K, S, P)` returns `cols` of shape (N, C*KH*KW, OH*OW): column
# `oy*OW + ox` is the window of output pixel (oy, ox), flattened in the order
# (c, ky, kx). That is the order of the weight's last three axes, so the weight
# reshaped to (C_out, C*KH*KW) can multiply the columns directly:
#
#     y[n] = W2 @ cols[n]        (C_out, C*KH*KW) @ (C*KH*KW, OH*OW) -> (C_out, OH*OW)

# %%
cols, (oh, ow) = F.im2col(x, K, S, P)
print("cols:", cols.shape, "= (N, C*KH*KW, OH*OW) =", (N, C * K * K, OH * OW))
assert cols.shape == (N, C * K * K, OH * OW) and (oh, ow) == (OH, OW)

# column (oy, ox) really is the flattened window
xpad = np.pad(x, ((0, 0), (0, 0), (P, P), (P, P)))
oy, ox = 1, 2
window = xpad[1, :, S * oy:S * oy + K, S * ox:S * ox + K]
assert np.array_equal(cols[1, :, oy * OW + ox], window.ravel())

W2 = np.reshape(w, (C_OUT, C * K * K))
y_mm = np.reshape(W2 @ cols, (N, C_OUT, OH, OW))
assert np.allclose(y_mm, y_loops, rtol=1e-12, atol=1e-12)
print("im2col + one matmul == the loops")

# %%
fig, axes = plt.subplots(1, 4, figsize=(15, 4), gridspec_kw={"width_ratios": [1.2, 1, 1.6, 1]})
axes[0].imshow(xpad[1, 0], cmap="gray")
axes[0].add_patch(plt.Rectangle((S * ox - 0.5, S * oy - 0.5), K, K, fill=False, color="tab:red", lw=2))
axes[0].set_title(f"padded input, channel 0\n(H+2P) x (W+2P) = {H + 2 * P} x {W + 2 * P}\nwindow of output (1, 2)")
axes[1].imshow(W2, cmap="coolwarm", aspect="auto")
axes[1].set_title(f"weight as matrix W2\n(C_out, C*KH*KW) = {W2.shape}")
axes[2].imshow(cols[1], cmap="gray", aspect="auto")
axes[2].add_patch(plt.Rectangle((oy * OW + ox - 0.5, -0.5), 1, C * K * K, fill=False, color="tab:red", lw=2))
axes[2].set_title(f"cols[n] (C*KH*KW, OH*OW) = {cols.shape[1:]}\nred: the window as a column")
axes[3].imshow(np.reshape(y_mm[1], (C_OUT, OH * OW)), cmap="coolwarm", aspect="auto")
axes[3].set_title(f"W2 @ cols[n] = y[n]\n(C_out, OH*OW) = {(C_OUT, OH * OW)}")
from matplotlib.ticker import MaxNLocator  # noqa: E402

for ax in axes:
    ax.set_xlabel("column"); ax.set_ylabel("row")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # rows and columns are whole numbers
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
fig.subplots_adjust(wspace=0.35)
savefig(fig, "02_im2col_shapes.png")

# %% [markdown]
# The price of im2col is memory: each input pixel is copied into up to KH*KW columns
# (about (K/S)^2 copies). What we buy is one large matrix multiply, which BLAS (or a
# GPU) runs close to peak speed, instead of many tiny dot products.
#
# ## 3. col2im: the adjoint of im2col
#
# im2col is linear, so it has a transpose (adjoint) `col2im`: it takes a column
# matrix and *adds* every column entry back into the pixel it was copied from.
# Adjoint means `<im2col(x), c> = <x, col2im(c)>` for all x and c. Folding a matrix
# of ones shows how many windows cover each pixel.

# %%
c_rand = rng.standard_normal(cols.shape)
lhs = np.sum(cols * c_rand)
rhs = np.sum(x * F.col2im(c_rand, x.shape, K, S, P))
print(f"<im2col(x), c> = {lhs:.12f}\n<x, col2im(c)> = {rhs:.12f}")
assert abs(lhs - rhs) < 1e-10

coverage = F.col2im(np.ones_like(cols), x.shape, K, S, P)[0, 0]
# count the windows covering each pixel directly from the definition
count = np.zeros((H + 2 * P, W + 2 * P))
for oy_ in range(OH):
    for ox_ in range(OW):
        count[S * oy_:S * oy_ + K, S * ox_:S * ox_ + K] += 1
assert np.array_equal(coverage, count[P:P + H, P:P + W])

# %% [markdown]
# ## 4. The backward pass, derived
#
# Write the forward pass per image as `Y = W2 @ X_cols` (dropping n). For a scalar
# loss L with upstream gradient dY = dL/dY (shape (C_out, OH*OW)), matrix calculus
# gives for a product of matrices:
#
#     dW2     = dY @ X_cols^T           (C_out, OH*OW) @ (OH*OW, C*KH*KW)
#     dX_cols = W2^T @ dY               (C*KH*KW, C_out) @ (C_out, OH*OW)
#
# dW sums over the batch (every image uses the same weights). dX_cols is the gradient
# with respect to the *copies* of each pixel; the pixel's gradient is the sum over
# its copies, which is exactly what col2im does. The bias gradient sums dY over the
# batch and all output pixels.

# %%
b = rng.standard_normal(C_OUT)
y, cache = F.conv2d(x, w, b, stride=S, padding=P)
dy = rng.standard_normal(y.shape)
dY = np.reshape(dy, (N, C_OUT, OH * OW))

dW_hand = np.reshape(np.sum(dY @ np.transpose(cols, (0, 2, 1)), axis=0), w.shape)
dX_hand = F.col2im(W2.T @ dY, x.shape, K, S, P)
db_hand = np.sum(dy, axis=(0, 2, 3))

dx_lib, dw_lib, db_lib = F.conv2d_backward(dy, cache)
assert np.allclose(dW_hand, dw_lib, rtol=1e-12, atol=1e-12)
assert np.allclose(dX_hand, dx_lib, rtol=1e-12, atol=1e-12)
assert np.allclose(db_hand, db_lib, rtol=1e-12, atol=1e-12)
print("hand-derived dW, dX, db == minifcn's conv2d_backward")

# %% [markdown]
# ## 5. ...and checked against finite differences, live
#
# Agreeing with the library only shows we derived the same thing. To know it is the
# *derivative*, compare with central differences in float64 (lesson 8 explains the
# checker): perturb each input and weight entry by ±eps and watch `<dy, y>` change.

# %%
def forward(x_, w_, b_):
    """conv2d, keeping (x, w) as the cache our hand-written backward needs."""
    y_, _ = F.conv2d(x_, w_, b_, stride=S, padding=P)
    return y_, (x_, w_)


def backward_by_hand(dy_, cache_):
    x_, w_ = cache_
    cols_, _ = F.im2col(x_, K, S, P)
    dY_ = np.reshape(dy_, (N, C_OUT, OH * OW))
    w2 = np.reshape(w_, (C_OUT, C * K * K))
    dW = np.reshape(np.sum(dY_ @ np.transpose(cols_, (0, 2, 1)), axis=0), w_.shape)
    dX = F.col2im(w2.T @ dY_, x_.shape, K, S, P)
    return dX, dW, np.sum(dy_, axis=(0, 2, 3))


report = check_backward(forward, backward_by_hand, [x.copy(), w.copy(), b.copy()], name="conv2d by hand")
print(report)
assert report.ok and report.checked == x.size + w.size + b.size

# %% [markdown]
# The element-wise check perturbed all 252 + 108 + 4 entries one at a time. Here is
# the gradient it computed numerically next to ours, for one weight slice:

# %%
eps = 1e-6
num = np.zeros((K, K))
for i in range(K):
    for j in range(K):
        wp, wm = w.copy(), w.copy()
        wp[0, 0, i, j] += eps
        wm[0, 0, i, j] -= eps
        num[i, j] = (np.sum(dy * forward(x, wp, b)[0]) - np.sum(dy * forward(x, wm, b)[0])) / (2 * eps)
assert np.allclose(num, dW_hand[0, 0], rtol=1e-6, atol=1e-8)

fig, axes = plt.subplots(1, 3, figsize=(10, 3.3))
for ax, (title, img) in zip(axes, [("dW[0, 0] from columns", dW_hand[0, 0]),
                                   ("central differences", num),
                                   ("coverage: windows per pixel\n= col2im(ones)", coverage)]):
    im = ax.imshow(img, cmap="viridis")
    ax.set_title(title)
    ax.set_xticks(range(img.shape[1])); ax.set_yticks(range(img.shape[0]))
    fig.colorbar(im, ax=ax, fraction=0.046)
fig.subplots_adjust(wspace=0.5)
savefig(fig, "02_backward.png")

# %% [markdown]
# ## What we saw
#
# - im2col turns convolution into one matrix multiply, `y[n] = W2 @ cols[n]`.
# - col2im is its adjoint: it adds columns back into pixels.
# - Backward: `dW = sum_n dY[n] @ cols[n]^T`, `dX = col2im(W2^T @ dY)`, `db = sum dY`:
#   two more matrix multiplies and one fold, checked against finite differences.
# - `W2^T @ dY` followed by col2im maps a small (OH, OW) map to a bigger (H, W) one.
#   Run as a forward pass, that is the **transposed convolution** that FCNs use to
#   upsample: lesson 3.
