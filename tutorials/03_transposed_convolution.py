# %% [markdown]
# # Lesson 3 — Transposed convolution, four ways
#
# An FCN's score map is coarse (one pixel per 32 input pixels in FCN-32s). To get back
# to input resolution the network *upsamples* with a **transposed convolution**, often
# called "deconvolution" (misleadingly: in signal processing deconvolution *undoes* a
# convolution; this operator does not invert anything, it transposes). The same
# operator can be described in four ways, and each explains something different:
#
# 1. **the backward pass of a convolution** (with respect to its input): why it exists
#    and how its gradient is computed;
# 2. **scatter**: every input pixel adds a copy of the kernel, scaled by its value,
#    into the output at stride S: how to picture it;
# 3. **multiplication by the transpose of the convolution matrix**: where the name
#    comes from;
# 4. **zero insertion followed by an ordinary convolution** with the flipped kernel:
#    why it is a "fractionally strided" convolution.
#
# We start with a 2 x 2 example small enough to check with pencil and paper, compute
# all four views on the same input and check that they agree, derive the output-size
# formula and its ambiguity (`output_padding`), show that the transposed convolution
# is **not** the inverse of the convolution, look at the checkerboard artefacts that
# appear when the kernel size is not divisible by the stride, and end with two ways
# to make the upsampled map line up with the image: d2l's k = 2s, p = s/2 and FCN's
# padding 100 plus a crop. (Facts here follow the d2l chapter on transposed
# convolution, Zhang et al., *Dive into Deep Learning*, and Dumoulin & Visin, "A guide
# to convolution arithmetic for deep learning", 2016.)
#
# Set-up (first cell): `from _lesson import ...` makes minifcn importable from a
# checkout and sends figures to `tutorials/figures/`.
#
# Notation: input (N, C_in, H, W); weight (C_in, C_out, KH, KW) (note the order: the
# transposed convolution's weight has the layout of the convolution it transposes);
# stride S, padding P.

# %%
import numpy as np

from _lesson import savefig, plt
from minifcn import functional as F

rng = np.random.default_rng(0)

H, W, K, S, P = 3, 4, 3, 2, 1
x = rng.standard_normal((1, 1, H, W))
w = rng.standard_normal((1, 1, K, K))

y, _ = F.conv_transpose2d(x, w, stride=S, padding=P)
OH, OW = y.shape[2:]
print("input", x.shape, "-> transposed conv output", y.shape)

# %% [markdown]
# ## A worked example, by hand
#
# Input x = [[1, 2], [3, 4]], kernel k = [[1, 1], [0, 2]], stride 1, no padding. Each
# input pixel drops a copy of the kernel, scaled by its value, with its top-left
# corner at the pixel's own position; overlaps add:
#
#     1 * k at (0, 0)   2 * k at (0, 1)   3 * k at (1, 0)   4 * k at (1, 1)
#     1 1 0             0 2 2             0 0 0             0 0 0
#     0 2 0             0 0 4             3 3 0             0 4 4
#     0 0 0             0 0 0             0 6 0             0 0 8
#
#     sum:  1 3 2
#           3 9 8
#           0 6 8
#
# With stride 2 the copies move two pixels per input pixel and no longer overlap:
# the 4 x 4 output is the four scaled kernels side by side.

# %%
x_hand = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
k_hand = np.array([[[[1.0, 1.0], [0.0, 2.0]]]])
y1, _ = F.conv_transpose2d(x_hand, k_hand, stride=1)
y2, _ = F.conv_transpose2d(x_hand, k_hand, stride=2)
print("stride 1:\n", y1[0, 0].astype(int), "\nstride 2:\n", y2[0, 0].astype(int))
assert np.array_equal(y1[0, 0], [[1, 3, 2], [3, 9, 8], [0, 6, 8]])
assert np.array_equal(y2[0, 0], [[1, 1, 2, 2], [0, 2, 0, 4], [3, 3, 4, 4], [0, 6, 0, 8]])

# %% [markdown]
# ## View 1: the backward pass of a convolution
#
# A convolution with stride S, padding P maps a big z (OH x OW) to a small map
# (H x W). Its gradient with respect to z, given an upstream gradient of shape H x W,
# is a big OH x OW map. Feed `x` in as that upstream gradient: the result is the
# transposed convolution of x. In formulas: `conv_transpose(x) = d<conv(z), x>/dz`.

