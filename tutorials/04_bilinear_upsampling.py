# %% [markdown]
# # Lesson 4 — Bilinear upsampling is a transposed convolution
#
# FCNs upsample their coarse score maps with transposed convolutions whose kernels
# start as (and in the final layer stay) **bilinear interpolation** kernels. This
# lesson:
#
# 1. derives the bilinear kernel for an upsampling factor f from the definition of
#    linear interpolation, and finds its size k = 2f - (f mod 2);
# 2. shows that a transposed convolution with that kernel, stride f and padding
#    floor(f / 2) *is* bilinear interpolation, number for number;
# 3. checks what makes it a good upsampler (constants and linear ramps come out
#    unchanged);
# 4. lets the kernel be **learned** instead of fixed, with minifcn's hand-written
#    backward pass, and compares the two.
#
# Set-up (first cell): `from _lesson import savefig, plt` makes minifcn importable
# from a checkout (when it is not installed) and sends figures to `tutorials/figures/`
# (or `$MINIFCN_FIGURES`).

# %%
import numpy as np

from _lesson import savefig, plt
from minifcn import functional as F
from minifcn.init import bilinear_filter, bilinear_kernel
from minifcn.layers import ConvTranspose2d

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Deriving the kernel
#
# Upsample a 1-D signal x[0..H-1] by an integer factor f to f*H samples. Treat every
# sample as the centre of its pixel. Output pixel v has its centre at input
# coordinate
#
#     u(v) = (v + 1/2) / f - 1/2
#
# and linear interpolation gives it `sum_i x[i] * hat(u(v) - i)` with the hat
# (triangle) function `hat(t) = max(0, 1 - |t|)`: the two nearest input samples,
# weighted by closeness.
#
# Now fix one input pixel i and look at what it contributes. Its centre sits at output
# coordinate c_i = f*i + (f - 1)/2. An output pixel at distance d = v - c_i from it
# receives `x[i] * hat(d / f) = x[i] * (1 - |d| / f)`. So every input pixel "stamps"
# the same pattern, a triangle of half-width f, at stride f: that is a transposed
# convolution (lesson 3, view 2) whose kernel is the triangle sampled at the possible
# distances d.
#
# Which distances? v is an integer, so d is an integer when f is odd and a half-integer
# when f is even; the weight is non-zero for |d| < f. Counting:
#
# - f odd:  d = -(f-1), ..., f-1             -> 2f - 1 taps
# - f even: d = -(f-1/2), ..., f-1/2         -> 2f taps
#
# which is **k = 2f - (f mod 2)**. A smaller kernel would cut the triangle short; a
# larger one would only add zeros. (The FCN reference nets use k = 2f: 4, 16, 32, 64
# for the even factors 2, 8, 16, 32.)

# %%
def triangle_taps(f):
    """The 1-D bilinear kernel for factor f, sampled from the derivation above."""
    first = -(f - 1) if f % 2 else -(f - 0.5)
    d = first + np.arange(2 * f - f % 2)
    d = d[np.abs(d) < f]
    return 1 - np.abs(d) / f


for f in range(1, 9):
    taps = triangle_taps(f)
    k = 2 * f - f % 2
    assert len(taps) == k
    assert np.allclose(np.outer(taps, taps), bilinear_filter(k))    # 2-D kernel = outer product
print("derived triangles == minifcn.init.bilinear_filter(k) for f = 1..8; k =",
      [2 * f - f % 2 for f in range(1, 9)])

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for ax, f in zip(axes, [2, 3]):
    t = np.linspace(-f, f, 200)
    ax.plot(t, 1 - np.abs(t) / f, color="gray", label="hat(d / f)")
    first = -(f - 1) if f % 2 else -(f - 0.5)
    d = first + np.arange(2 * f - f % 2)
    ax.stem(d, triangle_taps(f), basefmt=" ", label=f"k = {len(d)} taps")
    ax.set_title(f"factor f = {f}: kernel size {2 * f - f % 2}")
    ax.set_xlabel("distance d from the input pixel's centre (output pixels)")
    ax.legend()
savefig(fig, "04_kernel_derivation.png")

# %% [markdown]
# ## 2. Transposed convolution with the bilinear kernel IS bilinear interpolation
#
# Padding: the kernel copy of input pixel i starts at output position f*i (before the
# crop) and its centre is (k - 1)/2 further on; the centre must land on
# c_i = f*i + (f - 1)/2, so the transposed convolution must crop
# P = (k - 1)/2 - (f - 1)/2 = (k - f)/2 = floor(f / 2) pixels from each side. The
# output size is then (H - 1) f + k - 2P = f H, exactly f times the input.
#
# Reference: interpolation straight from the definition, separably (rows, then
# columns), treating pixels outside the image as 0.

