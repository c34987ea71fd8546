# %% [markdown]
# # Lesson 1 — From classifier to fully convolutional
#
# A classification network looks at one fixed-size image and outputs one score per
# class. The key observation of the FCN paper (Long, Shelhamer, Darrell, CVPR 2015,
# section 3.1) is that its fully connected layers are convolutions in disguise. Once
# they are written as convolutions, the network accepts an image of *any* size and
# outputs a *map* of class scores: one score vector per window, computed in one pass
# that shares all the work the windows have in common.
#
# This lesson shows, with numbers you can check:
#
# 1. a fully connected layer **is** a convolution whose kernel covers its whole input;
# 2. reshaping a small classifier's FC weights into conv kernels ("convolutionalizing")
#    gives a net whose output on a larger image equals the classifier run on every
#    window;
# 3. how much computation the one pass saves, at our small scale and at VGG16 scale
#    (a 224 x 224 classifier slid over a 384 x 384 image).
#
# Notation: arrays are (N, C, H, W); a kernel is KH x KW.
#
# Set-up (first cell): `from _lesson import savefig, plt` makes minifcn importable
# from a checkout (when it is not installed) and sends figures to `tutorials/figures/`
# (or `$MINIFCN_FIGURES`).

# %%
import time

import numpy as np

from _lesson import savefig, plt
from minifcn import functional as F
from minifcn.layers import Conv2d, Layer, MaxPool2d, ReLU

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. A fully connected layer is a convolution
#
# Take a feature map f of shape (C, H, W) = (16, 4, 4). A fully connected layer with
# 32 outputs flattens it to a vector of 256 numbers and multiplies by a (32, 256)
# matrix:  `y = W @ f.ravel() + b`.
#
# A convolution with 32 output channels and a 4 x 4 kernel, applied to the same 4 x 4
# map without padding, has exactly one window position, so its output is (32, 1, 1),
# and each output is the sum over all (c, ky, kx) of `kernel[o, c, ky, kx] * f[c, ky, kx]`.
# That is the same sum if `kernel = W.reshape(32, 16, 4, 4)`: the flattening order of
# `f.ravel()` is (c, y, x), which is the order of the kernel's axes.

# %%
f = rng.standard_normal((1, 16, 4, 4))           # (N, C, H, W)
W = rng.standard_normal((32, 16 * 4 * 4))        # FC weight (out, in)
b = rng.standard_normal(32)

y_fc = np.reshape(f, (1, -1)) @ W.T + b          # (N, 32)
y_conv, _ = F.conv2d(f, np.reshape(W, (32, 16, 4, 4)), b)   # (N, 32, 1, 1)

print("FC output  ", y_fc.shape, "\nconv output", y_conv.shape)
assert y_conv.shape == (1, 32, 1, 1)
assert np.allclose(y_conv[:, :, 0, 0], y_fc, rtol=1e-12, atol=1e-12)

# %% [markdown]
# ## 2. A small classifier
#
# Our classifier looks at 22 x 22 RGB windows:
#
# | layer | output (C, H, W) |
# |---|---|
# | input | (3, 22, 22) |
# | conv 3x3 + ReLU | (8, 20, 20) |
# | max pool 2x2 / 2 | (8, 10, 10) |
# | conv 3x3 + ReLU | (16, 8, 8) |
# | max pool 2x2 / 2 | (16, 4, 4) |
# | FC 256 -> 32 + ReLU | (32,) |
# | FC 32 -> 5 | (5,) class scores |
#
# The convolutions are unpadded so that a window's features depend only on the pixels
# inside that window (section 5 below explains why that matters). The weights are
# random: the equivalence we are about to show holds for *any* weights, trained or not.

# %%
class Features(Layer):
    """The convolutional part, shared by the classifier and the fully convolutional net."""

    def __init__(self, rng):
        self.conv1, self.relu1, self.pool1 = Conv2d(3, 8, 3, rng=rng), ReLU(), MaxPool2d(2)
        self.conv2, self.relu2, self.pool2 = Conv2d(8, 16, 3, rng=rng), ReLU(), MaxPool2d(2)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        return self.pool2(self.relu2(self.conv2(x)))


