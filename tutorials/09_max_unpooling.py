# %% [markdown]
# # Lesson 9 — Max-unpooling (SegNet)
#
# FCN upsamples coarse scores with transposed convolutions and adds skip scores
# (lessons 3-7). SegNet (Badrinarayanan, Kendall, Cipolla, TPAMI 2017) answers "how do
# we get back to full resolution?" differently: each 2 x 2 max pool of the encoder
# remembers **where** its maximum was, and the mirrored decoder **unpools** by putting
# each value back at that position, zeros elsewhere; trainable convolutions then fill
# the zeros in. This lesson:
#
# 1. pools a 4 x 4 example by hand and reads the stored indices;
# 2. unpools it by hand and checks `F.max_unpool2d`;
# 3. shows that unpooling **is** the backward pass of max pooling (and its own
#    backward is a gather, the adjoint);
# 4. compares unpooling with FCN's bilinear transposed convolution on the same
#    stride-8 maps: sparse and exactly placed versus dense and smooth;
# 5. shows a trained SegNet's segmentations next to the trained FCN-8s's.
#
# Set-up (first cell): `from _lesson import ...` makes minifcn importable from a
# checkout and sends figures to `tutorials/figures/`. Runs in a few seconds; section 5
# loads a trained SegNet from `tutorials/checkpoints/`.

# %%
import numpy as np

from _lesson import class_legend, load_checkpoint, plt, savefig, val_samples
from minifcn import functional as F
from minifcn.evaluate import evaluate, predict
from minifcn.metrics import scores
from minifcn.init import bilinear_kernel
from minifcn.viz import colorize

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Pooling that keeps its indices
#
# A 4 x 4 map, pooled 2 x 2 with stride 2. In each window the maximum and its
# position. minifcn stores the position the way PyTorch does: the flat index
# h * W + w in the *input* plane (W = 4 here), as int64.
#
#     input                  window maxima        indices (h * 4 + w)
#      1  6 | 2  0
#      3  4 | 8  5           6   8                1 (0,1)   6 (1,2)
#     ------+------
#      7  0 | 1  1           7   9                8 (2,0)  15 (3,3)
#      2  5 | 3  9

# %%
x = np.array([[[[1.0, 6.0, 2.0, 0.0],
                [3.0, 4.0, 8.0, 5.0],
                [7.0, 0.0, 1.0, 1.0],
                [2.0, 5.0, 3.0, 9.0]]]])
pooled, indices, pool_cache = F.max_pool2d_with_indices(x, 2)
print("maxima:\n", pooled[0, 0], "\nindices:\n", indices[0, 0])
assert np.array_equal(pooled[0, 0], [[6, 8], [7, 9]])
assert np.array_equal(indices[0, 0], [[1, 6], [8, 15]]) and indices.dtype == np.int64
assert np.array_equal(np.take(x[0, 0].ravel(), indices[0, 0]), pooled[0, 0])   # the index points at the max

# %% [markdown]
# ## 2. Unpooling
#
# Put each pooled value back at its stored position in a 4 x 4 map of zeros:
#
#      0  6  0  0
#      0  0  8  0
#      7  0  0  0
#      0  0  0  9
#
# The positions survive, everything else is gone. In SegNet the indices are all the
# decoder keeps of the encoder (2 bits per 2 x 2 window in principle), where FCN's
# skips keep whole feature maps.

# %%
unpooled, unpool_cache = F.max_unpool2d(pooled, indices, (4, 4))
by_hand = np.array([[0, 6, 0, 0], [0, 0, 8, 0], [7, 0, 0, 0], [0, 0, 0, 9]], float)
print("unpooled:\n", unpooled[0, 0])
assert np.array_equal(unpooled[0, 0], by_hand)

# %% [markdown]
# ## 3. Unpooling is the backward pass of max pooling
#
# The gradient of max pooling sends each upstream value to the position of its
# window's maximum and zero elsewhere: exactly what unpooling does with the stored
# indices. And the backward of unpooling gathers at the indices, which is max pooling
# read at the stored positions. Both are linear and each other's adjoint:
# `<unpool(y), z> = <y, unpool_backward(z)>`. Check on a random batch with ceil-mode
# windows (odd sizes):

