# %% [markdown]
# # Lesson 10 — Dilated (à trous) convolution
#
# FCN gets its coarse stride-32 scores back to pixels by upsampling and skip fusion
# (lessons 3-7). The other road, taken by DeepLab (Chen et al. 2015/2017) and by Yu &
# Koltun ("Multi-scale context aggregation by dilated convolutions", ICLR 2016), is to
# **not lose the resolution** in the first place: remove some strides and space the
# following kernels out instead. A 3 x 3 kernel with **dilation** D reads the input at
# offsets -D, 0, +D: it covers D (K - 1) + 1 pixels with the same 9 weights. This
# lesson:
#
# 1. computes a dilated convolution by hand and checks minifcn's
#    `F.conv2d(..., dilation=D)` against it and against an ordinary convolution with a
#    zero-filled ("holes", *trous*) kernel;
# 2. measures the receptive field of stacked 3 x 3 convs: linear growth without
#    dilation, exponential growth with dilations 1, 2, 4, ...;
# 3. shows the identity the FCN paper (section 3.2) uses to explain dense output:
#    **shift-and-stitch equals filter rarefaction**, i.e. running a strided net on
#    every shifted copy of the input and interleaving the outputs gives exactly the
#    output of the same net with the stride removed and the next filters dilated;
# 4. shows the price: **gridding**, when dilated layers with a common factor are
#    stacked, each output sees only a sparse lattice of the input.
#
# Set-up (first cell): `from _lesson import ...` makes minifcn importable from a
# checkout and sends figures to `tutorials/figures/`. Runs in a few seconds.

# %%
import numpy as np

from _lesson import plt, savefig
from minifcn import functional as F

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. A dilated convolution by hand
#
# On a row x = [0, 1, 2, ..., 9] a 1 x 3 kernel [1, 10, 100] with dilation 2 computes
# y[i] = 1 x[i] + 10 x[i + 2] + 100 x[i + 4] (a convolution in the deep-learning sense,
# i.e. a correlation): y[0] = 0 + 20 + 400 = 420, y[1] = 1 + 30 + 500 = 531, ... The
# output has 10 - (2 (3 - 1) + 1) + 1 = 6 pixels. The same numbers come from an
# ordinary convolution with the kernel [1, 0, 10, 0, 100]: dilation inserts D - 1 zeros
# between the taps.

# %%
row = np.arange(10.0)[None, None, None, :]                   # (N, C, H, W) = (1, 1, 1, 10)
k = np.array([1.0, 10.0, 100.0])[None, None, None, :]        # (C_out, C_in, KH, KW) = (1, 1, 1, 3)
y, _ = F.conv2d(row, k, dilation=2)
by_hand = [1 * i + 10 * (i + 2) + 100 * (i + 4) for i in range(6)]
holes = np.array([1.0, 0.0, 10.0, 0.0, 100.0])[None, None, None, :]
y_holes, _ = F.conv2d(row, holes)
print("dilation 2:", y[0, 0, 0].astype(int), " by hand:", by_hand)
assert y[0, 0, 0].tolist() == by_hand == [420, 531, 642, 753, 864, 975]
assert np.array_equal(y, y_holes)

# in 2-D, with channels, stride and padding, against the zero-filled kernel
x = rng.standard_normal((2, 3, 13, 11))
w = rng.standard_normal((4, 3, 3, 3))
for d in (1, 2, 3):
    sparse = np.zeros((4, 3, d * 2 + 1, d * 2 + 1))
    sparse[:, :, ::d, ::d] = w
    a, _ = F.conv2d(x, w, dilation=d, padding=d)
    b, _ = F.conv2d(x, sparse, padding=d)
    assert a.shape == (2, 4, 13, 11) and np.allclose(a, b, rtol=1e-12, atol=1e-12)   # padding D keeps the size
print("dilated conv == conv with a zero-filled kernel, for D = 1, 2, 3 (padding D keeps H x W)")