# %%
z = np.zeros((1, 1, OH, OW))
small, cache = F.conv2d(z, w, stride=S, padding=P)
assert small.shape == x.shape                      # conv brings OH x OW back to H x W
view1, _, _ = F.conv2d_backward(x, cache)
assert np.allclose(view1, y, rtol=1e-12, atol=1e-12)
print("view 1 (backward of conv) == conv_transpose2d")

# %% [markdown]
# ## View 2: scatter a copy of the kernel per input pixel
#
# Work on the output *before* cropping the padding: size (H - 1) S + K. Input pixel
# (i, j) adds `x[i, j] * kernel` into the K x K block whose corner is (S i, S j).
# Where blocks overlap the copies add. Finally P rows and columns are cut from each
# side (padding in a transposed convolution *removes* border, because in the
# convolution it transposes it *added* border).

# %%
full = np.zeros(((H - 1) * S + K, (W - 1) * S + K))
steps = []
for i in range(H):
    for j in range(W):
        full[S * i:S * i + K, S * j:S * j + K] += x[0, 0, i, j] * w[0, 0]
        steps.append(full.copy())
view2 = full[P:full.shape[0] - P, P:full.shape[1] - P]
assert np.allclose(view2, y[0, 0], rtol=1e-12, atol=1e-12)
print("view 2 (scatter) == conv_transpose2d")

# %% [markdown]
# ## View 3: the transpose of the convolution matrix
#
# A convolution is linear, so it is a matrix: `conv(z).ravel() = M @ z.ravel()` with
# M of shape (H*W, OH*OW). Build M column by column by convolving each basis image.
# Then the transposed convolution is multiplication by M^T, shape (OH*OW, H*W).

# %%
M = np.zeros((H * W, OH * OW))
for col in range(OH * OW):
    e = np.zeros(OH * OW)
    e[col] = 1.0
    M[:, col] = F.conv2d(np.reshape(e, (1, 1, OH, OW)), w, stride=S, padding=P)[0].ravel()
view3 = np.reshape(M.T @ x.ravel(), (OH, OW))
assert np.allclose(view3, y[0, 0], rtol=1e-12, atol=1e-12)
print("view 3 (M^T @ x) == conv_transpose2d; M is", M.shape)

# %% [markdown]
# ## View 4: insert zeros, then an ordinary convolution
#
# Put S - 1 zeros between neighbouring input pixels (the input is now "stride 1/S"),
# pad the result by K - 1 - P on every side, and convolve with stride 1 using the
# kernel **rotated by 180 degrees**. This is why the transposed convolution is also
# called a fractionally strided convolution. (It wastes work on the zeros; the scatter
# form, or col2im, does not.)

# %%
dilated = np.zeros((1, 1, (H - 1) * S + 1, (W - 1) * S + 1))
dilated[:, :, ::S, ::S] = x
flipped = w[:, :, ::-1, ::-1].copy()
view4, _ = F.conv2d(dilated, flipped, padding=K - 1 - P)
assert np.allclose(view4, y, rtol=1e-12, atol=1e-12)
print("view 4 (zero insertion + conv with the flipped kernel) == conv_transpose2d")

# %% [markdown]
# ### With channels
#
# With C_in input and C_out output channels the weight is (C_in, C_out, K, K), which
# is exactly the layout of the weight of the convolution going the other way
# (C_out_conv = C_in, C_in_conv = C_out). So the *same array* serves both, and the
# adjoint identity `<conv(z), x> = <z, conv_transpose(x)>` holds for any z and x.

# %%
C_IN, C_OUT = 2, 3
xc = rng.standard_normal((2, C_IN, H, W))
wc = rng.standard_normal((C_IN, C_OUT, K, K))
yc, _ = F.conv_transpose2d(xc, wc, stride=S, padding=P)
zc = rng.standard_normal(yc.shape)
conv_z, _ = F.conv2d(zc, wc, stride=S, padding=P)
lhs, rhs = np.sum(conv_z * xc), np.sum(zc * yc)
print(f"<conv(z), x> = {lhs:.10f}   <z, conv_transpose(x)> = {rhs:.10f}")
assert abs(lhs - rhs) < 1e-9 * max(1.0, abs(lhs))

# %%
def show(ax, img, title, numbers=False, vmax=None):
    """A small grid in a diverging colour map (red > 0, blue < 0), integer ticks."""
    vmax = vmax or np.abs(img).max()
    ax.imshow(img, cmap="coolwarm", vmin=-vmax, vmax=vmax)
    if numbers:
        for (i, j), v in np.ndenumerate(img):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(img.shape[1])); ax.set_yticks(range(img.shape[0]))
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=10)