# %%
xr = rng.standard_normal((2, 3, 9, 7))                   # distinct values: no ties
yr, ir, cr = F.max_pool2d_with_indices(xr, 2, ceil_mode=True)
dy = rng.standard_normal(yr.shape)
grad_pool = F.max_pool2d_backward(dy, cr)
up, up_cache = F.max_unpool2d(dy, ir, (9, 7))
assert yr.shape == (2, 3, 5, 4)
assert np.array_equal(up, grad_pool)                     # unpool(dy) == d(max pool)/dx applied to dy
z = rng.standard_normal(up.shape)
gathered = F.max_unpool2d_backward(z, up_cache)
assert np.allclose(np.sum(up * z), np.sum(dy * gathered), rtol=1e-12)
assert np.array_equal(F.max_unpool2d_backward(xr, up_cache), yr)   # gathering x at the indices = pooling
print("unpool == max-pool backward; unpool backward == gather == max pool; adjoint identity holds")

# %% [markdown]
# ## 4. Unpooling versus bilinear upsampling, on the same maps
#
# Take the label of a built-in image as a one-channel map (ring = 1, rest 0; lesson 6
# introduces the data) and an image channel, pool them three times (stride 8), then go
# back to full size two ways:
#
# - **unpool** three times with the stored indices (SegNet's decoder, before its
#   convolutions): every surviving value is at its exact original position, the rest
#   is zero, at most one pixel in 64;
# - one **bilinear transposed convolution**, K = 16, S = 8 (FCN's fixed upsampling,
#   lesson 4): every pixel near a coarse value gets one, smoothly, but the thin ring
#   is blurred into a thick band.

