# %% [markdown]
# # Lesson 7 — Skip fusion: FCN-32s -> FCN-16s -> FCN-8s
#
# FCN-32s predicts one score vector per 32 x 32 pixels and upsamples it: the semantics
# are right but the boundaries are blobs. The FCN paper's answer (section 4.2) is the
# **skip architecture**: score the finer pool4 (stride 16) and pool3 (stride 8)
# features too, and *add* those scores to the 2x-upsampled coarse scores, stage by
# stage. This lesson:
#
# 1. measures what a stride costs with an *oracle*: perfect class fractions per
#    s x s block, upsampled bilinearly, already lose thin bars at stride 32;
# 2. steps through a trained FCN-8s's forward pass and draws its score maps at
#    strides 32, 16, 8;
# 3. compares trained FCN-32s, FCN-16s and FCN-8s on the paper's four metrics (lesson
#    6) and on the thin classes, with boundaries close up.
#
# The three nets are the small checkpoints in `tutorials/checkpoints/`, trained the
# same way for the same number of steps by `python tutorials/train_checkpoints.py`
# (about 4 MB each; the lesson loads them in seconds). Set-up (first cell):
# `from _lesson import ...` makes minifcn importable and sends figures to
# `tutorials/figures/`. `MINIFCN_FULL=1` trains the three nets from scratch instead
# (about 4 minutes each on two cores).

# %%
import tempfile
from pathlib import Path

import numpy as np

from _lesson import FULL, class_legend, load_checkpoint, plt, savefig, val_samples
from minifcn.data import preprocess
from minifcn.data.synthetic import CLASS_NAMES
from minifcn.evaluate import METRICS, evaluate, predict
from minifcn.layers import ConvTranspose2d
from minifcn.metrics import confusion_matrix, scores
from minifcn.viz import colorize

N_CLASS = len(CLASS_NAMES)
NAMES = ("fcn32s", "fcn16s", "fcn8s")
print("classes:", CLASS_NAMES, "| train from scratch:", FULL)

# %% [markdown]
# ## 1. The resolution limit of a stride
#
# Suppose a network knew the *exact* fraction of each class inside every s x s block of
# the image. Upsample those fractions bilinearly, as FCN does (transposed conv, k = 2s,
# lesson 4), and take the argmax per pixel. This oracle shows what plain averaging at
# stride s loses. It is a yardstick, **not an upper bound**: a trained net's stride-s
# scores need not be block fractions. They can be sharper, or shifted, so that after
# the same bilinear upsampling the argmax lands on a thin bar that the fractions
# smear away; section 3 counts such pixels. The built-in data set has thin bars and
# rings and small objects on purpose (lesson 6).