# %%
def interpolate_1d(x, f, axis):
    """Linear interpolation by factor f along ``axis`` from the definition (zeros outside)."""
    x = np.moveaxis(x, axis, -1)
    n = x.shape[-1]
    out = np.zeros(x.shape[:-1] + (f * n,))
    for v in range(f * n):
        u = (v + 0.5) / f - 0.5
        for i in (int(np.floor(u)), int(np.floor(u)) + 1):
            if 0 <= i < n:
                out[..., v] += x[..., i] * max(0.0, 1 - abs(u - i))
    return np.moveaxis(out, -1, axis)


def bilinear_reference(x, f):
    return interpolate_1d(interpolate_1d(x, f, axis=2), f, axis=3)


C = 3
x = rng.standard_normal((2, C, 5, 6))
for f in (2, 3, 4, 5):
    k = 2 * f - f % 2
    y, _ = F.conv_transpose2d(x, bilinear_kernel(C, C, k, dtype=np.float64), stride=f, padding=f // 2)
    assert y.shape == (2, C, 5 * f, 6 * f)
    assert np.allclose(y, bilinear_reference(x, f), rtol=1e-12, atol=1e-12)
    print(f"f = {f}: k = {k}, P = {f // 2}: conv_transpose2d == bilinear interpolation")

# %% [markdown]
# Two details:
#
# - `bilinear_kernel(C, C, k)` puts the filter on the channel diagonal (channel c ->
#   channel c) and zeros elsewhere, so class scores never mix while they are upsampled.
# - At the border our reference treats outside pixels as 0, like the transposed
#   convolution. Image libraries usually repeat the edge pixel instead, so they differ
#   in the outermost f/2 pixels. FCN never uses those: its output is cropped from
#   inside a larger upsampled map (lesson 5).

# %%
weights = bilinear_kernel(C, C, 4)
assert np.all(weights[0, 1] == 0) and np.all(weights[1, 1] == bilinear_filter(4).astype(np.float32))

# %% [markdown]
# ## 3. What makes it a good upsampler
#
# Away from the border, the stamped triangles add up to exactly 1 at every output pixel
# (they form a *partition of unity*), so a constant map comes out constant; and a
# linear ramp comes out as the same ramp sampled f times more densely. The checkerboard
# of lesson 3 cannot appear.

# %%
for f in (2, 3, 4, 8):
    k, p = 2 * f - f % 2, f // 2
    wk = bilinear_kernel(1, 1, k, dtype=np.float64)
    const, _ = F.conv_transpose2d(np.full((1, 1, 6, 6), 3.0), wk, stride=f, padding=p)
    inner = slice(f, -f)
    assert np.allclose(const[0, 0, inner, inner], 3.0)
    ramp_in = np.tile(np.arange(6.0), (6, 1))[None, None]                 # value = column index
    ramp, _ = F.conv_transpose2d(ramp_in, wk, stride=f, padding=p)
    u = (np.arange(6 * f) + 0.5) / f - 0.5                                # input coordinate of each output column
    assert np.allclose(ramp[0, 0, inner, inner], np.tile(u[inner], (6 * f - 2 * f, 1)))
print("constants stay constant and ramps stay ramps (interior), f = 2, 3, 4, 8")

# %%
# A coarse "score map" (a blob) upsampled by 8, as FCN-8s does for its last step
yy, xx = np.mgrid[0:8, 0:8]
coarse = np.exp(-((yy - 3.2) ** 2 + (xx - 4.1) ** 2) / 4.0)[None, None]
up8, _ = F.conv_transpose2d(coarse, bilinear_kernel(1, 1, 16, dtype=np.float64), stride=8, padding=4)
nearest = np.kron(coarse[0, 0], np.ones((8, 8)))
fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
for ax, img, title in [(axes[0], coarse[0, 0], "coarse map 8 x 8"),
                       (axes[1], nearest, "nearest neighbour x8"),
                       (axes[2], up8[0, 0], "transposed conv, bilinear\nk = 16, S = 8, P = 4")]:
    ax.imshow(img, cmap="viridis")
    ax.set_title(title)
    ax.set_xticks([]); ax.set_yticks([])
savefig(fig, "04_upsampling.png")

# %% [markdown]
# ## 4. Learned instead of fixed
#
# The kernel is just a weight, so it can be trained like any other with the
# hand-written backward pass of the transposed convolution. The FCN paper initialises
# its upsampling layers to bilinear; it lets the 2x layers of the skip nets learn and
# keeps the final one fixed. The reference nets released with it (Caffe, voc-fcn*s)
# keep every upsampling fixed (learning rate 0), and so does minifcn by default:
# `ConvTranspose2d(..., init="bilinear", frozen=True)`; pass `learn_upsampling=True`
# to a model to learn them.
#
# Experiment: smooth 32 x 32 images are shrunk by 2x2 averaging to 16 x 16; a
# transposed convolution (k = 4, S = 2, P = 1) must bring them back. We train one
# starting from zeros with plain gradient descent on the mean squared error, and
# compare it with the fixed bilinear kernel.

# %%
def smooth_images(n, size, rng):
    """Random smooth images: white noise blurred by a separable triangle filter."""
    img = rng.standard_normal((n, 1, size + 8, size + 8))
    tri = np.convolve(np.ones(5), np.ones(5)) / 25.0
    img = np.apply_along_axis(lambda r: np.convolve(r, tri, mode="same"), 2, img)
    img = np.apply_along_axis(lambda r: np.convolve(r, tri, mode="same"), 3, img)
    return img[:, :, 4:-4, 4:-4] * 3


def shrink(img):
    """2 x 2 average pooling, the 'camera' that lost the detail."""
    return 0.25 * (img[:, :, ::2, ::2] + img[:, :, 1::2, ::2] + img[:, :, ::2, 1::2] + img[:, :, 1::2, 1::2])


high = smooth_images(64, 32, rng)
low = shrink(high)
inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))   # ignore the zero-padded border


