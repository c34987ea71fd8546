# %% [markdown]
# # Lesson 11 — DeepLab: output stride 8 by dilation, then bilinear interpolation
#
# FCN-8s reaches stride 8 by fusing pool3 and pool4 scores into upsampled stride-32
# scores (lesson 7). DeepLab (Chen, Papandreou, Kokkinos, Murphy, Yuille, ICLR 2015;
# v2 TPAMI 2017) keeps the VGG16 trunk at **output stride 8** from the start: the last
# two pools keep stride 1 and the convolutions after them are dilated (lesson 10),
# so fc6 sees as much context as before, and a bilinear interpolation brings the
# scores to the image size. This lesson:
#
# 1. reads DeepLab's trunk from minifcn's stage table next to FCN's, and measures the
#    output stride and the receptive field with the coordinate maps (lesson 5);
# 2. compares fc6: FCN's 7 x 7 x 4096 against LargeFOV's 3 x 3 x 1024 with dilation
#    12, and ASPP's four branches with rates 6, 12, 18, 24;
# 3. computes bilinear interpolation by hand (both corner rules), writes it as two
#    small matrices, and checks its backward (the transposed matrices) with a
#    gradient check;
# 4. loads a trained DeepLab-LargeFOV (`tutorials/checkpoints/deeplab-largefov.npz`)
#    and compares it with the trained FCN-8s.
#
# Set-up (first cell): `from _lesson import ...` makes minifcn importable from a
# checkout and sends figures to `tutorials/figures/`.

# %%
import numpy as np

from _lesson import class_legend, load_checkpoint, plt, savefig, val_samples
from minifcn import functional as F
from minifcn.evaluate import evaluate, predict
from minifcn.gradcheck import check_backward
from minifcn.metrics import scores
from minifcn.models import build
from minifcn.models.geometry import compose
from minifcn.models.vgg import DEEPLAB_LARGEFOV, FCN_VGG16
from minifcn.viz import colorize

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The trunk tables, and what they do to the stride
#
# minifcn describes each trunk as a table of stages (channels, convs, dilation, pool).
# FCN's: five stages with 2 x 2 / 2 pools, then fc6 7 x 7 and fc7. DeepLab's: 3 x 3
# pools with padding 1, stride 2 for the first three, **stride 1** for pool4 and
# pool5; conv5 dilated by 2 (pool4's lost stride) and fc6 a 3 x 3 conv dilated by 12.

# %%
def describe(row):
    """One line per table row: a stage's convs and pool, or an fc layer."""
    if hasattr(row, "convs"):
        p = row.pool
        return (f"stage: {row.convs} x conv 3x3, {row.channels} ch, dilation {row.dilation}; pool "
                f"{p.kernel}x{p.kernel} stride {p.stride or p.kernel} pad {p.padding}")
    return f"fc{row.index}: conv {row.kernel}x{row.kernel}, {row.channels} ch, dilation {row.dilation}"


for name, table in (("FCN", FCN_VGG16), ("DeepLab-LargeFOV", DEEPLAB_LARGEFOV)):
    print(name)
    for row in table:
        print("   ", describe(row))

fcn = build("fcn8s", n_class=6, width=1 / 16)
deeplab = build("deeplab-largefov", n_class=6, width=1 / 16)
fcn_map = compose([layer for _, layer in fcn.trunk])
deeplab_map = compose([layer for _, layer in deeplab.trunk])
print(f"output stride of the trunk: FCN {int(fcn_map.scale[0])} | DeepLab {int(deeplab_map.scale[0])}")
print(f"receptive field of one fc7 pixel: FCN {int(fcn_map.receptive_field[0])} px | "
      f"DeepLab {int(deeplab_map.receptive_field[0])} px")
assert fcn_map.scale == (32, 32) and deeplab_map.scale == (8, 8)
assert deeplab_map.receptive_field[0] >= fcn_map.receptive_field[0]   # as much context, at 4x the resolution
assert deeplab_map.shift == (0, 0)           # score pixel i sits on input pixel 8 i exactly

# the same strides measured on a forward pass: the fc7 maps of a 128 x 128 input
x = np.zeros((1, 3, 128, 128), np.float32)
h_fcn = fcn.forward_trunk(x, taps=set())[0]
h_deeplab = deeplab.backbone.forward(x)
print("fc7 maps for a 128 x 128 input: FCN", h_fcn.shape[2:], "(on the 100-padded input) | DeepLab",
      h_deeplab.shape[2:])
assert h_deeplab.shape[2:] == (17, 17)        # ceil-mode 3x3/2 pools: 128 -> 64 -> 32 -> 16, +1 each
assert deeplab.forward(x).shape[2:] == (128, 128)