features = Features(rng).to(dtype=np.float64)
W1 = rng.standard_normal((32, 256)) * np.sqrt(2 / 256)   # fc1 (out, in)
b1 = rng.standard_normal(32) * 0.1
W2 = rng.standard_normal((5, 32)) * np.sqrt(2 / 32)      # fc2 (out, in)
b2 = rng.standard_normal(5) * 0.1


def classify(window):
    """The classifier: (N, 3, 22, 22) -> (N, 5) class scores."""
    h = np.reshape(features(window), (window.shape[0], -1))   # flatten (N, 16*4*4)
    h = np.maximum(h @ W1.T + b1, 0)
    return h @ W2.T + b2


window = rng.standard_normal((1, 3, 22, 22))
print("class scores of one window:", np.round(classify(window), 3))
assert classify(window).shape == (1, 5)

# %% [markdown]
# ## 3. Convolutionalize it
#
# Replace fc1 by a conv with a 4 x 4 kernel (it covers the whole 4 x 4 feature map of
# one window) and fc2 by a 1 x 1 conv. The weights are the same numbers, reshaped: this
# is the "net surgery" the paper performs on VGG16, whose fc6 becomes a 7 x 7 conv.

# %%
fc1 = Conv2d(16, 32, 4).to(dtype=np.float64)
fc2 = Conv2d(32, 5, 1).to(dtype=np.float64)
fc1.load_state_dict({"weight": np.reshape(W1, (32, 16, 4, 4)), "bias": b1})
fc2.load_state_dict({"weight": np.reshape(W2, (5, 32, 1, 1)), "bias": b2})
relu_fc = ReLU()


def fully_convolutional(image):
    """The same net with convolutions only: (N, 3, H, W) -> (N, 5, OH, OW) score map."""
    return fc2(relu_fc(fc1(features(image))))


scores = fully_convolutional(window)
print("one window through the FCN:", scores.shape)
assert scores.shape == (1, 5, 1, 1)
assert np.allclose(scores[:, :, 0, 0], classify(window), rtol=1e-12, atol=1e-12)

# %% [markdown]
# ## 4. One pass over a larger image = the classifier on every window
#
# The FCN accepts any input size. Feed it a 58 x 58 image. Each output pixel (i, j)
# of the score map sees a 22 x 22 window, and moving one step in the output moves
# the window by the net's total **stride**: 2 x 2 = 4 pixels (the two pools). So the
# output is ((58 - 22) / 4 + 1)^2 = 10 x 10, and pixel (i, j) should equal the
# classifier applied to `image[:, :, 4i : 4i + 22, 4j : 4j + 22]`.

# %%
STRIDE, WIN = 4, 22
image = rng.standard_normal((1, 3, 58, 58))
t0 = time.perf_counter()
dense = fully_convolutional(image)
t_dense = time.perf_counter() - t0
print("score map:", dense.shape)
assert dense.shape == (1, 5, 10, 10)

t0 = time.perf_counter()
per_window = np.zeros_like(dense)
for i in range(10):
    for j in range(10):
        crop = image[:, :, STRIDE * i:STRIDE * i + WIN, STRIDE * j:STRIDE * j + WIN]
        per_window[:, :, i, j] = classify(crop)
t_windows = time.perf_counter() - t0

err = np.max(np.abs(dense - per_window))
print(f"max |FCN - classifier on each window| = {err:.1e}")
print(f"time: one pass {1e3 * t_dense:.1f} ms, 100 windows one by one {1e3 * t_windows:.1f} ms")
assert err < 1e-12
assert t_dense < t_windows

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
axes[0].imshow(image[0, 0], cmap="gray")
for (i, j), color in zip([(0, 0), (0, 9), (9, 4)], ["tab:red", "tab:orange", "tab:green"]):
    axes[0].add_patch(plt.Rectangle((STRIDE * j - 0.5, STRIDE * i - 0.5), WIN, WIN, fill=False,
                                    lw=2, color=color))
    axes[1].add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, color=color))
