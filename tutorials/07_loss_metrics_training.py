# %% [markdown]
# # Lesson 7 — Loss, metrics and training end to end
#
# An FCN is trained by a loss summed over *pixels* and judged by metrics computed over
# *all pixels of a data set*. This lesson:
#
# 1. computes the pixelwise softmax cross-entropy with the VOC "ignore" label 255 by
#    hand on a tiny example, compares it with minifcn, and derives and checks its
#    gradient;
# 2. computes the paper's four metrics from a confusion matrix by hand, including the
#    awkward cases (a class that is never present, a class that is only predicted);
# 3. trains a small FCN-8s end to end with minifcn's trainer and draws its curves and
#    predictions.
#
# Data: the built-in VOC-format set by default. Point the environment variable
# `MINIFCN_VOC_ROOT` at a VOC2012 folder (or its VOCdevkit parent; `minifcn download-voc
# ROOT` fetches it) to train on real PASCAL VOC instead, and `MINIFCN_VGG16` at a VGG16
# ImageNet .npz (torchvision layout, see `minifcn convert`) to start from pretrained
# weights as the paper does. The default run trains for about 15 s; `MINIFCN_FULL=1`
# trains for 5 minutes at a larger width.

# %%
import os
import shutil
import tempfile

import numpy as np

from _lesson import FIGURES, savefig, plt
from minifcn import functional as F
from minifcn.data import VOCSegmentation
from minifcn.data.synthetic import make_dataset
from minifcn.evaluate import METRICS, evaluate
from minifcn.gradcheck import check_backward
from minifcn.metrics import confusion_matrix, scores
from minifcn.train import TrainConfig, Trainer, iterations_for
from minifcn.viz import plot_curves, save_prediction_tiles

FULL = os.environ.get("MINIFCN_FULL", "") not in ("", "0")
VOC_ROOT = os.environ.get("MINIFCN_VOC_ROOT") or None
VGG16_WEIGHTS = os.environ.get("MINIFCN_VGG16") or None
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Pixelwise softmax cross-entropy with "ignore"
#
# Scores (N, C, H, W), labels (N, H, W). At each pixel the C scores go through a
# softmax, p_c = exp(s_c) / sum_k exp(s_k), and the pixel's loss is -log p_label. VOC
# labels object boundaries and hard regions as 255 ("void"): those pixels contribute
# nothing. The paper's loss is the **mean over the valid pixels**; Caffe's reference
# nets use the **sum over pixels divided by the batch size** ("unnormalized", with a
# tiny learning rate to match). A tiny example, 3 classes on a 2 x 3 image:

# %%
logits = np.array([[[[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]],
                    [[0.5, 0.0, 0.5], [2.0, 1.5, -1.0]],
                    [[-1.0, 2.5, 0.5], [0.0, 0.5, 0.0]]]])          # (N=1, C=3, H=2, W=3)
labels = np.array([[[0, 2, 255], [1, 1, 0]]])                          # (N=1, H=2, W=3)

total, valid = 0.0, 0
for y in range(2):
    for x in range(3):
        if labels[0, y, x] == 255:
            continue                                                   # ignored pixel
        s = logits[0, :, y, x]
        p = np.exp(s) / np.sum(np.exp(s))
        total += -np.log(p[labels[0, y, x]])
        valid += 1
loss_mean, cache = F.softmax_cross_entropy(logits, labels)
loss_sum, _ = F.softmax_cross_entropy(logits, labels, normalize=False)
print(f"by hand: mean over {valid} valid pixels {total / valid:.6f}, sum / N {total:.6f}")
print(f"minifcn: normalize=True {float(loss_mean):.6f}, normalize=False {float(loss_sum):.6f}")
assert valid == 5
assert np.isclose(float(loss_mean), total / valid, rtol=1e-12)
assert np.isclose(float(loss_sum), total / 1, rtol=1e-12)