# %% [markdown]
# ## 2. fc6: large field of view with few weights
#
# DeepLab's fc6 keeps VGG's large field of view with a small kernel: a 3 x 3 kernel at
# dilation 12 spans 25 x 25 stride-8 pixels (200 input pixels), while FCN's 7 x 7 at
# stride 32 spans 224. With 1024 instead of 4096 channels it has 21.8x fewer weights
# than FCN's fc6 (at any width multiplier). ASPP (DeepLab v2) puts four such branches
# side by side, dilations 6, 12, 18, 24, and adds their scores.

# %%
w_fcn = dict(fcn.named_parameters())["fc6.weight"].data
w_deeplab = dict(deeplab.named_parameters())["fc6.weight"].data
print("fc6 weight: FCN", tuple(w_fcn.shape), "| DeepLab-LargeFOV", tuple(w_deeplab.shape),
      f"-> {w_fcn.size / w_deeplab.size:.1f}x fewer")
assert w_fcn.shape[2:] == (7, 7) and w_deeplab.shape[2:] == (3, 3)
assert np.isclose(w_fcn.size / w_deeplab.size, (4096 * 49) / (1024 * 9))
fc6 = dict(deeplab.trunk)["fc6"]
assert fc6.coord_map().receptive_field == (25, 25)          # 12 (3 - 1) + 1, on the stride-8 grid

aspp = build("deeplab-aspp", n_class=6, width=1 / 16)
fields = [compose(aspp.score_path(k)).receptive_field[0] for k in range(len(aspp.heads))]
print("ASPP branches: receptive field per branch (input pixels):", [int(f) for f in fields])
assert len(aspp.heads) == 4 and fields == sorted(fields) and len(set(fields)) == 4

# %% [markdown]
# ## 3. Bilinear interpolation, by hand and as matrices
#
# Two rules say where output pixel i of a resize from h to H pixels reads the input:
#
# - `align_corners=True` (Caffe's Interp, DeepLab): u = i (h - 1) / (H - 1); the corner
#   pixels line up. On a 2 x 2 map [[0, 2], [4, 6]] resized to 3 x 3, the new pixels
#   are the averages: [[0, 1, 2], [2, 3, 4], [4, 5, 6]].
# - `align_corners=False` (pixel centres, PyTorch's default): u = (i + 0.5) h / H - 0.5,
#   clamped to [0, h - 1]. The row [0, 2] resized to 4 reads u = 0 (clamped), 0.25,
#   0.75, 1 (clamped): [0, 0.5, 1.5, 2].
#
# With align_corners=True and H = 8 (h - 1) + 1, output pixel 8 i is input pixel i
# exactly, matching DeepLab's trunk map (scale 8, shift 0) above: the paper's 513 x 513
# crops give 65 x 65 scores.

# %%
y_true, _ = F.interpolate_bilinear(np.array([[[[0.0, 2.0], [4.0, 6.0]]]]), (3, 3), align_corners=True)
y_false, _ = F.interpolate_bilinear(np.array([[[[0.0, 2.0]]]]), (1, 4), align_corners=False)
print("align_corners=True:\n", y_true[0, 0], "\nalign_corners=False:", y_false[0, 0, 0])
assert np.allclose(y_true[0, 0], [[0, 1, 2], [2, 3, 4], [4, 5, 6]], rtol=0, atol=1e-15)
assert np.allclose(y_false[0, 0, 0], [0, 0.5, 1.5, 2], rtol=0, atol=1e-15)
small = rng.standard_normal((1, 1, 5, 5))
big, _ = F.interpolate_bilinear(small, (33, 33), align_corners=True)    # 33 = 8 (5 - 1) + 1
assert np.allclose(big[:, :, ::8, ::8], small, rtol=1e-12, atol=1e-12)

# %% [markdown]
# Bilinear interpolation is separable and linear: y = A_h x A_w^T with A_h (H, h) and
# A_w (W, w) holding the two weights of each output row and column. Its backward is
# therefore dx = A_h^T dy A_w: every output's gradient is sent back to the (up to) four
# inputs it was made from, with the same weights. Build A_h and A_w by interpolating
# identity matrices, compare, and gradient-check the backward in float64.

# %%
h, w, H, W = 4, 5, 9, 7
xs = rng.standard_normal((2, 3, h, w))
ys, cache = F.interpolate_bilinear(xs, (H, W), align_corners=False)
A_h = F.interpolate_bilinear(np.eye(h)[None, None], (H, h), align_corners=False)[0][0, 0]   # columns stay
A_h = A_h if A_h.shape == (H, h) else A_h.T
A_w = F.interpolate_bilinear(np.eye(w)[None, None], (w, W), align_corners=False)[0][0, 0].T
assert A_h.shape == (H, h) and A_w.shape == (W, w)
assert np.allclose(ys, A_h @ xs @ A_w.T, rtol=1e-12, atol=1e-12)
dys = rng.standard_normal(ys.shape)
dxs = F.interpolate_bilinear_backward(dys, cache)
assert np.allclose(dxs, A_h.T @ dys @ A_w, rtol=1e-12, atol=1e-12)
assert np.allclose(A_h.sum(axis=1), 1) and np.allclose(A_w.sum(axis=1), 1)   # each output: weights sum to 1
report = check_backward(lambda a: F.interpolate_bilinear(a, (H, W), align_corners=True),
                        lambda d, c: F.interpolate_bilinear_backward(d, c), [xs.copy()], name="interpolate_bilinear")
