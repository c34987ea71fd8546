# %% [markdown]
# # Lesson 8 — How we know the backward passes are right
#
# minifcn has no autograd: every layer's backward pass is written by hand, and a wrong
# sign or a missing sum would silently train a worse network. We trust them because
# every one is compared against **finite differences**, the derivative's definition,
# computed numerically. This lesson shows:
#
# 1. why central differences in float64 (and not float32) are the right probe, with
#    the error curve that explains the choice of eps;
# 2. how `minifcn.gradcheck.check_backward` turns a layer into a scalar function and
#    checks every entry, or random directions for large shapes;
# 3. that the check *catches* bugs: two deliberately broken backward passes fail.
#
# Set-up (first cell): `from _lesson import savefig, plt` makes minifcn importable
# from a checkout (when it is not installed) and sends figures to `tutorials/figures/`
# (or `$MINIFCN_FIGURES`).

# %%
import numpy as np

from _lesson import savefig, plt
from minifcn import functional as F
from minifcn.gradcheck import check_backward

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Finite differences and the choice of eps
#
# For a scalar function L(x), the derivative along entry i is approximated by
#
#     forward difference:  (L(x + eps e_i) - L(x)) / eps              error ~ eps
#     central difference:  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)  error ~ eps^2
#
# but each evaluation of L carries rounding error ~ machine epsilon * |L|, which the
# division by eps *amplifies*. The total error is therefore U-shaped in eps: truncation
# wins for large eps, rounding for small eps. In float64 (machine eps 1e-16) central
# differences reach ~1e-10 at eps ~ 1e-5 to 1e-6; in float32 (machine eps 1e-7) even the
# best eps leaves an error orders of magnitude larger (here about 10^5 times), too
# coarse to tell a right gradient from a slightly wrong one.
#
# Our L: a convolution followed by the pixelwise softmax cross-entropy (both from
# minifcn), a smooth non-linear function of x. Its exact gradient comes from the two
# backward passes chained: dL/dx = conv2d_backward(softmax_cross_entropy_backward(...)).
# (Using the hand-written gradient as the reference is fair here: it agrees with the
# numeric one to ~1e-12 at the best eps, and section 2 checks it entry by entry.)

# %%
x = rng.standard_normal((1, 2, 6, 6))
w = rng.standard_normal((3, 2, 3, 3))
labels = rng.integers(0, 3, size=(1, 6, 6))
y, conv_cache = F.conv2d(x, w, padding=1)
_, loss_cache = F.softmax_cross_entropy(y, labels)
exact = F.conv2d_backward(F.softmax_cross_entropy_backward(loss_cache), conv_cache)[0][0, 1, 2, 3]


def L(x_, dtype):
    out, _ = F.conv2d(x_.astype(dtype), w.astype(dtype), padding=1)
    loss, _ = F.softmax_cross_entropy(out, labels)
    return float(loss)


def numeric(eps, dtype, central):
    xp_, xm_ = x.copy(), x.copy()
    xp_[0, 1, 2, 3] += eps
    if central:
        xm_[0, 1, 2, 3] -= eps
        return (L(xp_, dtype) - L(xm_, dtype)) / (2 * eps)
    return (L(xp_, dtype) - L(x, dtype)) / eps


epss = 10.0 ** np.arange(-12, 0.5, 0.5)
curves = {(dt.__name__, c): np.array([abs(numeric(e, dt, c) - exact) for e in epss])
          for dt in (np.float64, np.float32) for c in (True, False)}
best64 = curves[("float64", True)].min()
best32 = curves[("float32", True)].min()
err_at_1e6 = curves[("float64", True)][np.argmin(abs(epss - 1e-6))]
fwd_at_1e6 = curves[("float64", False)][np.argmin(abs(epss - 1e-6))]
print(f"exact derivative {exact:.10f}")
print(f"float64 central, eps=1e-6: error {err_at_1e6:.1e}  (forward difference: {fwd_at_1e6:.1e})")
print(f"best error over eps: float64 central {best64:.1e}, float32 central {best32:.1e}")
assert err_at_1e6 < 1e-8                 # float64 central differences: ~8+ correct digits
assert err_at_1e6 < fwd_at_1e6           # central beats forward at the same eps
assert best32 > 100 * best64             # float32 cannot get close
assert curves[("float64", True)][0] > err_at_1e6   # too small an eps: rounding takes over

# %%
fig, ax = plt.subplots(figsize=(7, 4.2))
for (dt, c), errs in curves.items():
    ax.loglog(epss, np.maximum(errs, 1e-17), marker="o", ms=3,
              ls="-" if c else "--", color="tab:blue" if dt == "float64" else "tab:red",
              label=f"{dt}, {'central' if c else 'forward'}")
ax.axvline(1e-6, color="gray", lw=0.8)
ax.text(1.3e-6, 0.98, "minifcn default eps = 1e-6", fontsize=8, va="top", transform=ax.get_xaxis_transform())
ax.set_xlabel("eps"); ax.set_ylabel("|numeric - exact|")
ax.set_title("finite-difference error: truncation (right) vs rounding (left)")
ax.legend()
savefig(fig, "08_eps_curve.png")

# %% [markdown]
# ## 2. The checker
#
# `check_backward(forward, backward, inputs)` draws a random upstream gradient dy,
# calls your backward once, and compares each returned gradient with central
# differences of L = <dy, forward(inputs)>. An entry passes when
# |numeric - analytic| <= atol + rtol * |numeric|. The report says how many
# comparisons were made and where the worst one was.
#
# **Element-wise** (the default) perturbs every entry: exact, but two forward passes
# per entry, so only for tiny shapes. **Random directions** (`directions=k`) perturb
# all entries at once along a random unit vector v and compare
# (L(x + eps v) - L(x - eps v)) / (2 eps) with <grad, v>: one number per direction, two
# forward passes each, any shape.

