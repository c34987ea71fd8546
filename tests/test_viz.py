"""VOC colour map, label PNGs, overlays and plots (written atomically, readable back)."""
import math

import numpy as np
import pytest
from PIL import Image

from minifcn import viz
from minifcn.data import read_label


def test_voc_palette_known_colours():
    p = viz.voc_palette()
    assert p.shape == (256, 3) and p.dtype == np.uint8
    # colours from the VOC devkit's labelcolormap (VOCdevkit/VOCcode/VOClabelcolormap.m)
    known = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
             8: (64, 0, 0), 12: (64, 0, 128), 15: (192, 128, 128), 20: (0, 64, 128), 255: (224, 224, 192)}
    for i, rgb in known.items():
        assert tuple(p[i]) == rgb, i
    assert len({tuple(c) for c in p}) == 256  # bit interleaving is a bijection
    np.testing.assert_array_equal(viz.voc_palette(21), p[:21])


def test_colorize(backend):
    label = np.array([[0, 1, 255], [15, 2, 0]], np.uint8)
    rgb = viz.colorize(backend.asarray(label, dtype="int64"))
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, 2].tolist() == [224, 224, 192] and rgb[1, 0].tolist() == [192, 128, 128]
    with pytest.raises(ValueError, match="0..255"):
        viz.colorize(np.array([[0, 300]]))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        viz.colorize(np.zeros((2, 2, 3), np.uint8))


def test_save_label_png_round_trip(tmp_path, rng):
    label = rng.integers(0, 21, (7, 9)).astype(np.int64)
    label[0] = 255
    path = viz.save_label_png(label, tmp_path / "sub" / "label.png")
    with Image.open(path) as im:
        assert im.mode == "P"
        assert tuple(im.convert("RGB").getpixel((0, 0))) == (224, 224, 192)
    np.testing.assert_array_equal(read_label(path), label)
    assert [p.name for p in path.parent.iterdir()] == ["label.png"]  # no temp file left


def test_overlay():
    image = np.full((2, 2, 3), 100, np.uint8)
    label = np.array([[0, 1], [2, 255]])
    out = viz.overlay(image, label, alpha=0.25)
    assert out.dtype == np.uint8
    assert out[0, 0].tolist() == [100, 100, 100]  # background keeps the image
    assert out[0, 1].tolist() == [107, 75, 75]  # 0.75 * 100 + 0.25 * (128, 0, 0)
    assert out[1, 0].tolist() == [75, 107, 75]
    np.testing.assert_array_equal(viz.overlay(image, label, alpha=0.0), image)
    with pytest.raises(ValueError, match=r"\(2, 2, 3\)"):
        viz.overlay(image[:1], label)
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(image, label, alpha=2)


def test_atomic_path_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "a.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with viz.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.png"]


def png_size(path):
    with Image.open(path) as im:
        im.load()
        return im.format, im.size


def test_plot_curves(tmp_path):
    records = [{"iteration": i, "loss": 2.0 / (i + 1), "lr": 0.01 * (1 - i / 50)} for i in range(0, 50, 5)]
    records += [{"iteration": 20, "val_mean_iu": 0.3, "val_pixel_accuracy": 0.7},
                {"iteration": 40, "val_mean_iu": 0.5, "val_pixel_accuracy": 0.8, "loss": float("nan")}]
    fmt, (w, h) = png_size(viz.plot_curves(records, tmp_path / "curves.png"))
    assert fmt == "PNG" and w > 800 and h > 250  # two panels
    fmt, (w1, _) = png_size(viz.plot_curves(records[:3], tmp_path / "loss.png"))
    assert w1 < w  # loss only: one panel
    with pytest.raises(ValueError, match="at least one"):
        viz.plot_curves([], tmp_path / "none.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "loss.png"]


def test_prediction_tiles_and_per_class_iu(tmp_path, rng):
    images = [rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(3)]
    labels = [rng.integers(0, 3, (20, 30)) for _ in range(3)]
    preds = [rng.integers(0, 3, (20, 30)) for _ in range(3)]
    names = ("background", "disk", "ring")
    fmt, (w, h) = png_size(viz.save_prediction_tiles(images, labels, preds, tmp_path / "tiles.png", names))
    _, (w1, h1) = png_size(viz.save_prediction_tiles(images[:1], None, preds[:1], tmp_path / "pred.png", names))
    assert fmt == "PNG" and w1 == pytest.approx(w, rel=0.1) and h > 2 * h1  # three rows vs one
    with pytest.raises(ValueError, match="same positive number"):
        viz.save_prediction_tiles(images, labels[:2], preds, tmp_path / "bad.png", names)
    fmt, _ = png_size(viz.plot_per_class_iu([0.9, math.nan, 0.25], names, tmp_path / "iu.png"))
    assert fmt == "PNG"
    with pytest.raises(ValueError, match="must match"):
        viz.plot_per_class_iu([0.5], names, tmp_path / "iu2.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iu.png", "pred.png", "tiles.png"]


def test_prediction_tiles_with_crf_column(tmp_path, rng):
    """prediction + CRF is a fourth column: the picture is 4/3 as wide, with the same rows."""
    images = [rng.integers(0, 256, (40, 60, 3), dtype=np.uint8) for _ in range(2)]
    labels = [rng.integers(0, 3, (40, 60)) for _ in range(2)]
    preds = [rng.integers(0, 3, (40, 60)) for _ in range(2)]
    names = ("background", "disk", "ring")
    _, (w3, h3) = png_size(viz.save_prediction_tiles(images, labels, preds, tmp_path / "three.png", names))
    _, (w4, h4) = png_size(viz.save_prediction_tiles(images, labels, preds, tmp_path / "four.png", names,
                                                     crf_preds=preds[::-1]))
    assert w4 == pytest.approx(w3 * 4 / 3, rel=0.08) and h4 == pytest.approx(h3, rel=0.08)
    with pytest.raises(ValueError, match="crf_preds, got 2, 2, 2, 1"):
        viz.save_prediction_tiles(images, labels, preds, tmp_path / "bad.png", names, crf_preds=preds[:1])
