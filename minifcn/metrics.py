"""The paper's four segmentation metrics, from one confusion matrix over a whole set.

With ``hist[i, j]`` = number of pixels of true class i predicted as j, ``n_ij = hist``,
``t_i = sum_j n_ij`` (pixels of class i) and ``k`` the classes (Long et al. 2015, Sec. 5):

* pixel accuracy          ``sum_i n_ii / sum_i t_i``
* mean accuracy           ``(1/k) sum_i n_ii / t_i``
* mean IU                 ``(1/k) sum_i n_ii / (t_i + sum_j n_ji - n_ii)``
* frequency weighted IU   ``(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)``

The means are nan-means, as in the reference ``score.py``: a class absent from both
truth and prediction has IU 0/0 = nan and is skipped; a class that is only predicted
has IU 0 and counts; mean accuracy skips classes absent from the truth.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import backend as B


def confusion_matrix(label_true, label_pred, n_class) -> np.ndarray:
    """``hist`` (n_class, n_class) int64 with ``hist[t, p]`` = pixels of truth t predicted p.

    ``label_true`` and ``label_pred`` are integer arrays of the same shape on any backend
    (NumPy, CuPy, ...); truth outside ``[0, n_class)`` — 255 included — is dropped.
    Predictions must lie in ``[0, n_class)``. Counting runs on the arrays' device and
    only the n_class^2 counts come back to the host. Sum the results over a data set.
    """
    n_class = int(n_class)
    if n_class < 1:
        raise ValueError(f"n_class must be positive, got {n_class}")
    if tuple(label_true.shape) != tuple(label_pred.shape):
        raise ValueError(f"label_true has shape {tuple(label_true.shape)} but label_pred has shape "
                         f"{tuple(label_pred.shape)}; they must match")
    xp = B.namespace(label_true, label_pred)
    for name, a in (("label_true", label_true), ("label_pred", label_pred)):
        if not xp.isdtype(a.dtype, "integral"):
            raise ValueError(f"{name} must be an integer array of class ids, got dtype {a.dtype}")
    t = xp.astype(xp.reshape(label_true, (-1,)), xp.int64)
    p = xp.astype(xp.reshape(label_pred, (-1,)), xp.int64)
    if t.shape[0] == 0:
        return np.zeros((n_class, n_class), np.int64)
    if bool(xp.any((p < 0) | (p >= n_class))):  # one host sync per call
        raise ValueError(f"label_pred has values outside [0, {n_class}); predictions must be class ids "
                         f"0..{n_class - 1}")
    valid = (t >= 0) & (t < n_class)
    # every dropped pixel goes to one extra bin (n_class^2), cut off below: no boolean
    # indexing, whose data-dependent size would sync a GPU
    index = xp.where(valid, t * n_class + p, xp.asarray(n_class * n_class, dtype=xp.int64, device=B.device(t)))
    counts = B.to_numpy(B.bincount(index, minlength=n_class * n_class + 1))
    return counts[: n_class * n_class].reshape(n_class, n_class).astype(np.int64)


def scores(hist) -> dict:
    """The four metrics and per-class IU of a confusion matrix (see the module docstring).

    Returns a dict of Python floats: ``pixel_accuracy``, ``mean_accuracy``, ``mean_iu``,
    ``frequency_weighted_iu`` and ``per_class_iu`` (a list, nan for classes absent from
    both truth and prediction). An empty matrix gives nan everywhere.
    """
    hist = np.asarray(hist, dtype=np.float64)
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise ValueError(f"hist must be a square (n_class, n_class) matrix, got shape {hist.shape}")
    diag = np.diag(hist)
    true_count = hist.sum(axis=1)
    pred_count = hist.sum(axis=0)
    total = hist.sum()
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-nan -> nan
        class_acc = diag / true_count
        iu = diag / (true_count + pred_count - diag)
        freq = true_count / total
        return {
            "pixel_accuracy": float(diag.sum() / total),
            "mean_accuracy": float(np.nanmean(class_acc)),
            "mean_iu": float(np.nanmean(iu)),
            "frequency_weighted_iu": float((freq[freq > 0] * iu[freq > 0]).sum()) if total > 0 else float("nan"),
            "per_class_iu": [float(v) for v in iu],
        }