# %%
def oracle_prediction(label, s):
    """Argmax of the bilinearly upsampled per-block class fractions at stride s."""
    h, w = label.shape
    bh, bw = -(-h // s), -(-w // s)                          # blocks, rounding up
    padded = np.full((bh * s, bw * s), 255, label.dtype)
    padded[:h, :w] = label
    onehot = (padded[None] == np.arange(N_CLASS)[:, None, None]).astype(np.float64)   # void -> all zeros
    fractions = onehot.reshape(N_CLASS, bh, s, bw, s).mean(axis=(2, 4))[None]          # (1, C, bh, bw)
    up = ConvTranspose2d(N_CLASS, N_CLASS, 2 * s, stride=s, padding=s // 2).to(dtype=np.float64)
    return np.argmax(up(fractions)[0, :, :h, :w], axis=0)


val = val_samples(24)           # the validation images of lesson 6
oracle = {}
for s in (32, 16, 8):
    hist = sum(confusion_matrix(lab.astype(np.int64), oracle_prediction(lab, s), N_CLASS)
               for _, lab in val)
    oracle[s] = scores(hist)
    print(f"oracle at stride {s:2d}: mean IU {oracle[s]['mean_iu']:.3f}, "
          f"per class {[round(v, 2) for v in oracle[s]['per_class_iu']]}")
assert oracle[8]["mean_iu"] > oracle[16]["mean_iu"] > oracle[32]["mean_iu"]
ring, bar = CLASS_NAMES.index("ring"), CLASS_NAMES.index("bar")
assert oracle[32]["per_class_iu"][ring] < oracle[8]["per_class_iu"][ring]
assert oracle[32]["per_class_iu"][bar] < oracle[8]["per_class_iu"][bar]

# %%
image, label = max(val, key=lambda s_: np.sum(np.isin(s_[1], [ring, bar])))   # the most thin parts
fig, axes = plt.subplots(1, 5, figsize=(17, 4.4))
axes[0].imshow(image)
axes[0].set_title("image")
axes[1].imshow(colorize(label), interpolation="nearest")
axes[1].set_title("ground truth")
for ax, s in zip(axes[2:], (32, 16, 8)):
    ax.imshow(colorize(oracle_prediction(label, s)), interpolation="nearest")
    ax.set_title(f"oracle at stride {s}\nmean IU (24 images) {oracle[s]['mean_iu']:.2f}")
for ax in axes:
    ax.axis("off")
class_legend(fig)
savefig(fig, "07_oracle_strides.png")

# %% [markdown]
# ## 2. Inside FCN-8s, stage by stage
#
# FCN-8s's head, written out with the model's own layers (the same steps as
# `model.forward`, which we check at the end):
#
#     s32 = score_fr(fc7)                                   stride 32
#     s16 = upscore2(s32)      + crop(score_pool4(pool4))   stride 16   (offset 5)
#     s8  = upscore_pool4(s16) + crop(score_pool3(pool3))   stride 8    (offset 9)
#     out = crop(upscore8(s8))                              stride 1    (offset 31)
#
# The crop offsets are those derived in lesson 5. Two things to expect in the picture:
# the intermediate maps cover the *padded* input (100 pixels on every side, lesson 5),
# so they reach beyond the image and are cropped only at the end; and in a net
# trained as a whole the coarse map is just one term of the final sum, so its argmax
# alone need not be a good segmentation.

# %%
def stages(model, image):
    """Score maps of FCN-8s at strides 32, 16, 8 and 1 for one RGB image."""
    x = preprocess(image)[None].astype(np.float32)
    h, taps = model.forward_trunk(x, taps={"pool4", "pool3"})
    s32 = model.score_fr(h)
    up = model.upscore2(s32)
    s16 = up + model.skips[0].crop(model.score_pool4(taps["pool4"]), up.shape[2:])
    up = model.upscore_pool4(s16)
    s8 = up + model.skips[1].crop(model.score_pool3(taps["pool3"]), up.shape[2:])
    out = model.crop_final(model.upscore8(s8), x.shape[2:])
    assert np.allclose(out, model.forward(x), rtol=1e-5, atol=1e-5)   # the same as the model's forward
    return {"stride 32 (score_fr)": s32, "stride 16 (+ pool4)": s16, "stride 8 (+ pool3)": s8, "output": out}


# %% [markdown]
# ## 3. Three trained nets, compared
#
# Same recipe for each (minifcn's trainer, as in lesson 6: SGD with momentum, poly
# learning rate, class weights, fresh built-in images every step, 2 x 2 crops per
# canvas), the same number of steps, from scratch (no ImageNet weights: the built-in
# classes are simple shapes). The paper instead trained them in stages (16s from
# 32s, 8s from 16s); minifcn supports that too (`FCN16s.from_fcn32s`, `--init-from`).

# %%
if FULL:                                    # retrain the three checkpoints from scratch
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent) if "__file__" in globals() else ".")
    from train_checkpoints import train_one
    fresh = Path(tempfile.mkdtemp(prefix="minifcn-lesson7-"))
    models = {}
    for name in NAMES:
        train_one(name, out_dir=fresh, progress=True)
        from minifcn.models import load_model
        models[name] = load_model(fresh / f"{name}.npz", dtype="float32").eval()
else:
    models = {name: load_checkpoint(name)[0] for name in NAMES}
results = {name: evaluate(models[name], val, progress=False)[0] for name in NAMES}

# %%
header = f"{'model':8s}" + "".join(f"{m:>24s}" for m in METRICS)
print(header)
for name, r in results.items():
    print(f"{name:8s}" + "".join(f"{r[m]:24.3f}" for m in METRICS))
thin = {name: [results[name]["per_class_iu"][c] for c in (ring, bar)] for name in NAMES}
for name in NAMES:
    print(f"{name}: IU ring {thin[name][0]:.3f}, bar {thin[name][1]:.3f}")
assert results["fcn8s"]["mean_iu"] > results["fcn32s"]["mean_iu"] + 0.05
assert all(t8 > t32 + 0.05 for t8, t32 in zip(thin["fcn8s"], thin["fcn32s"]))   # the thin classes gain most
assert results["fcn8s"]["mean_iu"] > results["fcn16s"]["mean_iu"] > results["fcn32s"]["mean_iu"]
print("FCN-8s beats FCN-32s by", round(results["fcn8s"]["mean_iu"] - results["fcn32s"]["mean_iu"], 3), "mean IU")

