# %% [markdown]
# # Lesson 6 — Skip fusion: FCN-32s -> FCN-16s -> FCN-8s
#
# FCN-32s predicts one score vector per 32 x 32 pixels and upsamples it: the semantics
# are right but the boundaries are blobs. The FCN paper's answer (section 4.2) is the
# **skip architecture**: score the finer pool4 (stride 16) and pool3 (stride 8)
# features too, and *add* those scores to the 2x-upsampled coarse scores, stage by
# stage. This lesson:
#
# 1. measures the resolution limit of each stride with an *oracle*: even perfect
#    class scores at stride 32 cannot draw a thin bar;
# 2. steps through FCN-8s's forward pass and draws its score maps at strides 32, 16, 8;
# 3. trains FCN-32s, FCN-16s and FCN-8s the same way on the built-in data set and
#    compares them on the paper's four metrics, with boundaries close up.
#
# The training is short by default (about 5 s per net: too short for the nets to learn
# much; it shows the mechanics). Set `MINIFCN_FULL=1` for the real comparison (about
# 2.5 minutes per net), which also asserts that FCN-8s beats FCN-32s.

# %%
import os
import shutil
import tempfile

import numpy as np

from _lesson import savefig, plt
from minifcn.data import VOCSegmentation, preprocess
from minifcn.data.synthetic import CLASS_NAMES, make_dataset, sample
from minifcn.evaluate import METRICS, evaluate, predict
from minifcn.layers import ConvTranspose2d
from minifcn.metrics import confusion_matrix, scores
from minifcn.train import TrainConfig, Trainer, iterations_for
from minifcn.viz import colorize

FULL = os.environ.get("MINIFCN_FULL", "") not in ("", "0")
N_CLASS = len(CLASS_NAMES)
rng = np.random.default_rng(0)
work = tempfile.mkdtemp(prefix="minifcn-lesson6-")
print("classes:", CLASS_NAMES, "| full run:", FULL)

# %% [markdown]
# ## 1. The resolution limit of a stride
#
# Suppose a network knew the *exact* fraction of each class inside every s x s block of
# the image (the best any stride-s score map could do). Upsample those fractions
# bilinearly, as FCN does (transposed conv, k = 2s, lesson 4), and take the argmax per
# pixel. Whatever this oracle gets wrong, no FCN at stride s can get right without help
# from finer layers. The built-in data set has thin bars and rings and small objects
# on purpose.

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


val_samples = [sample(np.random.default_rng([1, i])) for i in range(30)]
oracle = {}
for s in (32, 16, 8):
    hist = sum(confusion_matrix(lab.astype(np.int64), oracle_prediction(lab, s), N_CLASS)
               for _, lab in val_samples)
    oracle[s] = scores(hist)
    print(f"oracle at stride {s:2d}: mean IU {oracle[s]['mean_iu']:.3f}, "
          f"per class {np.round(oracle[s]['per_class_iu'], 2)}")
assert oracle[8]["mean_iu"] > oracle[16]["mean_iu"] > oracle[32]["mean_iu"]
ring, bar = CLASS_NAMES.index("ring"), CLASS_NAMES.index("bar")
assert oracle[32]["per_class_iu"][ring] < oracle[8]["per_class_iu"][ring]
assert oracle[32]["per_class_iu"][bar] < oracle[8]["per_class_iu"][bar]

# %%
image, label = max(val_samples, key=lambda s_: np.sum(np.isin(s_[1], [ring, bar])))   # thin parts
fig, axes = plt.subplots(1, 5, figsize=(17, 3.8))
axes[0].imshow(image)
axes[0].set_title("image")
axes[1].imshow(colorize(label), interpolation="nearest")
axes[1].set_title("ground truth")
for ax, s in zip(axes[2:], (32, 16, 8)):
    ax.imshow(colorize(oracle_prediction(label, s)), interpolation="nearest")
    ax.set_title(f"oracle at stride {s}\nmean IU (30 images) {oracle[s]['mean_iu']:.2f}")
for ax in axes:
    ax.axis("off")
savefig(fig, "06_oracle_strides.png")

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
# The crop offsets are those derived in lesson 5. The score layers start at zero, so
# an untrained net outputs exactly 0; we look at the maps after training (section 3).
# Two things to expect in that picture: the intermediate maps cover the *padded* input
# (100 pixels on every side, lesson 5), so they reach beyond the image and are cropped
# only at the end; and in a net trained as a whole the coarse map is just one term of
# the final sum, so its argmax alone need not look like a segmentation. Watch how each
# stage adds finer detail.

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
# ## 3. Train the three nets the same way
#
# Same recipe for each (minifcn's trainer: SGD with momentum, poly learning rate,
# class weights, fresh built-in images every step, 2 x 2 crops per canvas), same time,
# from scratch (no ImageNet weights: the built-in classes are simple shapes). The
# paper instead trained them in stages (16s from 32s, 8s from 16s); minifcn supports
# that too (`FCN16s.from_fcn32s`, `--init-from`).