# %% [markdown]
# ### Its gradient
#
# For one pixel, d(-log p_label)/ds_c = p_c - [c == label]: the softmax minus the
# one-hot label. Averaged over the valid pixels, and exactly zero at ignored ones.
# (Softmax probabilities can be computed in any order of classes; minifcn subtracts
# the per-pixel maximum score first so that exp never overflows.)

# %%
prob = np.exp(logits) / np.sum(np.exp(logits), axis=1, keepdims=True)
onehot = (np.where(labels == 255, 0, labels)[:, None] == np.arange(3)[None, :, None, None]).astype(float)
mask = (labels != 255)[:, None].astype(float)
grad_hand = (prob - onehot) * mask / valid
grad_lib = F.softmax_cross_entropy_backward(cache)
print("gradient at the ignored pixel:", grad_lib[0, :, 0, 2])
assert np.allclose(grad_lib, grad_hand, rtol=1e-12, atol=1e-15)
assert np.all(grad_lib[0, :, 0, 2] == 0.0)

report = check_backward(lambda s, lab: F.softmax_cross_entropy(s, lab),
                        lambda d, c: F.softmax_cross_entropy_backward(c, d), [logits.copy(), labels],
                        name="softmax cross-entropy")
print(report)
assert report.ok

# %% [markdown]
# ## 2. The four metrics from a confusion matrix
#
# Evaluation follows the reference `score.py`: accumulate ONE confusion matrix over the
# whole set, hist[i, j] = number of pixels of true class i predicted as j (truth 255
# dropped), then with n_ij = hist[i, j], t_i = sum_j n_ij (pixels of class i) and
# k classes (paper, section 5):
#
# - pixel accuracy: sum_i n_ii / sum_i t_i
# - mean accuracy: (1/k) sum_i n_ii / t_i
# - mean IU (intersection over union): (1/k) sum_i n_ii / (t_i + sum_j n_ji - n_ii)
# - frequency weighted IU: (1 / sum_k t_k) sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)
#
# "Mean" skips classes where the ratio is 0/0: a class absent from both truth and
# prediction says nothing. A class that is predicted but never true has IU 0 and counts
# (a false alarm is an error). Example with 4 classes: class 3 never appears, class 2 is
# only predicted.

# %%
truth = np.array([[0, 0, 0, 1, 1, 255],
                  [0, 0, 1, 1, 1, 255]])
pred = np.array([[0, 0, 2, 1, 0, 1],
                 [0, 0, 1, 1, 1, 3]])
hist_hand = np.zeros((4, 4), np.int64)
for t, p in zip(truth.ravel(), pred.ravel()):
    if t != 255:
        hist_hand[t, p] += 1
hist = confusion_matrix(truth, pred, 4)
print("confusion matrix (rows: truth, columns: prediction)\n", hist)
assert np.array_equal(hist, hist_hand)


def four_metrics(h):
    """The four metrics straight from the formulas, skipping 0/0 classes."""
    n = h.astype(float)
    t = n.sum(axis=1)
    predicted = n.sum(axis=0)
    acc = [n[i, i] / t[i] for i in range(len(n)) if t[i] > 0]
    union = t + predicted - np.diag(n)
    iu = [n[i, i] / union[i] for i in range(len(n)) if union[i] > 0]
    fw = sum(t[i] * n[i, i] / union[i] for i in range(len(n)) if union[i] > 0) / t.sum()
    return {"pixel_accuracy": np.trace(n) / t.sum(), "mean_accuracy": np.mean(acc),
            "mean_iu": np.mean(iu), "frequency_weighted_iu": fw}


by_hand = four_metrics(hist)
lib = scores(hist)
for m in METRICS:
    print(f"{m:24s} by hand {by_hand[m]:.4f}   minifcn {lib[m]:.4f}")
    assert np.isclose(by_hand[m], lib[m], rtol=1e-12)
assert np.isnan(lib["per_class_iu"][3]) and lib["per_class_iu"][2] == 0.0
# class 2 (only predicted) pulls the mean IU down; class 3 (absent) does not
assert np.isclose(lib["mean_iu"], (4 / 6 + 4 / 5 + 0.0) / 3)   # IU of classes 0, 1, 2