fig, axes = plt.subplots(1, 6, figsize=(19, 3.8), gridspec_kw={"width_ratios": [1, 0.8, 1.3, 1.3, 1.6, 1.3]})
v = np.abs(full).max()
show(axes[0], x[0, 0], f"input x ({H} x {W})", numbers=True)
show(axes[1], w[0, 0], f"kernel ({K} x {K})", numbers=True)
show(axes[2], full, f"view 2: {H * W} scaled kernel copies\nadded at stride {S}; box: crop P = {P}", vmax=v)
axes[2].add_patch(plt.Rectangle((P - 0.5, P - 0.5), OW, OH, fill=False, lw=2, color="k"))
show(axes[3], y[0, 0], f"output ({OH} x {OW}): views 1-4\nall give these numbers", vmax=v)
axes[4].imshow(M.T, cmap="coolwarm", aspect="auto", vmin=-np.abs(M).max(), vmax=np.abs(M).max())
axes[4].set_title(f"view 3: M^T, ({OH * OW}, {H * W})\n(rows: output pixels)", fontsize=10)
axes[4].set_xticks(range(0, H * W, 2)); axes[4].set_yticks(range(0, OH * OW, 5))
axes[4].tick_params(labelsize=7)
show(axes[5], dilated[0, 0], f"view 4: zeros inserted\n(S - 1 = {S - 1} between pixels)", vmax=np.abs(x).max())
savefig(fig, "03_four_views.png")

# %% [markdown]
# ## The output size
#
# From the scatter view: the last kernel copy starts at (H - 1) S and is K wide, so
# the uncropped output has (H - 1) S + K pixels; cropping P from each side gives
#
#     OH = (H - 1) S + K - 2P
#
# (with dilation D, K becomes D (K - 1) + 1). It is the convolution formula
# `H = floor((OH + 2P - K) / S) + 1` solved for OH, without the floor: a convolution
# can map several input sizes to the same output size (the floor drops a remainder),
# and the transposed convolution returns the smallest of them. Check on a grid:

# %%
checked = 0
for h in range(1, 7):
    for k in range(1, 6):
        for s in range(1, 4):
            for p in range(0, k):
                oh = (h - 1) * s + k - 2 * p
                if oh < 1:
                    continue
                out, _ = F.conv_transpose2d(np.ones((1, 1, h, 1)), np.ones((1, 1, k, 1)), stride=s, padding=(p, 0))
                assert out.shape[2] == oh == F.conv_transpose_output_size(h, k, s, p)
                back, _ = F.conv2d(out, np.ones((1, 1, k, 1)), stride=s, padding=(p, 0))
                assert back.shape[2] == h                     # the convolution undoes the size change
                checked += 1
print(f"output-size formula checked on {checked} (H, K, S, P) combinations")

# %% [markdown]
# ## The output size is ambiguous: `output_padding`
#
# Because of the floor, a stride-2 convolution with K = 3, P = 1 maps **both** 7 and 8
# pixels to 4. Going back, the transposed convolution must pick one; the formula picks
# 7. Frameworks add a parameter for the other choice: PyTorch's `output_padding` a
# (0 <= a < S) gives OH = (H - 1) S + K - 2P + a, i.e. a extra rows and columns at the
# bottom and right, taken from the uncropped scatter (P rows are cut at the top, only
# P - a at the bottom). minifcn's `conv_transpose2d` takes the same `output_padding`.
# View 1 says what it means: it is the exact gradient of the convolution whose input
# had 8 pixels. The FCNs never need it, because they crop the upsampled map to the
# image size (lesson 5).

# %%
for size in (7, 8):
    assert F.conv_output_size(size, 3, 2, 1) == 4          # two input sizes, one output size
assert F.conv_transpose_output_size(4, 3, 2, 1) == 7        # the transposed conv returns the smaller
x4 = rng.standard_normal((1, 1, 4, 4))
w3 = rng.standard_normal((1, 1, 3, 3))
y7, _ = F.conv_transpose2d(x4, w3, stride=2, padding=1)
_, cache8 = F.conv2d(np.zeros((1, 1, 8, 8)), w3, stride=2, padding=1)
y8, _ = F.conv_transpose2d(x4, w3, stride=2, padding=1, output_padding=1)
grad8, _, _ = F.conv2d_backward(x4, cache8)                  # the gradient of the 8-pixel conv
full4 = np.zeros((1, 1, 9, 9))                               # uncropped scatter: (4 - 1) 2 + 3 = 9
for i in range(4):
    for j in range(4):
        full4[0, 0, 2 * i:2 * i + 3, 2 * j:2 * j + 3] += x4[0, 0, i, j] * w3[0, 0]