print(report)
assert report.ok

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1, 1, 1.2]})
for ax, (M, title) in zip(axes[:2], [(A_h, f"A_h ({H} x {h}): output row <- input rows"),
                                      (A_w, f"A_w ({W} x {w}): output column <- input columns")]):
    ax.imshow(M, cmap="Blues", vmin=0, vmax=1.6)
    for (i, j), v in np.ndenumerate(M):
        if v:
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(M.shape[1])); ax.set_yticks(range(M.shape[0]))
    ax.set_xlabel("input index"); ax.set_ylabel("output index")
    ax.set_title(title, fontsize=10)
axes[2].imshow(big[0, 0], cmap="viridis", interpolation="nearest")
axes[2].scatter(*np.meshgrid(np.arange(0, 33, 8), np.arange(0, 33, 8)), s=12, c="r")
axes[2].set_xticks(range(0, 33, 8)); axes[2].set_yticks(range(0, 33, 8))
axes[2].set_title("5 x 5 -> 33 x 33, align_corners=True:\nred pixels 8 i are the inputs exactly", fontsize=10)
savefig(fig, "11_bilinear.png")

# %% [markdown]
# ## 4. A trained DeepLab-LargeFOV next to the trained FCN-8s
#
# Both predict at stride 8. FCN-8s gets there by adding pool3 and pool4 scores to
# upsampled coarse scores; DeepLab by running conv5 and fc6 at stride 8 (more work in
# those layers: conv5 sees 4x and fc6 16x as many positions as in FCN) and
# interpolating. `tutorials/checkpoints/deeplab-largefov.npz` was trained exactly like
# the FCNs (`python tutorials/train_checkpoints.py deeplab-largefov`: lesson 6's
# recipe, 1500 steps from scratch, width 1/8).
#
# The result is a warning against reading architecture rankings off one small run:
# here DeepLab-LargeFOV learns much less than FCN-8s in the same 1500 steps (numbers
# below), about as much as FCN-32s, and misses the thin classes. This run does not
# say why. It differs from the paper's setting in ways that may matter: no ImageNet
# weights (DeepLab fine-tunes them), a fc6 of only 128 channels at this width, no CRF,
# and a training length tuned for nothing in particular.

# %%
val = val_samples(24)
nets = {"fcn8s": load_checkpoint("fcn8s")[0], "deeplab-largefov": load_checkpoint("deeplab-largefov")[0]}
evaluated = {name: evaluate(net, val, progress=False) for name, net in nets.items()}
results = {name: e[0] for name, e in evaluated.items()}
for name, r in results.items():
    print(f"{name:17s} mean IU {r['mean_iu']:.3f}  per class {[round(v, 2) for v in r['per_class_iu']]}")
hist = evaluated["fcn8s"][1]
hist_background = np.zeros_like(hist)
hist_background[:, 0] = hist.sum(axis=1)                 # predicting background everywhere (lesson 6)
background_only = scores(hist_background)["mean_iu"]
assert results["deeplab-largefov"]["mean_iu"] > 1.5 * background_only          # it learned something
assert results["fcn8s"]["mean_iu"] > results["deeplab-largefov"]["mean_iu"] + 0.1   # but less than FCN-8s here
shown = [0, 3]
fig, axes = plt.subplots(len(shown), 4, figsize=(12, 3.1 * len(shown) + 0.5))
for r, i in enumerate(shown):
    image, label = val[i]
    panels = [(image, "image"), (colorize(label), "ground truth")]
    panels += [(colorize(predict(net, image)), name) for name, net in nets.items()]
    for ax, (picture, title) in zip(axes[r], panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
class_legend(fig)
savefig(fig, "11_deeplab_vs_fcn8s.png")

# %% [markdown]
# ## What we saw
#
# - DeepLab's trunk is FCN's VGG16 with pool4 and pool5 at stride 1 and the layers
#   after them dilated: output stride 8 (coordinate map scale 8, shift 0) instead of 32.
# - LargeFOV's fc6 (3 x 3, dilation 12, 1024 channels) has 21.8x fewer weights than
#   FCN's 7 x 7 x 4096; ASPP adds four such branches with growing fields of view.
# - Bilinear interpolation is y = A_h x A_w^T; its backward is A_h^T dy A_w, checked
#   by hand and by finite differences. With align_corners=True and H = 8 (h - 1) + 1 the
#   scores land exactly on every 8th pixel.
# - Trained from scratch for 1500 steps at width 1/8, DeepLab-LargeFOV segments worse
#   than FCN-8s on this task (mean IU about 0.30 against 0.51): one small run, not a
#   verdict on the architecture.
