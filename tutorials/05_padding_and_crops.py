# %% [markdown]
# # Lesson 5 — Pooling, padding 100 and crop offsets
#
# The reference FCNs contain three odd-looking details:
#
# - the max pools round their output size **up** (Caffe's "ceil mode");
# - the very first convolution, conv1_1, pads its input by **100** pixels;
# - **Crop** layers cut the skip scores and the final upsampled scores at offsets
#   like 19 (FCN-32s), or 5 and 27 (FCN-16s), or 5, 9 and 31 (FCN-8s).
#
# This lesson explains all three. The tool is the **coordinate map**: for every layer,
# the centre of an output pixel's window sits at input coordinate `a * x_out + b`.
# Maps compose through the network, and the crop offsets fall out of the arithmetic
# (minifcn computes them in `minifcn.models.geometry`; nothing is typed in). We derive
# 19 | 5, 27 | 5, 9, 31, check a map by experiment, and break the net on purpose:
# floor-mode pooling, and no padding.
#
# Set-up (first cell): `from _lesson import savefig, plt` makes minifcn importable
# from a checkout (when it is not installed) and sends figures to `tutorials/figures/`
# (or `$MINIFCN_FIGURES`).

# %%
import numpy as np

from _lesson import savefig, plt
from minifcn import functional as F
from minifcn.layers import Conv2d, ConvTranspose2d, MaxPool2d
from minifcn.models import FCN8s, FCN16s, FCN32s
from minifcn.models.geometry import compose, coord_map, crop_offset, IDENTITY

rng = np.random.default_rng(0)
WIDTH = 1 / 16      # channel multiplier: the geometry does not depend on it, the speed does

# %% [markdown]
# ## 1. Ceil-mode pooling
#
# A 2 x 2 / 2 max pool over a row of 5 pixels has windows starting at 0, 2, 4. The
# last one hangs over the edge. Floor mode (`floor((5 - 2) / 2) + 1 = 2` outputs) drops
# it, and with it pixel 4; ceil mode (`ceil((5 - 2) / 2) + 1 = 3`) keeps it and lets the
# window see only the real pixel. In a 5-pool network, floor mode can throw away up to
# 31 rows and columns of the input.

# %%
x = np.arange(25.0).reshape(1, 1, 5, 5)
y_floor, _ = F.max_pool2d(x, 2, 2, ceil_mode=False)
y_ceil, _ = F.max_pool2d(x, 2, 2, ceil_mode=True)
print("input\n", x[0, 0], "\nfloor mode\n", y_floor[0, 0], "\nceil mode\n", y_ceil[0, 0])
assert y_floor.shape[2:] == (2, 2) and y_ceil.shape[2:] == (3, 3)
assert y_ceil[0, 0, 2, 2] == 24.0                      # the corner pixel survives in ceil mode
x2 = x.copy()
x2[..., 4, :] = 1e6                                    # change the last row...
assert np.array_equal(F.max_pool2d(x2, 2, 2)[0], y_floor)   # ...floor mode does not notice

# %% [markdown]
# ## 2. Coordinate maps, one layer at a time
#
# A convolution or pool with kernel K, stride S and padding P reads, for output pixel
# x_out, the input window `[S x_out - P, S x_out - P + K - 1]`, whose centre is
#
#     x_in = S * x_out + (K - 1)/2 - P                     (a = S, b = (K-1)/2 - P)
#
# A transposed convolution is the inverse map (a = 1/S, b = (P - (K-1)/2) / S), and a
# crop at offset O is x_in = x_out + O. Composition: if x = a1 x' + b1 and
# x' = a2 x'' + b2, then x = (a1 a2) x'' + (a1 b2 + b1).

# %%
examples = [("conv 3x3, pad 1", Conv2d(1, 1, 3, padding=1)),
            ("conv1_1: 3x3, pad 100", Conv2d(1, 1, 3, padding=100)),
            ("max pool 2x2 / 2", MaxPool2d(2, 2, ceil_mode=True)),
            ("fc6: 7x7 conv", Conv2d(1, 1, 7)),
            ("upscore: transposed 64 / 32", ConvTranspose2d(1, 1, 64, 32))]
for name, layer in examples:
    m = coord_map(layer)
    print(f"{name:30s} x_in = {m.scale[0]} * x_out + {m.shift[0]}")
assert coord_map(examples[2][1]).shift[0] == 0.5 and coord_map(examples[1][1]).shift[0] == -99

# %% [markdown]
# ### Checking a map by experiment
#
# Take the first two blocks of a VGG16-FCN (conv1_1 with padding 100 ... pool2; scale 4).
# Which input columns can change output column j? With all weights and inputs positive,
# every ReLU passes and a large bump in an input column wins every max pool it reaches,
# so the answer is the **receptive field** of column j. Its centre must be the coordinate
# map's `a * j + b`.

