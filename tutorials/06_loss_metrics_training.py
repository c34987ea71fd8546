# %% [markdown]
# # Lesson 6 — The task, the loss and the four metrics
#
# Before we look at how FCN-16s and FCN-8s refine FCN-32s (lesson 7), we need the
# task they learn, the loss that teaches them and the numbers that judge them. This
# lesson:
#
# 0. introduces minifcn's **built-in data set**, the task every later lesson uses:
#    its classes, its unlabelled clutter and its 255 ("void") borders;
# 1. computes the pixelwise softmax cross-entropy with the ignore label 255 by hand,
#    compares it with minifcn, derives and checks its gradient, and says what the
#    paper does (a sum over pixels, no class balancing) and what minifcn does;
# 2. computes the paper's four metrics from a confusion matrix by hand, including the
#    awkward cases (a class that is never present, a class that is only predicted);
# 3. loads a **trained FCN-8s** (a small checkpoint made by
#    `python tutorials/train_checkpoints.py`, float16, about 4 MB) and measures it;
# 4. runs minifcn's trainer for a few seconds to show the loop that made it.
#
# Set-up (first cell): `from _lesson import ...` makes minifcn importable from a
# checkout and sends figures to `tutorials/figures/`. `MINIFCN_FULL=1` trains FCN-8s
# from scratch for about 5 minutes in section 4 instead of a few seconds;
# `MINIFCN_VOC_ROOT=/path/to/VOC2012` trains section 4 on PASCAL VOC, and
# `MINIFCN_VGG16` (a VGG16 ImageNet .npz, see `minifcn convert`) starts it from
# pretrained weights as the paper does.

# %%
import os
import shutil
import tempfile

import numpy as np

from _lesson import FULL, class_legend, load_checkpoint, plt, savefig, val_samples
from minifcn import functional as F
from minifcn.data import VOCSegmentation
from minifcn.data.synthetic import CLASS_NAMES, make_dataset, sample
from minifcn.evaluate import METRICS, evaluate, predict
from minifcn.gradcheck import check_backward
from minifcn.metrics import confusion_matrix, scores
from minifcn.train import Batches, TrainConfig, Trainer, iterations_for
from minifcn.viz import colorize

VOC_ROOT = os.environ.get("MINIFCN_VOC_ROOT") or None
VGG16_WEIGHTS = os.environ.get("MINIFCN_VGG16") or None
N_CLASS = len(CLASS_NAMES)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 0. The built-in data set
#
# `minifcn.data.synthetic` draws images in the VOC format: an RGB image and a label
# map of class indices. Six classes: 0 background, 1 disk, 2 ring, 3 bar, 4 triangle,
# 5 square. They differ by **shape and texture**, not by colour (each class's hue is
# drawn from a wide window that overlaps its neighbours'). Rings and bars are 5-8
# pixels thin, and about a third of the objects are small: that is where the stride
# of a net shows (lesson 7). Two details follow VOC:
#
# - **unlabelled clutter**: irregular blotches in any colour, labelled background.
#   The net must learn that colour and "being a thing" are not enough;
# - **255 borders**: a band of "void" (255) on both sides of every object boundary,
#   like VOC's hand-drawn borders. The loss and the metrics ignore those pixels.

# %%
val = val_samples(24)           # the lessons' validation images (in memory, never trained on)
for image, label in val:
    assert image.dtype == np.uint8 and image.ndim == 3 and label.shape == image.shape[:2]
    assert set(np.unique(label).tolist()) <= set(range(N_CLASS)) | {255}
    # 255 borders: no two 4-neighbours carry different real classes; void always sits between
    for a, b in ((label[1:], label[:-1]), (label[:, 1:], label[:, :-1])):
        both = (a != 255) & (b != 255)
        assert np.all(a[both] == b[both])
clutter_image, clutter_label = sample(np.random.default_rng(5), size=(96, 96), n_objects=(0, 0), clutter=(1, 1))
assert np.all(clutter_label == 0)         # the blotch is drawn but labelled background
counts = sum(np.bincount(lab.ravel(), minlength=256) for _, lab in val)
freq = counts[:N_CLASS] / counts[:N_CLASS].sum()
void_share = counts[255] / counts.sum()
print("pixel share per class (void excluded):", {c: round(float(v), 3) for c, v in zip(CLASS_NAMES, freq)})
print(f"void pixels: {100 * void_share:.1f}% of all pixels")
assert freq[0] > 0.75 and 0.02 < void_share < 0.2     # mostly background, a thin void band