# %%
def conv_fwd(x_, w_, b_):
    return F.conv2d(x_, w_, b_, stride=2, padding=1)


b = rng.standard_normal(3)
report = check_backward(conv_fwd, F.conv2d_backward, [x.copy(), w.copy(), b.copy()], name="conv2d")
print(report)
assert report.ok and report.checked == x.size + w.size + b.size

big = [rng.standard_normal((2, 16, 24, 24)), rng.standard_normal((32, 16, 3, 3)), rng.standard_normal(32)]
report_dirs = check_backward(conv_fwd, F.conv2d_backward, big, directions=5, name="conv2d, large")
print(report_dirs)
assert report_dirs.ok and report_dirs.checked == 5

# %% [markdown]
# Two traps the checker's users must avoid:
#
# - **Kinks.** ReLU and max pooling are not differentiable where an input equals zero or
#   where two window values tie. If x +/- eps crosses a kink, the numeric derivative is
#   garbage. The tests draw inputs far from kinks (for max pooling: distinct values
#   0.01 apart, so eps = 1e-6 never changes the winner).
# - **Randomness.** Dropout must use the same mask on every forward call; checks run
#   with the model in eval mode.

# %%
pool_in = (rng.permutation(2 * 3 * 5 * 5).reshape(2, 3, 5, 5) * 0.01)
report_pool = check_backward(lambda a: F.max_pool2d(a, 2, 2, ceil_mode=True), F.max_pool2d_backward,
                             [pool_in], name="max_pool2d (ceil mode)")
print(report_pool)
assert report_pool.ok

# %% [markdown]
# ## 3. The check catches broken backward passes
#
# Two plausible bugs:
#
# - **Bug A: the bias gradient of the first image only.** Summing dy over (H, W) of
#   image 0 instead of over the batch: right for batch size 1, wrong otherwise.
# - **Bug B: ReLU's mask from the upstream gradient.** `dx = dy * (dy > 0)` instead of
#   `dy * (y > 0)`: the shapes are right and the numbers look plausible.

# %%
def conv_backward_bug_a(dy_, cache_):
    dx_, dw_, db_ = F.conv2d_backward(dy_, cache_)
    return dx_, dw_, np.sum(dy_[0], axis=(1, 2))           # BUG: forgot the batch sum


def relu_backward_bug_b(dy_, cache_):
    return dy_ * (dy_ > 0)                                  # BUG: mask from dy, not from y


xa = [rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)]
bug_a = check_backward(conv_fwd, conv_backward_bug_a, [a.copy() for a in xa], name="conv2d, bug A")
ok_a = check_backward(conv_fwd, F.conv2d_backward, [a.copy() for a in xa], name="conv2d, correct")
away_from_kink = rng.standard_normal((2, 3, 4, 4))
away_from_kink += np.sign(away_from_kink) * 0.1             # no entry within 0.1 of the kink at 0
bug_b = check_backward(F.relu, relu_backward_bug_b, [away_from_kink.copy()], name="relu, bug B")
ok_b = check_backward(F.relu, F.relu_backward, [away_from_kink.copy()], name="relu, correct")
bug_b_dirs = check_backward(F.relu, relu_backward_bug_b, [away_from_kink.copy()], directions=3,
                            name="relu, bug B, random directions")
for r in (ok_a, bug_a, ok_b, bug_b, bug_b_dirs):
    print(r)
assert ok_a.ok and ok_b.ok
assert not bug_a.ok and "input 2" in bug_a.worst      # it even points at the bias
assert not bug_b.ok and not bug_b_dirs.ok

# %% [markdown]
# Picture bug B: the analytic gradient of the broken ReLU next to the numeric one.
# Wherever the input is negative but dy is positive, the bug lets the gradient through.

# %%
y_relu, c_relu = F.relu(away_from_kink)
dyb = rng.standard_normal(y_relu.shape)
wrong = relu_backward_bug_b(dyb, c_relu)[0, 0]
right = F.relu_backward(dyb, c_relu)[0, 0]
num = np.zeros_like(right)
for i in range(4):
    for j in range(4):
        xp_, xm_ = away_from_kink.copy(), away_from_kink.copy()
        xp_[0, 0, i, j] += 1e-6
        xm_[0, 0, i, j] -= 1e-6
        num[i, j] = (np.sum(dyb * F.relu(xp_)[0]) - np.sum(dyb * F.relu(xm_)[0])) / 2e-6
assert np.allclose(num, right, atol=1e-8) and not np.allclose(num, wrong, atol=1e-3)

fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
for ax, img, title in [(axes[0], num, "numeric (central diff.)"), (axes[1], right, "correct backward"),
                       (axes[2], wrong, "bug B backward")]:
    ax.imshow(img, cmap="coolwarm", vmin=-2, vmax=2)
    ax.set_title(title)
    ax.set_xticks([]); ax.set_yticks([])
for (i, j) in zip(*np.nonzero(~np.isclose(num, wrong))):
    axes[2].add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, color="k", lw=2))
savefig(fig, "08_broken_backward.png")

# %% [markdown]
# ## What we saw
#
# - Central differences in float64 with eps = 1e-6 agree with an exact gradient to
#   about 1e-9 or better; float32 is orders of magnitude worse, so checks run in float64.
# - `check_backward` checks every entry on tiny shapes and random directions on large
#   ones; the test suite runs it for every layer and every model, on every backend
#   (`minifcn selftest` prints the same table on your machine).
# - Bugs that produce the right shapes and plausible numbers fail the check, and the
#   report points at the input that is wrong.