# %%
net = FCN32s(n_class=2, width=WIDTH)
block2 = net.trunk_until("pool2")
for layer in block2:
    if isinstance(layer, Conv2d):
        layer.weight.data = np.abs(layer.weight.data) + 0.01


def run(layers, x_):
    for layer in layers:
        x_ = layer(x_)
    return x_


m2 = compose(block2)
print("map of conv1_1 ... pool2:", f"x_in = {m2.scale[1]} * x_out + {m2.shift[1]}")
base_in = np.ones((1, 3, 4, 40), dtype=np.float32)
base_out = run(block2, base_in)
j = 30           # an output column whose window (centre 4 * 30 - 97.5 = 22.5) lies inside the 40-px input
touched = []
for col in range(base_in.shape[3]):
    bumped = base_in.copy()
    bumped[..., col] = 100.0
    if not np.allclose(run(block2, bumped)[..., j], base_out[..., j]):
        touched.append(col)
centre = (touched[0] + touched[-1]) / 2
print(f"output column {j} is changed by input columns {touched[0]}..{touched[-1]}: "
      f"receptive field {len(touched)} px, centre {centre}; the map says {m2.scale[1] * j + m2.shift[1]}")
assert centre == m2.scale[1] * j + m2.shift[1]
assert touched == list(range(touched[0], touched[-1] + 1)) and len(touched) == 16   # RF of conv-conv-pool-conv-conv-pool

# %% [markdown]
# ## 3. Composing through VGG16: the crop of FCN-32s
#
# Composing every layer from conv1_1 to score_fr gives the map of the coarse score map:
# `x_in = 32 x + 25/2`, i.e. score pixel x looks at a window centred at 32 x + 12.5.
# The final upsampling (K = 64, S = 32, P = 0) has its own map x = u/32 - 63/64;
# composed with the score map it gives scale 32 * 1/32 = 1 and shift
# 32 * (-63/64) + 12.5 = -19. So after upsampling, output pixel u sits at input
# coordinate `u + 12.5 - 31.5 = u - 19`: the upsampled map starts 19 pixels *before*
# the image, and must be cropped at offset **19** to line up with it.

# %%
m = IDENTITY
rows = []
for name, layer in net.trunk + [("score_fr", net.score_fr), ("upscore", net.upscore)]:
    m = m.then(coord_map(layer))
    rows.append((name, m.scale[0], m.shift[0]))
    if name in ("conv1_1", "pool1", "pool2", "pool3", "pool4", "pool5", "fc6", "score_fr", "upscore"):
        print(f"after {name:9s} x_in = {str(m.scale[0]):>5s} * x + {m.shift[0]}")
offset32 = crop_offset(m, IDENTITY)
print("crop offset of FCN-32s:", offset32, " (the model uses", net.crop_offsets(), ")")
assert offset32 == (19, 19) == net.crop_offsets()["upscore"]

# %% [markdown]
# ## 4. The skip crops of FCN-16s and FCN-8s
#
# A skip fuses two blobs of the same scale coming from different paths: the 2x
# upsampled coarse scores and the scores of pool4 (or pool3). Both maps have the same
# scale, so they differ by a shift only; the blob that starts earlier is cropped by
# `(shift_ref - shift_big) / scale`. For FCN-16s:
#
# - fused path at stride 16: trunk -> score_fr -> upscore2 (4/2)
# - skip path: trunk up to pool4 -> score_pool4 (1x1)
#
# and then the final upsampling (32/16) is cropped against the input. FCN-8s adds one
# more stage at stride 8 with pool3.

# %%
def derive(model):
    """Offsets of ``model`` from its layers, step by step (the same rule the library applies)."""
    fused = model.trunk_until("drop7") + [model.score_fr]
    out = {}
    for up, score, tap in [("upscore2", "score_pool4", "pool4"), ("upscore_pool4", "score_pool3", "pool3")]:
        if not hasattr(model, score):
            break
        fused = fused + [getattr(model, up)]
        skip = model.trunk_until(tap) + [getattr(model, score)]
        out[score] = crop_offset(compose(skip), compose(fused))[0]
        print(f"  {score}: skip map shift {compose(skip).shift[0]}, fused map shift {compose(fused).shift[0]}, "
              f"scale {compose(fused).scale[0]} -> offset {out[score]}")
    out["final"] = crop_offset(compose(fused + [model.upscore_final]), IDENTITY)[0]
    print(f"  final upsampling -> offset {out['final']}")
    return out