# %%
shown = [0, 1, 2, 3]
fig, axes = plt.subplots(2, 5, figsize=(15, 6.4))
for col, i in enumerate(shown):
    axes[0, col].imshow(val[i][0])
    axes[0, col].set_title(f"val image {i} ({val[i][0].shape[0]} x {val[i][0].shape[1]})")
    axes[1, col].imshow(colorize(val[i][1]), interpolation="nearest")
    axes[1, col].set_title("its label map")
axes[0, 4].imshow(clutter_image)
axes[0, 4].set_title("clutter only: a blotch")
axes[1, 4].imshow(colorize(clutter_label), interpolation="nearest")
axes[1, 4].set_title("labelled all background")
for ax in axes.ravel():
    ax.axis("off")
class_legend(fig)
savefig(fig, "06_dataset.png")

# %% [markdown]
# ## 1. Pixelwise softmax cross-entropy with "ignore"
#
# Scores (N, C, H, W), labels (N, H, W). At each pixel the C scores go through a
# softmax, p_c = exp(s_c) / sum_k exp(s_k), and the pixel's loss is -log p_label. VOC
# labels object boundaries and hard regions as 255 ("void"): those pixels contribute
# nothing. Two ways to add the pixels up:
#
# - the FCN paper (section 3) writes the loss as a **sum over the spatial positions**
#   of the output, l(x) = sum_ij l'(x_ij), so that its gradient is the sum of the
#   per-pixel gradients; its reference Caffe nets do exactly that (the "unnormalized"
#   softmax loss: sum over pixels, divided by the batch size N) and make up for the
#   large sum with a tiny learning rate (1e-10 for FCN-32s with the sum, section 4.3
#   and the released solvers);
# - minifcn's default, `normalize=True`, is the **mean over the valid pixels**: the
#   same gradient direction, divided by the number of valid pixels, so the learning
#   rate does not depend on the image size. `normalize=False` is the paper's sum.
#
# A tiny example, 3 classes on a 2 x 3 image:

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
assert np.isclose(float(loss_sum) / float(loss_mean), valid, rtol=1e-12)   # sum = mean x valid pixels

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
# ### Class weights: what minifcn adds
#
# The built-in set is mostly background (above), and the thin classes have few pixels.
# minifcn's trainer therefore weights each pixel's loss by w[label], with w
# proportional to freq^-0.5 (`TrainConfig.class_weights=True`), and the weighted mean
# divides by the sum of the weights, sum w[label] l / sum w[label]. **The paper did
# not**: "although our labels are mildly unbalanced (about 3/4 are background), we find
# class balancing unnecessary" (section 4.3). Set `class_weights=False` to train as
# the paper did.

# %%
weights = Batches(TrainConfig()).class_weights()
print("trainer's class weights:", {c: round(float(v), 2) for c, v in zip(CLASS_NAMES, weights)})
assert np.argmin(weights) == 0 and weights[CLASS_NAMES.index("ring")] > 2 * weights[0]
w3 = np.array([0.5, 2.0, 1.0])
loss_w, _ = F.softmax_cross_entropy(logits, labels, weight=w3)
num = den = 0.0
for y in range(2):
    for x in range(3):
        c = labels[0, y, x]
        if c != 255:
            s_ = logits[0, :, y, x]
            num += w3[c] * -np.log(np.exp(s_[c]) / np.sum(np.exp(s_)))
            den += w3[c]
by_hand_w = num / den
print(f"weighted loss: by hand {by_hand_w:.6f}, minifcn {float(loss_w):.6f}")
assert np.isclose(float(loss_w), by_hand_w, rtol=1e-12)

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
ax.set_xticks(range(4)); ax.set_yticks(range(4))
ax.set_xlabel("predicted class"); ax.set_ylabel("true class")
ax.set_title(f"confusion matrix\nmean IU {lib['mean_iu']:.3f} (class 3 skipped)")
savefig(fig, "06_confusion_matrix.png")

