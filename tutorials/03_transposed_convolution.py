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
# We compute all four on the same input and check that they agree, then derive the
# output-size formula and look at the checkerboard artefacts that appear when the
# kernel size is not divisible by the stride.
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
fig, axes = plt.subplots(1, 5, figsize=(17, 3.6), gridspec_kw={"width_ratios": [0.8, 1, 1, 1.6, 1]})
axes[0].imshow(x[0, 0], cmap="coolwarm", vmin=-2, vmax=2)
axes[0].set_title(f"input x ({H} x {W})")
v = np.abs(full).max()
axes[1].imshow(steps[0], cmap="coolwarm", vmin=-v, vmax=v)
axes[1].set_title("view 2: after the first\nkernel copy")
axes[2].imshow(full, cmap="coolwarm", vmin=-v, vmax=v)
axes[2].add_patch(plt.Rectangle((P - 0.5, P - 0.5), OW, OH, fill=False, lw=2, color="k"))
axes[2].set_title(f"all {H * W} copies added;\nbox: crop P={P} -> output")
axes[3].imshow(M.T, cmap="coolwarm", aspect="auto", vmin=-np.abs(M).max(), vmax=np.abs(M).max())
axes[3].set_title(f"view 3: M^T, ({OH * OW}, {H * W})")
axes[4].imshow(dilated[0, 0], cmap="coolwarm", vmin=-2, vmax=2)
axes[4].set_title(f"view 4: zeros inserted\n(S - 1 = {S - 1} between pixels)")
for ax in axes:
    ax.set_xticks([]); ax.set_yticks([])
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
# ## What we saw
#
# - Four descriptions, one operator: conv's input-gradient, kernel scatter, M^T, and
#   zero insertion + flipped-kernel convolution all gave the same numbers.
# - `OH = (H - 1) S + K - 2P`, the convolution's size formula run backwards.
# - Choose K divisible by S, or uneven overlap leaves a checkerboard. FCN's upsampling
#   layers use K = 2S (4/2, 16/8, 32/16, 64/32) and start from a *bilinear* kernel:
#   lesson 4.