print("FCN-16s")
o16 = derive(FCN16s(n_class=2, width=WIDTH))
print("FCN-8s")
o8 = derive(FCN8s(n_class=2, width=WIDTH))
assert (o16["score_pool4"], o16["final"]) == (5, 27)
assert (o8["score_pool4"], o8["score_pool3"], o8["final"]) == (5, 9, 31)
print("offsets 19 | 5, 27 | 5, 9, 31 derived")

# %% [markdown]
# The crops are right if the output has exactly the input's size for *every* input
# size. Check FCN-8s on a range of sizes, including 1 x 1 and primes:

# %%
fcn8 = FCN8s(n_class=2, width=WIDTH).eval()
for h, w in [(1, 1), (7, 13), (31, 32), (33, 47), (64, 64), (97, 53)]:
    out = fcn8.forward(np.zeros((1, 3, h, w), np.float32))
    assert out.shape == (1, 2, h, w), (h, w, out.shape)
print("FCN-8s output size == input size for 1x1 ... 97x53")

# %%
sizes = {name: [] for name in ("conv1_1", "pool1", "pool2", "pool3", "pool4", "pool5", "fc7")}
inputs = np.arange(1, 161)
for h in inputs:
    s = h
    for name, layer in net.trunk:
        if isinstance(layer, Conv2d):
            s = F.conv_output_size(s, layer.weight.shape[2], 1, layer.padding)
        elif isinstance(layer, MaxPool2d):
            s = F.pool_output_size(s, 2, 2, ceil_mode=True)
        if name in sizes:
            sizes[name].append(s)
fig, ax = plt.subplots(1, 2, figsize=(12, 4))
for name in ("pool3", "pool4", "pool5", "fc7"):
    ax[0].step(inputs, sizes[name], where="post", label=name)
ax[0].set_xlabel("input size H"); ax[0].set_ylabel("feature map size"); ax[0].legend()
ax[0].set_title("feature sizes with padding 100 (ceil-mode pools)")
names = [r[0] for r in rows]
shifts = [float(r[2]) for r in rows]
ax[1].plot(range(len(rows)), shifts, marker="o")
ax[1].set_xticks(range(len(rows)), names, rotation=90, fontsize=7)
ax[1].axhline(0, color="gray", lw=0.8)
ax[1].set_ylabel("shift b in x_in = a x + b")
ax[1].set_title("coordinate map composed through FCN-32s\n(ends at -19: crop 19)")
savefig(fig, "05_coordinate_maps.png")

# %% [markdown]
# ## 5. What breaks without the padding of 100
#
# VGG16 as a classifier pads its convs by 1. Two things go wrong if the FCN does too:
#
# 1. **Small inputs fail.** fc6 is a 7 x 7 conv, so pool5 must be at least 7 x 7, i.e.
#    the input at least 193 pixels (7 x 32 = 224, less the 31 that ceil mode rounds up
#    over five pools). Padding by
#    100 makes every input size work: pool5 is at least 7 x 7 even for a 1 x 1 image.
# 2. **The crop becomes negative.** The map's shift grows by 99, the offset becomes
#    19 - 99 = -80: the upsampled output would start 80 pixels *inside* the image and
#    not cover it. No crop can fix that; the net would need to pad its output.

# %%
def pool5_size(h, pad):
    s = F.conv_output_size(h, 3, 1, pad)
    for _ in range(5):
        s = F.pool_output_size(s, 2, 2, ceil_mode=True)
    return s


smallest_pad1 = next(h for h in range(1, 400) if pool5_size(h, 1) >= 7)
print("smallest input fc6 accepts: padding 1 ->", smallest_pad1, "px; padding 100 ->",
      next(h for h in range(1, 400) if pool5_size(h, 100) >= 7), "px")
assert smallest_pad1 == 193 and pool5_size(1, 100) == 7

unpadded = FCN32s(n_class=2, width=WIDTH)
unpadded.conv1_1.padding = 1
try:
    unpadded.crop_offsets()
    raise AssertionError("a negative crop must be refused")
except ValueError as exc:
    print("padding 1:", exc)
    assert "-80" in str(exc)

# %% [markdown]
# The other way out is "same" padding everywhere, fc6 included (pad 3): pool5 is then
# ceil(H / 32) for every H >= 1, and no margin is computed. The crops change side: the
# 2x-upsampled scores now start one pixel *before* pool4's scores, so the head crops
# the upsampled h to the skip instead of the skip to h. `same_padding=True` builds it;
# the offsets come from the same coordinate maps.

# %%
same8 = FCN8s(n_class=2, width=WIDTH, same_padding=True).eval()
print("same padding, FCN-8s:", same8.crop_offsets())
assert same8.crop_offsets() == {"upscore2": (1, 1), "upscore_pool4": (1, 1), "upscore8": (4, 4)}
assert all(same8.forward(np.zeros((1, 3, h, h), np.float32)).shape[2] == h for h in range(1, 81))