# %% [markdown]
# ## 3. A trained FCN-8s, measured
#
# `tutorials/checkpoints/fcn8s.npz` holds an FCN-8s at the demo's width (1/8 of
# VGG16's channels) trained from scratch on fresh built-in images with minifcn's
# trainer (the command and every setting are in the file's metadata, below). It loads
# in a second. We score it on the 24 validation images with the four metrics of
# section 2.

# %%
model, meta = load_checkpoint("fcn8s")
train_meta = meta["train"]
print(f"checkpoint: {meta['model']}, {train_meta['iterations']} iterations, "
      f"{train_meta['seconds']:.0f} s of training; made by `{train_meta['command']}`")
result, hist_val, kept = evaluate(model, val, keep=4, progress=False)
for m in METRICS:
    print(f"{m:24s} {result[m]:.3f}")
print("IU per class:", {c: round(v, 3) for c, v in zip(CLASS_NAMES, result["per_class_iu"])})
for m in METRICS:
    assert np.isclose(result[m], four_metrics(hist_val)[m], rtol=1e-12)   # the formulas of section 2
hist_background = np.zeros_like(hist_val)
hist_background[:, 0] = hist_val.sum(axis=1)          # every pixel predicted as class 0
always_background = scores(hist_background)
print(f"for comparison, predicting background everywhere: mean IU {always_background['mean_iu']:.3f}")
assert result["mean_iu"] > 0.45 and result["mean_iu"] > 3 * always_background["mean_iu"]   # measured 0.51
assert min(result["per_class_iu"]) > 0.1            # every class is found; the thin bars are the hardest
assert np.argmin(result["per_class_iu"]) == CLASS_NAMES.index("bar")

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1.25, 1]})
losses = np.array(train_meta["losses"])
axes[0].plot(losses[:, 0], losses[:, 1])
axes[0].set_xlabel("iteration"); axes[0].set_ylabel("training loss (mean of 25 steps)")
axes[0].set_title("how the checkpoint was trained (stored in its metadata)")
rows = hist_val / hist_val.sum(axis=1, keepdims=True)
axes[1].imshow(rows, cmap="Blues", vmin=0, vmax=1)
for (i, j), v in np.ndenumerate(rows):
    axes[1].text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="w" if v > 0.6 else "k")
axes[1].set_xticks(range(N_CLASS), CLASS_NAMES, rotation=45)
axes[1].set_yticks(range(N_CLASS), CLASS_NAMES)
axes[1].set_xlabel("predicted class"); axes[1].set_ylabel("true class")
axes[1].set_title(f"confusion matrix on 24 val images (rows sum to 1)\nmean IU {result['mean_iu']:.3f}")
savefig(fig, "06_trained_fcn8s.png")
assert losses[-1, 1] < 0.5 * losses[0, 1]
bar_i, ring_i, disk_i = (CLASS_NAMES.index(c) for c in ("bar", "ring", "disk"))
assert rows[bar_i, ring_i] > rows[bar_i, bar_i]      # more bar pixels are called ring than bar
assert rows[disk_i, 0] > 0.3                         # and many disk pixels background

# %% [markdown]
# The net is useful but far from perfect, and the confusion matrix says where: it finds
# squares, triangles and rings well, but calls more bar pixels "ring" than "bar" (both
# are thin, flat-coloured strokes) and misses a large part of the disk pixels. The
# pictures below show the same: real segmentations, with blobby edges and thin bars
# partly labelled ring (lesson 7 asks how much of that is the stride).

# %%

fig, axes = plt.subplots(3, 4, figsize=(13, 9.6))
for col, (image, label, pred) in enumerate(kept):
    ok = (pred == label) | (label == 255)
    for row, (picture, title) in enumerate([(image, "image"), (colorize(label), "ground truth"),
                                             (colorize(pred), f"FCN-8s ({100 * ok.mean():.0f}% right)")]):
        axes[row, col].imshow(picture, interpolation="nearest")
        axes[row, col].set_title(title)
        axes[row, col].axis("off")
class_legend(fig)
savefig(fig, "06_predictions.png")