def mse(pred):
    return float(np.mean((pred[inner] - high[inner]) ** 2))


fixed = ConvTranspose2d(1, 1, 4, stride=2, padding=1).to(dtype=np.float64)      # bilinear, frozen
loss_fixed = mse(fixed(low))

learned = ConvTranspose2d(1, 1, 4, stride=2, padding=1, init="zeros", frozen=False).to(dtype=np.float64)
lr, losses = 2.0, []
for step in range(150):
    pred = learned(low)
    losses.append(mse(pred))
    dpred = np.zeros_like(pred)
    dpred[inner] = 2 * (pred[inner] - high[inner]) / pred[inner].size
    learned.zero_grad()
    learned.backward(dpred)                      # hand-written backward: fills weight.grad
    learned.weight.data -= lr * learned.weight.grad
loss_learned = mse(learned(low))
k_learned = learned.weight.data[0, 0]
k_bilinear = fixed.weight.data[0, 0]
corr = np.corrcoef(k_learned.ravel(), k_bilinear.ravel())[0, 1]
print(f"MSE: fixed bilinear {loss_fixed:.5f}, learned from zeros {loss_learned:.5f}")
print(f"correlation of the learned kernel with the bilinear one: {corr:.3f}")
print("learned kernel:\n", np.round(k_learned, 3), "\nbilinear kernel:\n", np.round(k_bilinear, 3))
assert losses[-1] < losses[0] / 10               # training works (backward is right)
assert loss_learned <= loss_fixed * 1.01         # it matches or beats the fixed kernel on its own task...
assert corr > 0.9                                # ...by finding a kernel close to bilinear

# %% [markdown]
# The learned kernel has the bilinear shape, a little heavier in the middle and lighter
# at the corners: it also learns to undo some of the blur of the 2 x 2 averaging, which
# bilinear interpolation, knowing nothing about the data, cannot.

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
vmax = max(np.abs(k_learned).max(), np.abs(k_bilinear).max())
for ax, kern, title in [(axes[0], k_bilinear, "fixed: bilinear"), (axes[1], k_learned, "learned from zeros")]:
    ax.imshow(kern, cmap="coolwarm", vmin=-vmax, vmax=vmax)
    for (i, j), v in np.ndenumerate(kern):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(title)
    ax.set_xticks([]); ax.set_yticks([])
axes[2].semilogy(losses, label="learned")
axes[2].axhline(loss_fixed, color="k", ls="--", label="fixed bilinear")
axes[2].set_xlabel("gradient step"); axes[2].set_ylabel("MSE")
axes[2].legend()
axes[2].set_title("training the upsampling kernel")
fig.subplots_adjust(wspace=0.3)
savefig(fig, "04_learned_vs_fixed.png")

# %% [markdown]
# ## What we saw
#
# - Bilinear interpolation by f stamps a triangle of half-width f at stride f: a
#   transposed convolution with kernel size k = 2f - (f mod 2), stride f, padding
#   floor(f/2), computed here to 1e-12 against the definition.
# - The stamps form a partition of unity, so constants and ramps pass through intact.
# - A learned kernel, started from zeros, ends close to bilinear and slightly better
#   on the task it was trained for. For segmentation, where the scores being
#   upsampled are themselves learned, a fixed bilinear kernel is the simple default.
