"""Confusion matrix and the four FCN metrics, against matrices and numbers worked out by hand."""
import math

import numpy as np
import pytest

from minifcn.metrics import confusion_matrix, scores


def naive_confusion(t, p, n):
    hist = np.zeros((n, n), np.int64)
    for a, b in zip(np.ravel(t), np.ravel(p)):
        if 0 <= a < n:
            hist[a, b] += 1
    return hist


# truth / prediction pairs: (0,0) (0,1) (1,1) (1,1) (2,0) and a void pixel, dropped
TRUTH = [[0, 0, 1], [1, 2, 255]]
PRED = [[0, 1, 1], [1, 0, 2]]
HIST = [[1, 1, 0],
        [0, 2, 0],
        [1, 0, 0]]


def test_confusion_matrix_by_hand(backend):
    hist = confusion_matrix(backend.asarray(TRUTH, dtype="int64"), backend.asarray(PRED, dtype="int64"), 3)
    assert isinstance(hist, np.ndarray) and hist.dtype == np.int64
    np.testing.assert_array_equal(hist, HIST)


def test_confusion_matrix_matches_naive_loop(backend, rng):
    t = rng.integers(0, 5, (2, 7, 9))
    t[rng.random(t.shape) < 0.2] = 255
    t[0, 0, :3] = [5, 7, 200]  # ids outside [0, n_class) are dropped like 255
    p = rng.integers(0, 5, t.shape)
    hist = confusion_matrix(backend.asarray(t, dtype="uint8"), backend.asarray(p, dtype="int32"), 5)
    np.testing.assert_array_equal(hist, naive_confusion(t, p, 5))
    assert hist.sum() == np.sum(t < 5)


def test_confusion_matrix_accumulates_over_a_set(rng):
    pairs = [(rng.integers(0, 4, (5, 6)), rng.integers(0, 4, (5, 6))) for _ in range(3)]
    total = sum(confusion_matrix(t, p, 4) for t, p in pairs)
    all_t = np.concatenate([t.ravel() for t, _ in pairs])
    all_p = np.concatenate([p.ravel() for _, p in pairs])
    np.testing.assert_array_equal(total, naive_confusion(all_t, all_p, 4))


def test_confusion_matrix_errors():
    t = np.zeros((2, 3), np.int64)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        confusion_matrix(t, np.zeros((3, 2), np.int64), 2)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(t, np.full((2, 3), 2), 2)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(t, np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match="n_class"):
        confusion_matrix(t, t, 0)


def test_scores_by_hand():
    s = scores(HIST)
    assert s["pixel_accuracy"] == pytest.approx(3 / 5)
    assert s["mean_accuracy"] == pytest.approx((1 / 2 + 2 / 2 + 0 / 1) / 3)
    # IU_i = n_ii / (t_i + predicted_i - n_ii): 1/(2+2-1), 2/(2+3-2), 0/(1+0-0)
    assert s["per_class_iu"] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert s["mean_iu"] == pytest.approx(1 / 3)
    assert s["frequency_weighted_iu"] == pytest.approx(2 / 5 * 1 / 3 + 2 / 5 * 2 / 3 + 1 / 5 * 0)
    assert all(type(v) is float for k, v in s.items() if k != "per_class_iu")


def test_class_absent_from_truth_and_prediction_is_skipped():
    hist = np.zeros((4, 4), np.int64)
    hist[:3, :3] = HIST
    s = scores(hist)
    assert math.isnan(s["per_class_iu"][3])
    assert s["mean_iu"] == pytest.approx(1 / 3)
    assert s["mean_accuracy"] == pytest.approx(0.5)
    assert s["pixel_accuracy"] == pytest.approx(0.6)
    assert s["frequency_weighted_iu"] == pytest.approx(0.4)


def test_class_only_predicted_counts_as_iu_zero():
    # truth [0, 0], prediction [0, 1]: class 1 never occurs but is predicted once
    hist = confusion_matrix(np.array([0, 0]), np.array([0, 1]), 2)
    np.testing.assert_array_equal(hist, [[1, 1], [0, 0]])
    s = scores(hist)
    assert s["per_class_iu"] == pytest.approx([0.5, 0.0])
    assert s["mean_iu"] == pytest.approx(0.25)
    assert s["mean_accuracy"] == pytest.approx(0.5)  # class 1 has no truth: accuracy 0/0 skipped
    assert s["frequency_weighted_iu"] == pytest.approx(0.5)


def test_perfect_and_empty():
    s = scores(np.diag([5, 0, 3]))
    assert s["pixel_accuracy"] == s["mean_accuracy"] == s["mean_iu"] == s["frequency_weighted_iu"] == 1.0
    assert math.isnan(s["per_class_iu"][1])
    empty = scores(np.zeros((3, 3)))
    assert all(math.isnan(empty[k]) for k in ("pixel_accuracy", "mean_accuracy", "mean_iu",
                                              "frequency_weighted_iu"))
    with pytest.raises(ValueError, match="square"):
        scores(np.zeros((2, 3)))