# %%
fig, ax = plt.subplots(figsize=(4.2, 3.8))
ax.imshow(hist, cmap="Blues")
for (i, j), v in np.ndenumerate(hist):
    ax.text(j, i, str(v), ha="center", va="center")
ax.set_xlabel("predicted class"); ax.set_ylabel("true class")
ax.set_title(f"confusion matrix\nmean IU {lib['mean_iu']:.3f} (class 3 skipped)")
savefig(fig, "07_confusion_matrix.png")

# %% [markdown]
# ## 3. Training a small FCN-8s end to end
#
# `minifcn.train.Trainer` runs the loop of the whole library: a batch (a canvas of
# 2 x 2 random crops, gaps labelled 255) -> `model.forward` -> the loss above, with
# class weights -> the hand-written `model.backward` -> SGD with momentum and a poly
# learning rate. It logs, validates with the four metrics, and writes checkpoints
# (`minifcn train` on the command line is the same code). Here it trains from scratch
# for a fixed time.

# %%
work = tempfile.mkdtemp(prefix="minifcn-lesson7-")
if VOC_ROOT:
    data = VOC_ROOT
    val = VOCSegmentation(VOC_ROOT, "val", limit=100 if FULL else 8)
else:
    data = "builtin"
    val = VOCSegmentation(make_dataset(os.path.join(work, "data"), n_train=1, n_val=100 if FULL else 8,
                                       progress=False), "val")
class_names = list(val.class_names)
recipe = dict(width=0.125, crop=128, warmup=50) if FULL else dict(width=0.0625, crop=64, warmup=5)
if VGG16_WEIGHTS:
    recipe["width"] = 1.0          # ImageNet weights exist for the full-width VGG16 only (slow on a CPU)
config = TrainConfig(out=os.path.join(work, "fcn8s"), data=data, model="fcn8s", init=VGG16_WEIGHTS,
                     checkpoint_every=10 ** 9, log_every=5, **recipe)
config.iters, per_iter = iterations_for(300.0 if FULL else 12.0, config)
config.val_every = max(1, config.iters // (5 if FULL else 2))
print(f"data: {VOC_ROOT or 'built-in'}, {len(class_names)} classes; {config.iters} iterations "
      f"of {per_iter * 1e3:.0f} ms at width {config.width}")
trainer = Trainer(config, progress=FULL, val_data=val)
final = trainer.run()
losses = [r["loss"] for r in trainer.history if "loss" in r]
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
print("validation:", {m: round(final[m], 3) for m in METRICS})
assert losses[-1] < losses[0]

# the trainer's metrics are the formulas of section 2 applied to one confusion matrix
result, hist_val, kept = evaluate(trainer.model, val, keep=3, progress=False)
for m in METRICS:
    assert np.isclose(result[m], four_metrics(hist_val)[m], rtol=1e-12)
    assert np.isclose(result[m], final[m], rtol=1e-12)
if FULL and not VOC_ROOT:
    assert result["mean_iu"] > 0.3      # well above all-background (1/6 = 0.17)

# %%
curves_path = plot_curves(trainer.history, FIGURES / "07_curves.png")
tiles_path = save_prediction_tiles([k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept],
                                   FIGURES / "07_predictions.png", class_names)
print(f"figure: {curves_path}\nfigure: {tiles_path}")
assert curves_path.is_file() and tiles_path.is_file()
shutil.rmtree(work, ignore_errors=True)   # the temporary data set and checkpoints

# %% [markdown]
# ## What we saw
#
# - The loss is a softmax cross-entropy per pixel, averaged over valid pixels; ignored
#   pixels contribute neither loss nor gradient, and the gradient is softmax - one-hot.
# - The four metrics come from one confusion matrix over the whole set; nan-means skip
#   classes absent from truth and prediction but count false alarms.
# - The trainer puts every piece of this course together. The short default run only
#   shows the loss falling (a net this size needs minutes to learn the shapes); run
#   with `MINIFCN_FULL=1` for a model worth looking at, or `minifcn demo`.