# %%
val = val_samples(24)
ring = 2
image, label = max(val, key=lambda s: np.sum(s[1] == ring))
h8, w8 = (label.shape[0] // 8) * 8, (label.shape[1] // 8) * 8
maps = np.stack([(label[:h8, :w8] == ring).astype(np.float64), image[:h8, :w8, 1] / 255.0])[None]   # (1, 2, H, W)

level, stack = maps, []
for _ in range(3):
    pooled_l, idx_l, _ = F.max_pool2d_with_indices(level, 2)
    stack.append((idx_l, level.shape[2:]))
    level = pooled_l
coarse = level                                           # (1, 2, H/8, W/8)
unpooled_map = coarse
for idx_l, size in reversed(stack):
    unpooled_map, _ = F.max_unpool2d(unpooled_map, idx_l, size)
kernel = np.zeros((2, 2, 16, 16))
kernel[[0, 1], [0, 1]] = bilinear_kernel(1, 1, 16)[0, 0]      # one channel to itself
bilinear, _ = F.conv_transpose2d(coarse, kernel, stride=8, padding=4)
assert bilinear.shape == maps.shape

kept = unpooled_map != 0
density = kept.mean()
print(f"unpooled: {100 * density:.2f}% of pixels non-zero (at most 1/64 = 1.56%); "
      f"bilinear: {100 * np.mean(bilinear != 0):.0f}% non-zero")
assert density <= 1 / 64 + 1e-12
assert np.mean(bilinear != 0) > 20 * density             # bilinear fills in every pixel near a coarse value
assert np.array_equal(unpooled_map[kept], maps[kept])     # every surviving value is where it came from
ring_unpool = unpooled_map[0, 0] > 0.5
ring_bilinear = bilinear[0, 0] > 0.5
true_ring = maps[0, 0] > 0.5
print(f"pixels called ring (> 0.5): truth {true_ring.sum()}, unpooled {ring_unpool.sum()} "
      f"(all on the ring: {bool(np.all(true_ring[ring_unpool]))}), bilinear {ring_bilinear.sum()} "
      f"({100 * np.mean(true_ring[ring_bilinear]):.0f}% on the ring)")
assert np.all(true_ring[ring_unpool])                     # unpooling never puts a ring pixel off the ring
assert np.mean(true_ring[ring_bilinear]) < 1.0            # bilinear does

# %%
fig, axes = plt.subplots(2, 4, figsize=(15, 6.0))
for row, (channel, name) in enumerate([(0, "ring mask"), (1, "green channel")]):
    panels = [(maps[0, channel], f"{name} ({h8} x {w8})"),
              (coarse[0, channel], f"after 3 max pools ({coarse.shape[2]} x {coarse.shape[3]})"),
              (unpooled_map[0, channel], "unpooled 3 times (SegNet)\nvalues at their exact positions"),
              (bilinear[0, channel], "bilinear transposed conv\nK = 16, S = 8 (FCN)")]
    for ax, (img, title) in zip(axes[row], panels):
        ax.imshow(img, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
savefig(fig, "09_unpool_vs_bilinear.png")

fig, axes = plt.subplots(1, 2, figsize=(7, 2.9))
axes[0].imshow(image)
axes[0].set_title("the image")
axes[1].imshow(colorize(label), interpolation="nearest")
axes[1].set_title("its label (ring used above)")
for ax in axes:
    ax.axis("off")
class_legend(fig, ncol=4)
savefig(fig, "09_source.png")

# %% [markdown]
# ## 5. A trained SegNet next to the trained FCN-8s
#
# `tutorials/checkpoints/segnet.npz` is minifcn's SegNet (VGG16 encoder with batch
# normalisation and index-keeping pools, the mirrored decoder that unpools and
# convolves) trained exactly like the FCNs (`python tutorials/train_checkpoints.py
# segnet`: lesson 6's recipe, 1500 steps from scratch, width 1/8). In those 1500
# steps it has barely started: training loss about 1.0 against FCN-8s's 0.43, and
# speckled predictions. `segnet-4500.npz` is the same recipe run three times as
# long (`... segnet --iters 4500 --suffix -4500`): it catches up most of the way. One
# small run each: the numbers compare these checkpoints, not the architectures in
# general (SegNet's decoder has far more to learn from scratch than FCN's skips).

# %%
nets = {"fcn8s": load_checkpoint("fcn8s")[0], "segnet": load_checkpoint("segnet")[0],
        "segnet-4500": load_checkpoint("segnet-4500")[0]}
evaluated = {name: evaluate(net, val, progress=False) for name, net in nets.items()}
for name, (r, _, _) in evaluated.items():
    print(f"{name:12s} mean IU {r['mean_iu']:.3f}  per class {[round(v, 2) for v in r['per_class_iu']]}")
hist = evaluated["segnet"][1]
hist_background = np.zeros_like(hist)
hist_background[:, 0] = hist.sum(axis=1)                  # predicting background everywhere (lesson 6)
background_only = scores(hist_background)["mean_iu"]
print(f"predicting background everywhere: mean IU {background_only:.3f}")
iu = {name: e[0]["mean_iu"] for name, e in evaluated.items()}
assert background_only < iu["segnet"] < iu["fcn8s"] - 0.2     # 1500 steps: above background, far behind
assert iu["segnet-4500"] > iu["segnet"] + 0.15                 # three times the steps: much better
assert iu["segnet-4500"] < iu["fcn8s"]                         # still behind FCN-8s at 1500
bar = 3
bar_iu = {name: e[0]["per_class_iu"][bar] for name, e in evaluated.items()}
assert bar_iu["segnet-4500"] > 0.9 * bar_iu["fcn8s"]          # but as good on the thin bars
shown = [0, 3]
fig, axes = plt.subplots(len(shown), 5, figsize=(15, 3.1 * len(shown) + 0.5))
for r, i in enumerate(shown):
    img, lab = val[i]
    panels = [(img, "image"), (colorize(lab), "ground truth")]
    panels += [(colorize(predict(net, img)), f"{name} ({iu[name]:.2f} mean IU)") for name, net in nets.items()]
    for ax, (picture, title) in zip(axes[r], panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
class_legend(fig)
savefig(fig, "09_segnet_vs_fcn8s.png")

# %% [markdown]
# In the pictures the longer-trained SegNet traces the thin bars' shape (first image)
# where FCN-8s draws blobs, and it is as good on bars by IU, but its labels are noisy,
# with speckles and mixed classes inside objects. One plausible reading: the decoder
# puts detail back in place from the pooling indices and has not yet learned to make
# it consistent.

# %% [markdown]
# ## What we saw
#
# - Max pooling with indices stores the flat position h * W + w of each window's
#   maximum; on the 4 x 4 example the maxima 6, 8, 7, 9 sit at 1, 6, 8, 15.
# - Unpooling puts each value back at its position and zeros elsewhere. It is the
#   max-pooling backward pass, and its own backward is a gather at the indices.
# - After three pools, unpooling keeps at most 1 pixel in 64, each exactly in place;
#   bilinear upsampling is dense but smears thin structures. SegNet's decoder
#   convolutions densify the sparse maps; FCN's skips add finer scores instead.
# - Trained the same short way, this small SegNet is far behind FCN-8s (mean IU about
#   0.18 against 0.51); with three times the steps it reaches about 0.41.