# %% [markdown]
# ## 2. Receptive fields: linear versus exponential
#
# The receptive field of an output pixel is the set of input pixels that can change it.
# Measure it by experiment: push an impulse through L stacked 3 x 3 convs with
# positive weights and count the output pixels it reaches (the same set, by symmetry).
#
# - dilation 1 in every layer: each layer adds 2 pixels, RF = 2L + 1 (linear);
# - dilations 1, 2, 4, ..., 2^(L-1): layer l adds 2 x 2^(l-1), RF = 2^(L+1) - 1
#   (exponential, Yu & Koltun 2016), with the same number of weights and no pooling.

# %%
def impulse_response(dilations, size=65):
    """Output of stacked 3 x 3 all-ones convs (padding = dilation) on a centred impulse."""
    h = np.zeros((1, 1, size, size))
    h[0, 0, size // 2, size // 2] = 1.0
    for d in dilations:
        h, _ = F.conv2d(h, np.ones((1, 1, 3, 3)), padding=d, dilation=d)
    return h[0, 0]


def extent(response):
    """Width of the bounding box of the non-zero pixels."""
    cols = np.nonzero(response.any(axis=0))[0]
    return int(cols[-1] - cols[0] + 1)


layers = np.arange(1, 6)
rf_plain = [extent(impulse_response([1] * L)) for L in layers]
rf_dilated = [extent(impulse_response([2 ** i for i in range(L)])) for L in layers]
print("layers          ", layers.tolist())
print("RF, dilation 1  ", rf_plain)
print("RF, 1, 2, 4, ...", rf_dilated)
assert rf_plain == [2 * L + 1 for L in layers]
assert rf_dilated == [2 ** (L + 1) - 1 for L in layers]

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1.3, 1, 1]})
axes[0].plot(layers, rf_plain, "o-", label="dilation 1, 1, 1, ...: 2L + 1")
axes[0].plot(layers, rf_dilated, "s-", label="dilation 1, 2, 4, ...: 2^(L+1) - 1")
axes[0].set_xticks(layers)
axes[0].set_xlabel("number of 3 x 3 conv layers L"); axes[0].set_ylabel("receptive field (pixels)")
axes[0].set_title("receptive field, measured with an impulse")
axes[0].legend()
for ax, dil, title in [(axes[1], [1] * 4, "4 layers, dilation 1"), (axes[2], [1, 2, 4, 8], "4 layers, dilation 1, 2, 4, 8")]:
    r = impulse_response(dil)
    ax.imshow(r > 0, cmap="Greys", interpolation="nearest", extent=(-32.5, 32.5, 32.5, -32.5))
    ax.set_title(f"{title}\nRF {extent(r)} x {extent(r)}")
    ax.set_xticks([-32, -16, 0, 16, 32]); ax.set_yticks([-32, -16, 0, 16, 32])
savefig(fig, "10_receptive_field.png")

# %% [markdown]
# ## 3. Shift-and-stitch equals filter rarefaction (FCN, section 3.2)
#
# Take a small net with one stride-2 layer: conv 3 x 3 -> ReLU -> max pool 2 x 2 / 2 ->
# conv 3 x 3 -> ReLU -> conv 1 x 1. Its output is at stride 2. Two ways to get an
# output for *every* input pixel:
#
# - **shift-and-stitch**: run the net on the input shifted by (a, b) for a, b in {0, 1}
#   (drop the first a rows and b columns) and interleave: output pixel (2i + a, 2j + b)
#   of the dense map is pixel (i, j) of run (a, b). Four passes for stride 2, f^2 for
#   stride f.
# - **filter rarefaction** (*à trous*): set the pool's stride to 1 and dilate every
#   later kernel by 2 (conv 3 x 3 with dilation 2; a 1 x 1 kernel is unchanged).
#   One pass.
#
# The FCN paper notes that the second reproduces the first exactly. Check it (to
# float64 rounding, about 1e-13):

# %%
w1, b1 = rng.standard_normal((4, 1, 3, 3)), rng.standard_normal(4)
w2, b2 = rng.standard_normal((5, 4, 3, 3)), rng.standard_normal(5)
w3, b3 = rng.standard_normal((2, 5, 1, 1)), rng.standard_normal(2)


