"""Timing of :func:`minifcn.crf.dense_crf`: the lattice path at PASCAL VOC size and the
exact path on a small image, on a synthetic scene with known labels."""
from __future__ import annotations

import time

import numpy as np

from minifcn import backend as bk
from minifcn import crf


def synthetic_scene(height, width, n_class, seed=0, noise=8.0, confidence=1.0):
    """A test image with regions, and blurry noisy class probabilities for it.

    Returns ``image`` (H, W, 3) uint8 (each region one colour, plus Gaussian noise of
    std ``noise``), ``probs`` (C, H, W) float64 (softmax of ``confidence`` times the
    one-hot labels, blurred over 1/8 of the image, plus unit Gaussian noise) and
    ``labels`` (H, W) int64. Regions: a background, then ellipses and rectangles of
    random classes painted over it.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    labels = np.zeros((height, width), dtype=np.int64)
    for shape in range(max(3, n_class // 2)):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.08, 0.3) * height, rng.uniform(0.08, 0.3) * width
        if shape % 2:
            inside = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 < 1.0
        else:
            inside = (np.abs(rows - cy) < ry) & (np.abs(cols - cx) < rx)
        labels[inside] = rng.integers(1, n_class) if n_class > 1 else 0
    palette = rng.integers(0, 256, size=(n_class, 3))
    image = np.clip(palette[labels] + rng.normal(0.0, noise, (height, width, 3)), 0, 255).astype(np.uint8)

    onehot = (labels[None, :, :] == np.arange(n_class)[:, None, None]).astype(np.float64)
    radius = max(1, min(height, width) // 16)
    logits = confidence * _box_blur(onehot, radius) + rng.normal(0.0, 1.0, onehot.shape)
    probs = np.exp(logits - logits.max(axis=0))
    return image, probs / probs.sum(axis=0), labels


def _box_blur(x, r):
    """Mean over a (2r+1)^2 window (edges replicated), x (C, H, W)."""
    pad = np.pad(x, ((0, 0), (r, r), (r, r)), mode="edge")
    c = np.cumsum(np.cumsum(pad, axis=1), axis=2)
    c = np.pad(c, ((0, 0), (1, 0), (1, 0)))
    k = 2 * r + 1
    return (c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k]) / k ** 2


def _timed(fn, sync):
    """(result, wall seconds, CPU seconds of this process, all threads)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sync(out)
    return out, time.perf_counter() - t0, time.process_time() - c0


def bench_crf(height=375, width=500, n_class=21, iterations=10, exact_size=64, backend="numpy",
              dtype="float32"):
    """Time ``dense_crf`` (default kernel parameters) and return a dict of results.

    lattice: on a ``height`` x ``width`` :func:`synthetic_scene` (confidence 3) with ``n_class`` classes,
    ``iterations`` rounds (``lattice_s``; ``lattice_build_s`` is the host-side lattice
    construction alone, part of it; ``*_cpu_s`` the CPU time of this process over all
    threads, which a busy machine inflates less than the wall time). exact: on an ``exact_size`` square scene
    (``exact_s``), with the lattice on the same image for comparison (argmax
    agreement and mean |dQ|; theta_alpha scaled to the small image as 121 * size / 500).
    """
    b = bk.get_backend(backend)
    sync = lambda out: bk.to_numpy(out[:1, :1, :1])
    image, probs, labels = synthetic_scene(height, width, n_class, confidence=3.0)
    p = b.asarray(probs, dtype=dtype)
    t0 = time.perf_counter()
    lattice = crf.PermutohedralLattice(crf.appearance_features(image, 121.0, 5.0))
    build_s = time.perf_counter() - t0
    Q, lattice_s, lattice_cpu_s = _timed(lambda: crf.dense_crf(p, image, iterations=iterations), sync)
    Qn = bk.to_numpy(Q)

    small_image, small_probs, _ = synthetic_scene(exact_size, exact_size, n_class, seed=1, confidence=3.0)
    sp = b.asarray(small_probs, dtype=dtype)
    theta_alpha = 121.0 * exact_size / 500.0
    Qe, exact_s, exact_cpu_s = _timed(lambda: crf.dense_crf(sp, small_image, iterations, theta_alpha=theta_alpha,
                                               method="exact"), sync)
    Ql, small_lattice_s, _ = _timed(lambda: crf.dense_crf(sp, small_image, iterations, theta_alpha=theta_alpha,
                                                       method="lattice"), sync)
    Qe, Ql = bk.to_numpy(Qe), bk.to_numpy(Ql)
    return {
        "backend": b.name, "dtype": dtype, "iterations": iterations,
        "lattice_size": [height, width], "n_class": n_class,
        "lattice_s": lattice_s, "lattice_cpu_s": lattice_cpu_s, "lattice_build_s": build_s,
        "lattice_points": lattice.n_lattice, "lattice_touched": lattice.n_touched,
        "lattice_pixel_accuracy_before": float(np.mean(probs.argmax(axis=0) == labels)),
        "lattice_pixel_accuracy_after": float(np.mean(Qn.argmax(axis=0) == labels)),
        "exact_size": [exact_size, exact_size], "exact_s": exact_s, "exact_cpu_s": exact_cpu_s,
        "exact_lattice_s": small_lattice_s,
        "exact_vs_lattice_argmax_agreement": float(np.mean(Qe.argmax(axis=0) == Ql.argmax(axis=0))),
        "exact_vs_lattice_mean_abs_dq": float(np.mean(np.abs(Qe - Ql))),
    }


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(bench_crf(), indent=2))