# %% [markdown]
# ## 6. What breaks with floor-mode pools
#
# The coordinate maps do not depend on the rounding mode (the windows start at the same
# places), so the offsets stay 19 | 5, 27 | 5, 9, 31. But floor mode drops the last
# partial window at each pool, so the maps shrink, and two different things can fail:
#
# - **fc6 does not fit**: pool5 is smaller than fc6's 7 x 7 kernel (small inputs);
# - **the crop does not fit**: the net runs, but the upsampled map, (fc7 - 1) 32 + 64
#   pixels, ends before offset 19 + H, so it cannot cover the image.
#
# The size arithmetic tells which, for every H; a real floor-mode FCN-32s confirms it
# on H = 1..80 (it raises exactly where the arithmetic says something fails).

# %%
def floor_mode_failure(h):
    """None if a floor-mode FCN-32s works on an H x H input, else "fc6" or "crop"."""
    s = h
    for name, layer in net.trunk:
        if isinstance(layer, Conv2d):
            k = layer.weight.shape[2]
            if s + 2 * layer.padding < k:
                return "fc6"
            s = F.conv_output_size(s, k, 1, layer.padding)
        elif isinstance(layer, MaxPool2d):
            s = F.pool_output_size(s, 2, 2, ceil_mode=False)
    upsampled = (s - 1) * 32 + 64
    return None if 19 + h <= upsampled else "crop"


floor32 = FCN32s(n_class=2, width=WIDTH).eval()
for layer in floor32.trunk_until("pool5"):
    if isinstance(layer, MaxPool2d):
        layer.ceil_mode = False
assert floor32.crop_offsets()["upscore"] == (19, 19)
for h in range(1, 81):
    try:
        floor32.forward(np.zeros((1, 3, h, h), np.float32))
        runs = True
    except ValueError:
        runs = False
    assert runs == (floor_mode_failure(h) is None), h
ceil_ok = all(net.eval().forward(np.zeros((1, 3, h, h), np.float32)).shape[2] == h for h in range(1, 81))
assert ceil_ok

heights = np.arange(1, 513)
failure = [floor_mode_failure(int(h)) for h in heights]
fc6_fails = [int(h) for h, f in zip(heights, failure) if f == "fc6"]
crop_fails = [int(h) for h, f in zip(heights, failure) if f == "crop"]
works = [int(h) for h, f in zip(heights, failure) if f is None]
share = len(crop_fails) / len([h for h in heights if h > max(fc6_fails)])
print(f"floor mode, H = 1..512: fc6 does not fit for H = {min(fc6_fails)}..{max(fc6_fails)}; "
      f"the crop does not fit for {len(crop_fails)} of the {512 - max(fc6_fails)} larger sizes "
      f"({100 * share:.0f}%), e.g. {crop_fails[:6]}")
print("ceil mode works for every H = 1..80")
assert fc6_fails == list(range(1, 26))                # every failure below 26 is fc6, not the crop
assert 0.30 < share < 0.45                            # about 37%, not "about half"

# %%
fig, ax = plt.subplots(figsize=(11, 2.0))
for hs, colour, name in [(works, "tab:green", "works"), (fc6_fails, "tab:orange", "fc6 (7 x 7) does not fit pool5"),
                         (crop_fails, "tab:red", "crop does not fit")]:
    ax.scatter(hs, np.zeros(len(hs)), marker="|", s=250, color=colour, label=f"{name} ({len(hs)})")
ax.set_yticks([])
ax.set_xlim(0, 513)
ax.set_xlabel("input size H = W")
ax.set_title("FCN-32s with floor-mode pools, H = 1..512 (ceil mode: all of H = 1..80 run)")
ax.legend(loc="upper center", ncol=3, bbox_to_anchor=(0.5, -0.45), frameon=False)
savefig(fig, "05_floor_mode.png")

# %% [markdown]
# ## What we saw
#
# - Every layer maps output to input coordinates by x_in = a x_out + b; maps compose.
#   We checked one by experiment: the receptive field's centre is where the map says.
# - Through VGG16 with padding 100 the coarse scores sit at x_in = 32 x + 12.5; the
#   64/32 upsampling shifts by -31.5, so FCN-32s crops at 19. The same rule gives 5, 27
#   for FCN-16s and 5, 9, 31 for FCN-8s, computed by the library from the layers.
# - Padding 100 lets any input size through fc6 and keeps the offsets non-negative;
#   ceil-mode pooling keeps the last partial windows so the upsampled map always covers
#   the image.
# - Same padding everywhere (fc6 included) is the other way to accept any size: no
#   margin, and the head crops the upsampled scores to each skip instead (1, 1, then 4).