def strided_net(x):
    h = F.relu(F.conv2d(x, w1, b1)[0])[0]
    h = F.max_pool2d(h, 2, 2)[0]
    h = F.relu(F.conv2d(h, w2, b2)[0])[0]
    return F.conv2d(h, w3, b3)[0]


def a_trous_net(x):
    h = F.relu(F.conv2d(x, w1, b1)[0])[0]
    h = F.max_pool2d(h, 2, 1)[0]                          # stride removed
    h = F.relu(F.conv2d(h, w2, b2, dilation=2)[0])[0]     # the next kernel rarefied
    return F.conv2d(h, w3, b3)[0]


image = rng.standard_normal((1, 1, 30, 30))
dense = a_trous_net(image)                                 # (1, 2, 23, 23)
stitched = np.full_like(dense, np.nan)
for a in range(2):
    for b in range(2):
        out = strided_net(image[:, :, a:, b:])
        oh, ow = min(out.shape[2], -(-(dense.shape[2] - a) // 2)), min(out.shape[3], -(-(dense.shape[3] - b) // 2))
        stitched[:, :, a:a + 2 * oh:2, b:b + 2 * ow:2] = out[:, :, :oh, :ow]
coarse = strided_net(image)
err = np.max(np.abs(stitched - dense))
print(f"strided net: {coarse.shape[2:]} output; a trous net: {dense.shape[2:]}; "
      f"max |shift-and-stitch - a trous| = {err:.1e}")
assert not np.isnan(stitched).any()                        # the four shifts cover every pixel
assert err < 1e-12
assert dense[:, :, ::2, ::2].shape == coarse.shape                 # shift (0, 0) is the strided net itself
assert np.allclose(dense[:, :, ::2, ::2], coarse, rtol=1e-12, atol=1e-12)

# %%
fig, axes = plt.subplots(1, 4, figsize=(15, 4))
axes[0].imshow(coarse[0, 0], cmap="viridis", interpolation="nearest")
axes[0].set_title(f"strided net, {coarse.shape[2]} x {coarse.shape[3]}\n(stride 2)")
shift_id = np.zeros(dense.shape[2:], int)
for a in range(2):
    for b in range(2):
        shift_id[a::2, b::2] = 2 * a + b
axes[1].imshow(shift_id, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
axes[1].set_title("which shift fills each pixel: (0, 0) blue,\n(0, 1) orange, (1, 0) green, (1, 1) red", fontsize=10)
axes[2].imshow(stitched[0, 0], cmap="viridis", interpolation="nearest")
axes[2].set_title(f"stitched from 4 passes\n{stitched.shape[2]} x {stitched.shape[3]}")
axes[3].imshow(dense[0, 0], cmap="viridis", interpolation="nearest")
axes[3].set_title(f"a trous net, one pass\nmax difference {err:.0e}")
axes[0].set_xticks(range(0, coarse.shape[3], 5)); axes[0].set_yticks(range(0, coarse.shape[2], 5))
for ax in axes[1:]:
    ax.set_xticks(range(0, dense.shape[3], 5)); ax.set_yticks(range(0, dense.shape[2], 5))
savefig(fig, "10_shift_and_stitch.png")

# %% [markdown]
# The paper did not use this in its final nets: the dense output costs f^2 as much
# compute in every later layer, and the rarefied filters see no more context than
# before, so skip fusion gave better results for the cost (section 4.2). DeepLab
# later made it work by keeping output stride 8 and *training* with dilated kernels.

# %% [markdown]
# ## 4. Gridding: the holes in a stack of dilated kernels
#
# A 3 x 3 kernel with dilation 2 reads only pixels at even offsets. Stack three of
# them and every output still depends only on pixels at even offsets: 7 x 7 of the
# 13 x 13 box (29%, a quarter for deeper stacks), in a grid. Neighbouring outputs look at disjoint
# lattices, so a pattern at the scale of one pixel is invisible to half the outputs
# in each direction (Wang et al., "Understanding convolution for semantic
# segmentation", WACV 2018, call this gridding). Dilations without a common factor,
# such as 1, 2, 3 (their "hybrid dilated convolution") or 1, 2, 4, fill the box.

# %%
stacks = {"2, 2, 2": [2, 2, 2], "1, 2, 3": [1, 2, 3], "1, 2, 4": [1, 2, 4]}
coverage = {}
for name, dil in stacks.items():
    r = impulse_response(dil)
    ys, xs = np.nonzero(r)
    box = r[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    coverage[name] = float(np.mean(box > 0))
    print(f"dilations {name}: RF {extent(r)} x {extent(r)}, {100 * coverage[name]:.0f}% of its box reached")
r222 = impulse_response([2, 2, 2])
even = np.zeros_like(r222, bool)
even[::2, ::2] = True                                       # the centre (32, 32) is at even offsets
assert np.array_equal(r222 > 0, even & (np.abs(np.arange(65) - 32)[:, None] <= 6) & (np.abs(np.arange(65) - 32) <= 6))
assert np.isclose(coverage["2, 2, 2"], 49 / 169)
assert coverage["1, 2, 3"] == 1.0 and coverage["1, 2, 4"] == 1.0

# one-pixel stripes on the odd columns: the outputs on even columns never see them
stripes = np.zeros((1, 1, 40, 40))
stripes[:, :, :, 1::2] = 1.0
response = {}
for name, dil in (("2, 2, 2", [2, 2, 2]), ("1, 2, 3", [1, 2, 3])):
    h = stripes
    for d in dil:
        h, _ = F.conv2d(h, np.ones((1, 1, 3, 3)) / 9, padding=d, dilation=d)
    response[name] = h[0, 0, 8:-8, 8:-8]                     # away from the zero padding
print("even columns, dilations 2, 2, 2:", np.unique(np.round(response["2, 2, 2"][:, ::2], 6)))
print("odd columns, dilations 2, 2, 2:", np.unique(np.round(response["2, 2, 2"][:, 1::2], 6)))
assert np.all(response["2, 2, 2"][:, ::2] == 0) and np.all(response["2, 2, 2"][:, 1::2] > 0.99)
assert response["1, 2, 3"].min() > 0.2                      # every output sees the stripes

# %%
fig, axes = plt.subplots(1, 5, figsize=(17, 3.8))
for ax, name in zip(axes[:3], stacks):
    r = impulse_response(stacks[name])
    ax.imshow(np.where(r > 0, np.log1p(r), np.nan), cmap="viridis", interpolation="nearest",
              extent=(-32.5, 32.5, 32.5, -32.5))
    ax.set_xlim(-10.5, 10.5); ax.set_ylim(10.5, -10.5)
    ax.set_xticks([-10, -5, 0, 5, 10]); ax.set_yticks([-10, -5, 0, 5, 10])
    ax.set_title(f"dilations {name}: pixels reached\n{100 * coverage[name]:.0f}% of the box (white: never)")
for ax, name in zip(axes[3:], response):
    ax.imshow(response[name][:12, :12], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(0, 12, 2)); ax.set_yticks(range(0, 12, 2))
    ax.set_title(f"one-pixel stripes (odd columns)\nafter dilations {name}; black = 0")
savefig(fig, "10_gridding.png")

# %% [markdown]
# ## What we saw
#
# - A dilated convolution is an ordinary convolution with D - 1 zeros between the
#   kernel taps: same weights, wider reach, D (K - 1) + 1 pixels.
# - Stacked 3 x 3 layers reach 2L + 1 pixels without dilation and 2^(L+1) - 1 with
#   dilations 1, 2, 4, ...: exponential context at full resolution.
# - Removing a stride and dilating the later filters by it gives exactly the dense
#   output that shift-and-stitch assembles from f^2 shifted passes (FCN, section 3.2).
# - Equal dilations stacked leave holes (gridding): with 2, 2, 2 each output sees a
#   quarter of its box and misses one-pixel detail entirely; 1, 2, 3 or 1, 2, 4 do not.
# - DeepLab's LargeFOV head (fc6 with dilation 12) and the ASPP branches (6, 12, 18,
#   24) are exactly such kernels on a stride-8 trunk.