# %%
maps = stages(models["fcn8s"].eval(), image)
fig, axes = plt.subplots(1, 5, figsize=(17, 4.2))
axes[0].imshow(image)
axes[0].set_title("image")
for ax, (title, m) in zip(axes[1:], maps.items()):
    ax.imshow(colorize(np.argmax(m[0], axis=0)), interpolation="nearest")
    ax.set_title(f"{title}\n{m.shape[2]} x {m.shape[3]}, argmax class")
for ax in axes:
    ax.axis("off")
class_legend(fig, void=False)
savefig(fig, "07_fcn8s_stages.png")
found = [set(np.unique(np.argmax(m[0], axis=0)).tolist()) for m in maps.values()]
print("classes in each stage's argmax:", [sorted(f) for f in found])
assert found[0] <= found[1] <= found[2] and len(found[2]) > len(found[0])   # each skip adds classes
assert {ring, bar} <= found[2] and not ({ring, bar} & found[0])            # thin parts appear at stride 8

# %% [markdown]
# In this trained net the stride-32 term alone says "background" everywhere on this image
# (its argmax finds none of the thin parts); adding the pool4 scores brings the larger
# objects, adding the pool3 scores the ring and pieces of the bars. Each stage adds
# finer detail: the skips do the work the coarse map cannot.

# %% [markdown]
# ### Boundaries close up
#
# Predictions of the three trained nets and the stride oracles on the same window
# around thin parts. FCN-32s puts blobs of the wrong classes near the ring; FCN-16s
# and FCN-8s get the ring's place, FCN-8s its shape best. None of the small nets draws
# the bar well: bars are the hardest class (IU above), and more of their pixels are
# called ring than bar (lesson 6). Then the count promised in section 1: pixels that
# the trained FCN-8s labels right and the stride-8 oracle labels wrong.

# %%
ys, xs = np.nonzero(np.isin(label, [ring, bar]))
cy, cx = (int(np.median(ys)), int(np.median(xs))) if len(ys) else (label.shape[0] // 2, label.shape[1] // 2)
y0, x0 = max(0, cy - 32), max(0, cx - 32)
window = (slice(y0, y0 + 64), slice(x0, x0 + 64))
panels = [("image", image[window]), ("ground truth", colorize(label)[window])]
panels += [(name, colorize(predict(models[name], image))[window]) for name in ("fcn32s", "fcn16s", "fcn8s")]
panels += [(f"oracle stride {s}", colorize(oracle_prediction(label, s))[window]) for s in (32, 8)]
fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.6))
for ax, (title, picture) in zip(axes, panels):
    ax.imshow(picture, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
class_legend(fig)
savefig(fig, "07_boundaries.png")

# %%
beats, thin_true = 0, 0
for im, lab in val:
    valid = lab != 255
    net_right = (predict(models["fcn8s"], im) == lab) & valid
    oracle_wrong = (oracle_prediction(lab, 8) != lab) & valid
    beats += int(np.sum(net_right & oracle_wrong & np.isin(lab, [ring, bar])))
    thin_true += int(np.sum(np.isin(lab, [ring, bar])))
print(f"ring/bar pixels FCN-8s gets right and the stride-8 oracle gets wrong: {beats} "
      f"of {thin_true} ({100 * beats / thin_true:.1f}%)")
assert beats > 0          # the oracle is a yardstick, not a bound

# %% [markdown]
# ## What we saw
#
# - A stride-s score map has a hard resolution limit: even the oracle loses thin bars
#   and rings at stride 32, much less at stride 8.
# - FCN-16s and FCN-8s reach the finer strides by *adding* scores from pool4 and
#   pool3 to the 2x-upsampled coarse scores; each skip is one 1 x 1 conv, one 2x
#   upsampling, one crop and one sum, and the backward pass just sends the gradient
#   into both terms of each sum.
# - Trained the same way for the same number of steps, the finer nets segment thin
#   structures better (the paper's Table 2: FCN-32s 59.4, FCN-16s 62.4, FCN-8s 62.7
#   mean IU on a subset of VOC2011 val); here the gap is larger, because the
#   built-in set is made of thin and small shapes.
# - The oracle is not a bound: a trained net's coarse scores are free to be sharper
#   than block averages, and FCN-8s labels some thin pixels the stride-8 oracle misses.