# %%
val_root = make_dataset(os.path.join(work, "data"), n_train=1, n_val=100 if FULL else 12, seed=0, progress=False)
val = VOCSegmentation(val_root, "val")
recipe = dict(width=0.125, crop=128, warmup=50) if FULL else dict(width=0.0625, crop=64, warmup=5)
seconds = 150.0 if FULL else 5.0
results, models, curves = {}, {}, {}
for name in ("fcn32s", "fcn16s", "fcn8s"):
    config = TrainConfig(out=os.path.join(work, name), model=name, val_every=0, checkpoint_every=10 ** 9,
                         log_every=5, **recipe)
    config.iters, per_iter = iterations_for(seconds, config)
    trainer = Trainer(config, progress=FULL)
    trainer.run()
    result, _, _ = evaluate(trainer.model, val, progress=False)
    results[name], models[name] = result, trainer.model
    curves[name] = [(r["iteration"], r["loss"]) for r in trainer.history if "loss" in r]
    print(f"{name}: {config.iters} iterations ({per_iter * 1e3:.0f} ms each), "
          f"loss {curves[name][0][1]:.3f} -> {curves[name][-1][1]:.3f}, mean IU {result['mean_iu']:.3f}")
    assert curves[name][-1][1] < curves[name][0][1]          # it learned something

# %%
header = f"{'model':8s}" + "".join(f"{m:>24s}" for m in METRICS)
print(header)
for name, r in results.items():
    print(f"{name:8s}" + "".join(f"{r[m]:24.3f}" for m in METRICS))
for r in results.values():
    assert all(0.0 <= r[m] <= 1.0 for m in METRICS)
if FULL:
    assert results["fcn8s"]["mean_iu"] > results["fcn32s"]["mean_iu"]
    print("FCN-8s beats FCN-32s by", round(results["fcn8s"]["mean_iu"] - results["fcn32s"]["mean_iu"], 3), "mean IU")

# %%
image, label = val[int(np.argmax([np.sum(np.isin(val[i][1], [ring, bar])) for i in range(len(val))]))]
maps = stages(models["fcn8s"].eval(), image)
fig, axes = plt.subplots(1, 5, figsize=(17, 3.6))
axes[0].imshow(image)
axes[0].set_title("image")
for ax, (title, m) in zip(axes[1:], maps.items()):
    ax.imshow(colorize(np.argmax(m[0], axis=0)), interpolation="nearest")
    ax.set_title(f"{title}\n{m.shape[2]} x {m.shape[3]}, argmax class")
for ax in axes:
    ax.axis("off")
savefig(fig, "06_fcn8s_stages.png")

# %% [markdown]
# ### Boundaries close up
#
# Predictions of the three trained nets and the stride oracles on the same window
# around thin parts. (In the short default run the nets have barely started to learn;
# run with `MINIFCN_FULL=1` to see FCN-8s draw the bars that FCN-32s smears.)

# %%
ys, xs = np.nonzero(np.isin(label, [ring, bar]))
cy, cx = (int(np.median(ys)), int(np.median(xs))) if len(ys) else (label.shape[0] // 2, label.shape[1] // 2)
y0, x0 = max(0, cy - 32), max(0, cx - 32)
window = (slice(y0, y0 + 64), slice(x0, x0 + 64))
panels = [("image", image[window]), ("ground truth", colorize(label)[window])]
panels += [(name, colorize(predict(models[name], image))[window]) for name in ("fcn32s", "fcn16s", "fcn8s")]
panels += [(f"oracle stride {s}", colorize(oracle_prediction(label, s))[window]) for s in (32, 8)]
fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3))
for ax, (title, picture) in zip(axes, panels):
    ax.imshow(picture, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
savefig(fig, "06_boundaries.png")

fig, ax = plt.subplots(figsize=(6, 3.5))
for name, pts in curves.items():
    ax.plot(*zip(*pts), label=name)
ax.set_xlabel("iteration"); ax.set_ylabel("training loss"); ax.legend()
ax.set_title("training loss, same recipe and time")
savefig(fig, "06_training_loss.png")
shutil.rmtree(work, ignore_errors=True)   # the temporary data set and checkpoints

# %% [markdown]
# ## What we saw
#
# - A stride-s score map has a hard resolution limit: even the oracle loses thin bars
#   and rings at stride 32, much less at stride 8.
# - FCN-16s and FCN-8s reach the finer strides by *adding* scores from pool4 and
#   pool3 to the 2x-upsampled coarse scores; each skip is one 1 x 1 conv, one 2x
#   upsampling, one crop and one sum, and the backward pass just sends the gradient
#   into both terms of each sum.
# - Trained the same way for the same time, the finer nets segment thin structures
#   better (the paper's Table 2: FCN-32s 59.4, FCN-16s 62.4, FCN-8s 62.7 mean IU on
#   a subset of VOC2011 val); `MINIFCN_FULL=1` reproduces the ordering here.