axes[0].set_title("58 x 58 input; three of the 100\n22 x 22 windows (stride 4)")
axes[1].imshow(dense[0, 0], cmap="gray")
axes[1].set_title("FCN: class-0 scores, 10 x 10 map\n(one pass; boxes = the windows)")
axes[2].imshow(per_window[0, 0], cmap="gray")
axes[2].set_title(f"classifier run on each window: class 0\n(100 runs; max difference {err:.0e})")
for ax in axes:
    ax.set_xticks([]); ax.set_yticks([])
savefig(fig, "01_windows.png")

# %% [markdown]
# ## 5. Why the convolutions here are unpadded
#
# With zero padding inside the net, a window cut out of the image is padded with zeros
# at *its* border, while inside the big image the same positions see real neighbouring
# pixels. Switch both convs to padding 1 and compare again, for all 100 windows. (With
# padding a 22 x 22 window gives 5 x 5 features, the big image 14 x 14; window (i, j)
# starts at pixel 4i, so its top-left 4 x 4 features line up with the dense pass's
# features [i : i + 4, j : j + 4], which produce output pixel (i, j).)

# %%
features.conv1.padding = 1
features.conv2.padding = 1
feat_dense = features(image)                                    # (1, 16, 14, 14)
padded_dense = fc2(relu_fc(fc1(feat_dense)))                    # (1, 5, 11, 11)
gaps = np.zeros((10, 10))
feature_match = np.zeros((5, 5), bool)                          # which of a window's 5 x 5 features agree
for i in range(10):
    for j in range(10):
        crop = image[:, :, 4 * i:4 * i + WIN, 4 * j:4 * j + WIN]
        feat = features(crop)                                   # (1, 16, 5, 5)
        gaps[i, j] = np.max(np.abs(padded_dense[:, :, i, j] - fc2(relu_fc(fc1(feat[:, :, :4, :4])))[:, :, 0, 0]))
        if (i, j) == (3, 3):
            local = np.abs(feat - feat_dense[:, :, 3:8, 3:8]).max(axis=(0, 1))
            feature_match = local < 1e-12
n_differ = int(np.sum(gaps > 1e-6))
score_scale = float(np.max(np.abs(padded_dense)))
print(f"padded convs: {n_differ} of 100 windows differ, by up to {gaps.max():.2f} "
      f"(scores reach {score_scale:.2f})")
print("window (3, 3): which of its 5 x 5 pool2 features equal the dense pass's\n", feature_match.astype(int))
assert n_differ >= 95                       # nearly every window, not just a few near the border
assert gaps.max() > 0.1 * score_scale       # and not by a rounding error
assert feature_match[1:4, 1:4].all()        # features whose receptive field stays inside the window agree
assert not feature_match[0].any() and not feature_match[:, 0].any()   # the ones that reach its border do not
features.conv1.padding = 0
features.conv2.padding = 0

# %% [markdown]
# So the padded net is **not** the classifier slid over the image, not even "away
# from the window borders": nearly every window's scores change, by a sizeable
# fraction of the scores themselves. The reason is in the last check. Only the
# features whose receptive field stays inside the window (the inner 3 x 3 of its
# 5 x 5) are the same in both passes; the ones at the window's edge saw zeros in the
# crop and real pixels in the big image. fc1 is a 4 x 4 kernel over the *whole*
# window's features, edge included, so every score is touched.
#
# VGG16 pads its 3 x 3 convs, so the fully convolutional VGG16 of the FCN paper is a
# close relative of the sliding-window classifier, not an exact copy of it: it shares
# its weights and its stride, and in the interior of the image it sees *more*
# context (real pixels where the classifier saw zeros). That is fine, because the
# FCN is then trained as a dense predictor anyway; but the "one pass equals every
# window" identity of section 4 holds exactly only for an unpadded net.

# %% [markdown]
# ## 6. Counting the shared computation
#
# A convolution with C_in inputs, C_out outputs, a KH x KW kernel and an OH x OW output
# costs C_out * C_in * KH * KW * OH * OW multiply-adds. Neighbouring windows overlap
# (here by 18 of 22 pixels in each direction), and the one-pass net computes every
# overlapping feature once instead of once per window.

# %%
def conv_macs(c_in, c_out, k, out_size):
    return c_out * c_in * k * k * out_size * out_size