print("transposed conv:", y7.shape[2:], " with output_padding 1:", y8.shape[2:])
assert y7.shape[2:] == (7, 7) and y8.shape[2:] == (8, 8)
assert np.allclose(y8[..., :7, :7], y7, rtol=1e-12, atol=1e-12)          # the same map ...
assert np.allclose(y8, full4[..., 1:9, 1:9], rtol=1e-12, atol=1e-12)     # ... plus one more row/column
assert np.allclose(y8, grad8, rtol=1e-12, atol=1e-12)

# %% [markdown]
# ## Transposed is not inverse
#
# "Deconvolution" suggests that the operator undoes a convolution. It does not. Take a
# 4 x 4 image z, convolve it with stride 2 (K = 2: four non-overlapping blocks, 16
# numbers -> 4), then apply the transposed convolution with the same kernel: we get a
# 4 x 4 map again, but not z. In matrix terms conv is M (4 x 16) and the transposed
# conv is M^T, and M^T M is not the identity. No operator could do better here: M
# has rank 4, so 12 dimensions of z are gone, and even the best linear reconstruction
# (the pseudo-inverse, M^+ M, a projection) cannot bring them back. What the transpose
# does guarantee is the adjoint identity above, which is what a backward pass needs.

# %%
z = rng.integers(0, 10, size=(1, 1, 4, 4)).astype(float)
k2 = np.array([[[[1.0, 2.0], [0.0, 1.0]]]])
down, _ = F.conv2d(z, k2, stride=2)
back, _ = F.conv_transpose2d(down, k2, stride=2)
M2 = np.stack([F.conv2d(np.reshape(e, (1, 1, 4, 4)), k2, stride=2)[0].ravel() for e in np.eye(16)], axis=1)
best = np.reshape(np.linalg.pinv(M2) @ down.ravel(), (4, 4))
print("z:\n", z[0, 0].astype(int), "\nconv_transpose(conv(z)):\n", back[0, 0].astype(int))
assert M2.shape == (4, 16) and np.linalg.matrix_rank(M2) == 4
assert not np.allclose(back, z)
assert not np.allclose(M2.T @ M2, np.eye(16))
assert not np.allclose(best, z[0, 0])                     # even the pseudo-inverse cannot undo it
assert np.allclose(F.conv2d(best[None, None], k2, stride=2)[0], down)   # it only matches conv(z)

fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
for ax, (img, title) in zip(axes, [(z[0, 0], "z (4 x 4)"), (down[0, 0], "conv(z), K = S = 2 (2 x 2)"),
                                   (back[0, 0], "conv_transpose(conv(z))\n(not z)"),
                                   (best, "pseudo-inverse M^+ conv(z)\n(not z either)")]):
    ax.imshow(img, cmap="Blues", vmin=0, vmax=1.6 * img.max())      # light shades: the numbers stay legible
    for (i, j), v in np.ndenumerate(img):
        ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=9)
    ax.set_title(title)
    ax.set_xticks(range(img.shape[1])); ax.set_yticks(range(img.shape[0]))
savefig(fig, "03_not_inverse.png")

# %% [markdown]
# ## Checkerboard artefacts
#
# In the scatter view each output pixel receives contributions from a number of kernel
# copies that depends on where it sits. If K is divisible by S, every interior pixel
# is covered by the same number, (K / S)^2, of copies. If not, the count alternates
# from pixel to pixel, and even a constant input gives a striped, checkerboard-like
# output (Odena, Dumoulin, Olah, "Deconvolution and Checkerboard Artifacts", Distill
# 2016). Upsample a constant image with an all-ones kernel, stride 2:

# %%
ones = np.ones((1, 1, 8, 8))
uneven, _ = F.conv_transpose2d(ones, np.ones((1, 1, 3, 3)), stride=2)   # K=3 not divisible by S=2
even, _ = F.conv_transpose2d(ones, np.ones((1, 1, 4, 4)), stride=2)     # K=4 divisible by S=2
inner_uneven = uneven[0, 0, 3:-3, 3:-3]
inner_even = even[0, 0, 3:-3, 3:-3]
print("K=3, S=2, interior values:", sorted(set(inner_uneven.ravel().tolist())))
print("K=4, S=2, interior values:", sorted(set(inner_even.ravel().tolist())))
assert sorted(set(inner_uneven.ravel().tolist())) == [1.0, 2.0, 4.0]   # 1 or 2 copies per axis
assert set(inner_even.ravel().tolist()) == {4.0}                        # (K/S)^2 = 4 everywhere