# %% [markdown]
# ## 4. The training loop, end to end
#
# `minifcn.train.Trainer` runs the loop of the whole library: a batch (a canvas of
# 2 x 2 random crops, gaps labelled 255) -> `model.forward` -> the loss above, with
# class weights -> the hand-written `model.backward` -> SGD with momentum and a poly
# learning rate. It logs, validates with the four metrics, and writes checkpoints
# (`minifcn train` on the command line is the same code; `tutorials/train_checkpoints.py`
# calls it for the checkpoints). Here it trains a tiny FCN-8s from scratch for a few
# seconds (20 steps): enough to watch the loss fall, far too little to segment anything (that is
# what the checkpoint above is for); `MINIFCN_FULL=1` trains for 5 minutes.

# %%
work = tempfile.mkdtemp(prefix="minifcn-lesson6-")
if VOC_ROOT:
    data = VOC_ROOT
    val_run = VOCSegmentation(VOC_ROOT, "val", limit=100 if FULL else 8)
else:
    data = "builtin"
    val_run = VOCSegmentation(make_dataset(os.path.join(work, "data"), n_train=1, n_val=100 if FULL else 8,
                                           progress=False), "val")
class_names = list(val_run.class_names)
recipe = dict(width=0.125, crop=128, warmup=50) if FULL else dict(width=0.0625, crop=64, warmup=5)
if VGG16_WEIGHTS:
    recipe["width"] = 1.0          # ImageNet weights exist for the full-width VGG16 only (slow on a CPU)
config = TrainConfig(out=os.path.join(work, "fcn8s"), data=data, model="fcn8s", init=VGG16_WEIGHTS,
                     checkpoint_every=10 ** 9, log_every=5, **recipe)
config.iters = iterations_for(300.0, config)[0] if FULL else 20     # a fixed, seeded short run
config.val_every = max(1, config.iters // (5 if FULL else 2))
print(f"data: {VOC_ROOT or 'built-in'}, {len(class_names)} classes; {config.iters} iterations at width "
      f"{config.width}")
trainer = Trainer(config, progress=FULL, val_data=val_run)
final = trainer.run()
losses = [r["loss"] for r in trainer.history if "loss" in r]
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
print("validation:", {m: round(final[m], 3) for m in METRICS})
assert losses[-1] < losses[0]

# the trainer's metrics are the formulas of section 2 applied to one confusion matrix
result_run, hist_run, _ = evaluate(trainer.model, val_run, progress=False)
for m in METRICS:
    assert np.isclose(result_run[m], four_metrics(hist_run)[m], rtol=1e-12)
    assert np.isclose(result_run[m], final[m], rtol=1e-12)
if FULL and not VOC_ROOT:
    assert result_run["mean_iu"] > 0.3      # well above all-background

# %%
fig, ax = plt.subplots(figsize=(6, 3.4))
pts = [(r["iteration"], r["loss"]) for r in trainer.history if "loss" in r]
ax.plot(*zip(*pts), marker="o")
ax.set_xlabel("iteration"); ax.set_ylabel("training loss")
ax.set_title(f"a {config.iters}-step run from scratch (width {config.width})")
savefig(fig, "06_short_run.png")
shutil.rmtree(work, ignore_errors=True)   # the temporary data set and checkpoints

# %% [markdown]
# ## What we saw
#
# - The built-in task: five shape classes on cluttered backgrounds, mostly background
#   pixels, a void band on every boundary.
# - The loss is a softmax cross-entropy per pixel; ignored pixels contribute neither
#   loss nor gradient, and the gradient is softmax - one-hot. The paper sums over
#   pixels and does not balance classes; minifcn averages over valid pixels and, by
#   default, weights classes by freq^-0.5.
# - The four metrics come from one confusion matrix over the whole set; nan-means skip
#   classes absent from truth and prediction but count false alarms.
# - A small FCN-8s trained for a few minutes (1500 steps) finds every class, mean IU
#   about 0.5 on the validation images; the 5-8 pixel bars are the hardest class;
#   the trainer that made it is the loop of section 4. Lesson 7 loads the same kind of
#   checkpoint for FCN-32s and FCN-16s and asks what the skips add.