def small_net_macs(size):
    """Multiply-adds of the small FCN on a size x size input (pools cost no multiplies)."""
    total = 0
    s = F.conv_output_size(size, 3)
    total += conv_macs(3, 8, 3, s)
    s = F.pool_output_size(s, 2, 2)
    s2 = F.conv_output_size(s, 3)
    total += conv_macs(8, 16, 3, s2)
    s = F.pool_output_size(s2, 2, 2)
    s = F.conv_output_size(s, 4)
    total += conv_macs(16, 32, 4, s) + conv_macs(32, 5, 1, s)
    return total, s


one_window, _ = small_net_macs(22)
one_pass, n_out = small_net_macs(58)
windows = n_out ** 2
print(f"one window: {one_window:,} MACs; {windows} windows one by one: {windows * one_window:,} MACs")
print(f"one pass over the 58 x 58 image: {one_pass:,} MACs "
      f"-> {windows * one_window / one_pass:.1f}x less work")
assert n_out == 10 and one_pass < windows * one_window

# %% [markdown]
# ### At VGG16 scale
#
# VGG16 classifies 224 x 224 crops; sliding it over a 384 x 384 image at its stride of
# 32 gives (384 - 224) / 32 + 1 = 6 positions per axis, 36 windows. The same arithmetic
# with VGG16's layers (thirteen 3 x 3 convs with padding 1, five 2 x 2 pools, fc6 as a
# 7 x 7 conv, fc7 and fc8 as 1 x 1 convs) counts the work. (The paper, section 3.1,
# reports the same effect in time: AlexNet takes 1.2 ms for one 227 x 227 image, its
# fully convolutional version 22 ms for a 10 x 10 grid of outputs on a 500 x 500 image,
# more than 5 times faster than running the 100 windows one by one.)

# %%
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16_macs(size):
    total, c, s = 0, 3, size
    for v in VGG16:
        if v == "M":
            s = F.pool_output_size(s, 2, 2, ceil_mode=True)
        else:
            s = F.conv_output_size(s, 3, padding=1)
            total += conv_macs(c, v, 3, s)
            c = v
    s = F.conv_output_size(s, 7)
    total += conv_macs(512, 4096, 7, s) + conv_macs(4096, 4096, 1, s) + conv_macs(4096, 1000, 1, s)
    return total, s


vgg_window, _ = vgg16_macs(224)
vgg_pass, vgg_out = vgg16_macs(384)
print(f"VGG16 on 224 x 224: {vgg_window / 1e9:.1f} GMACs; output {vgg_out} x {vgg_out} on 384 x 384")
print(f"36 windows one by one: {36 * vgg_window / 1e9:.0f} GMACs; one pass: {vgg_pass / 1e9:.0f} GMACs "
      f"-> {36 * vgg_window / vgg_pass:.1f}x less work")
assert vgg_out == 6
assert 15.0 < vgg_window / 1e9 < 16.0        # VGG16's well-known ~15.5 G multiply-adds
assert vgg_pass < 36 * vgg_window / 5

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for ax, (title, a, b_) in zip(axes, [("small net, 58 x 58 image, 100 windows", windows * one_window, one_pass),
                                     ("VGG16, 384 x 384 image, 36 windows", 36 * vgg_window, vgg_pass)]):
    ax.bar(["each window\nseparately", "one fully\nconvolutional pass"], [a, b_], color=["tab:gray", "tab:blue"])
    ax.set_title(title)
    ax.set_ylabel("multiply-adds")
    ax.text(1, b_, f"{a / b_:.1f}x less", ha="center", va="bottom")
savefig(fig, "01_shared_computation.png")

# %% [markdown]
# ## What we saw
#
# - An FC layer on a (C, H, W) input is an H x W convolution with the FC weights
#   reshaped to (out, C, H, W).
# - After that reshape the network is *fully convolutional*: on a larger image it
#   produces a score map whose pixel (i, j) is exactly the classifier's output on the
#   window at (stride * i, stride * j).
# - The single pass shares the overlapping work. The score map is coarse, though: one
#   score per 4 pixels here, per 32 pixels in VGG16. Lessons 3 and 4 show how FCNs
#   upsample it back to pixels, lesson 5 how the output is aligned with the input, and
#   lesson 7 how skip connections make it fine again.