fig, axes = plt.subplots(1, 2, figsize=(8, 4))
for ax, img, title in [(axes[0], uneven[0, 0], "K=3, S=2: checkerboard"),
                       (axes[1], even[0, 0], "K=4, S=2: even coverage")]:
    im = ax.imshow(img, cmap="magma", vmin=0, vmax=4)
    ax.set_title(title + "\n(constant input, all-ones kernel)")
    ax.set_xticks([]); ax.set_yticks([])
fig.colorbar(im, ax=axes, fraction=0.03, label="number of kernel copies")
savefig(fig, "03_checkerboard.png")

# %% [markdown]
# ## Lining the upsampled map up with the image: two designs
#
# A stride-s score map must come back to exactly H x W pixels, each score landing on
# the pixel it describes.
#
# **d2l's design** (the FCN section of *Dive into Deep Learning*, on a ResNet-18
# trunk): a transposed conv with K = 2s, P = s/2. Its size is (H' - 1) s + 2s - s =
# s H', so a coarse map of H' = H / s pixels becomes exactly H; and input pixel i's
# kernel copy spans outputs s i - s/2 .. s i + 3s/2 - 1, centred at s i + (s - 1)/2,
# the centre of the s x s block that coarse pixel i summarises. No crop; the price is
# that H must be a multiple of s (d2l crops its images to 320 x 480).
#
# **FCN's design** (lesson 5): pad the input by 100, upsample with K = 2s and no
# padding, then crop at an offset computed from the coordinate maps (19 for FCN-32s).
# Any input size works, and the crop, not the padding of the transposed conv,
# does the alignment.

# %%
for s_ in (2, 8, 32):
    for h_coarse in range(1, 12):
        assert F.conv_transpose_output_size(h_coarse, 2 * s_, s_, s_ // 2) == s_ * h_coarse
impulse = np.zeros((1, 1, 5, 1))
impulse[0, 0, 2, 0] = 1.0                                    # coarse pixel i = 2
spread, _ = F.conv_transpose2d(impulse, np.ones((1, 1, 64, 1)), stride=32, padding=(16, 0))
rows = np.nonzero(spread[0, 0, :, 0])[0]
print(f"d2l design, s = 32: coarse pixel 2 covers outputs {rows[0]}..{rows[-1]}, centre "
      f"{rows.mean()} = 32 * 2 + 15.5")
assert rows[0] == 32 * 2 - 16 and rows[-1] == 32 * 2 + 48 - 1 and rows.mean() == 32 * 2 + 15.5

from minifcn.models import FCN32s                           # noqa: E402  (FCN's design, lesson 5)
fcn = FCN32s(n_class=2, width=1 / 16).eval()
assert fcn.crop_offsets()["upscore"] == (19, 19)
for h in (33, 47, 64):
    d2l_ok = h % 32 == 0
    out = fcn.forward(np.zeros((1, 3, h, h), np.float32))
    print(f"H = {h}: d2l design needs H divisible by 32: {d2l_ok}; FCN-32s output {out.shape[2]} x {out.shape[3]}")
    assert out.shape[2:] == (h, h)

# %% [markdown]
# ## What we saw
#
# - Four descriptions, one operator: conv's input-gradient, kernel scatter, M^T, and
#   zero insertion + flipped-kernel convolution all gave the same numbers.
# - By hand: x = [[1, 2], [3, 4]] and k = [[1, 1], [0, 2]] give [[1, 3, 2], [3, 9, 8],
#   [0, 6, 8]] at stride 1.
# - `OH = (H - 1) S + K - 2P`, the convolution's size formula run backwards; several
#   sizes map to one under a strided conv, and `output_padding` picks another one.
# - The transpose is the adjoint, not the inverse: conv_transpose(conv(z)) != z, and
#   a strided conv loses information nothing can restore.
# - Choose K divisible by S, or uneven overlap leaves a checkerboard. FCN's upsampling
#   layers use K = 2S (4/2, 16/8, 32/16, 64/32) and start from a *bilinear* kernel:
#   lesson 4.
# - Alignment: K = 2S with P = S/2 (d2l) gives exactly S H' pixels, centred on their
#   blocks, for inputs divisible by S; FCN pads by 100 and crops, for any size.
