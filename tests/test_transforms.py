"""Preprocessing, augmentation, padded batches and tiled canvases (host-side NumPy)."""
import numpy as np
import pytest

from minifcn.data import (MEAN_BGR, deprocess, pad_batch, preprocess, random_crop, random_flip,
                          random_scale_crop, tile)

MEAN_RGB = np.round(np.array(MEAN_BGR[::-1])).astype(np.uint8)


def blocks(rng, h, w, n_class=5, block=8):
    """An image whose red channel encodes a blocky label: red = 40 * label."""
    coarse = rng.integers(0, n_class, (h // block + 1, w // block + 1)).astype(np.uint8)
    label = np.kron(coarse, np.ones((block, block), np.uint8))[:h, :w]
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[..., 0] = label * 40
    return image, label


def test_preprocess_formula(rng):
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = preprocess(image)
    assert x.shape == (3, 5, 7) and x.dtype == np.float32 and x.flags.c_contiguous
    for c in range(3):  # channel c of the input is BGR[c] = RGB[2 - c]
        for i in range(5):
            for j in range(7):
                assert x[c, i, j] == np.float32(float(image[i, j, 2 - c]) - MEAN_BGR[c])


def test_deprocess_inverts_preprocess(rng, backend):
    image = rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)
    back = deprocess(backend.asarray(preprocess(image)))
    assert back.dtype == np.uint8 and back.shape == (6, 4, 3)
    np.testing.assert_array_equal(back, image)
    assert deprocess(np.full((3, 1, 1), 1e4, np.float32)).tolist() == [[[255, 255, 255]]]


def test_random_flip(rng):
    image, label = blocks(rng, 9, 13)
    fi, fl = random_flip(image, label, rng, p=1.0)
    np.testing.assert_array_equal(fi, image[:, ::-1])
    np.testing.assert_array_equal(fl, label[:, ::-1])
    same = random_flip(image, label, rng, p=0.0)
    assert same[0] is image and same[1] is label
    flips = [random_flip(image, label, np.random.default_rng(s))[1][0, 0] != label[0, 0] for s in range(40)]
    assert 5 < sum(flips) < 35  # both outcomes happen with p = 0.5 (label[0,0] != label[0,-1] below)
    assert label[0, 0] != label[0, -1]


def test_random_scale_crop_keeps_image_and_label_aligned(rng):
    image, label = blocks(rng, 60, 80, block=10)
    for seed in range(6):
        im, lab = random_scale_crop(image, label, np.random.default_rng(seed), scale=(0.5, 1.5), crop=(48, 56))
        assert im.shape == (48, 56, 3) and lab.shape == (48, 56) and im.dtype == np.uint8
        assert lab.dtype == label.dtype
        assert set(np.unique(lab)) <= set(np.unique(label)) | {255}  # nearest: no new class ids
        # away from block edges bilinear resampling leaves the red code intact
        inner = np.ones_like(lab, bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                inner[1:-1, 1:-1] &= np.roll(np.roll(lab, dy, 0), dx, 1)[1:-1, 1:-1] == lab[1:-1, 1:-1]
        inner[[0, -1]] = inner[:, [0, -1]] = False
        inner &= lab != 255
        assert inner.sum() > 100
        np.testing.assert_allclose(im[..., 0][inner], 40.0 * lab[inner], atol=1)
        # padding: label 255 exactly where the image is the mean colour
        pad = lab == 255
        assert np.all(im[pad] == MEAN_RGB)


def test_random_scale_crop_without_crop_and_padding(rng):
    image, label = blocks(rng, 20, 30)
    im, lab = random_scale_crop(image, label, np.random.default_rng(1), scale=(2.0, 2.0))
    assert im.shape == (40, 60, 3) and lab.shape == (40, 60)
    np.testing.assert_array_equal(lab[::2, ::2], label)  # nearest neighbour at exactly 2x
    small, slab = random_scale_crop(image, label, rng, scale=(1.0, 1.0), crop=32)
    assert small.shape == (32, 32, 3)
    assert np.all(slab[20:] == 255) and np.all(small[20:] == MEAN_RGB)  # 20 rows of data, rest padding
    assert np.sum(slab != 255) == 20 * 30


def test_random_transforms_are_deterministic_by_seed(rng):
    image, label = blocks(rng, 50, 40)
    a = random_scale_crop(image, label, np.random.default_rng(3), crop=24)
    b = random_scale_crop(image, label, np.random.default_rng(3), crop=24)
    c = random_scale_crop(image, label, np.random.default_rng(4), crop=24)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_random_crop_covers_the_image(rng):
    image, label = blocks(rng, 10, 12)
    corners = set()
    for seed in range(50):
        im, lab = random_crop(image, label, np.random.default_rng(seed), (8, 9))
        y, x = np.argwhere(np.all(image == im[0, 0], axis=-1))[0]
        np.testing.assert_array_equal(im, image[y:y + 8, x:x + 9])
        np.testing.assert_array_equal(lab, label[y:y + 8, x:x + 9])
        corners.add((y, x))
    assert len(corners) > 6 and max(c[0] for c in corners) == 2 and max(c[1] for c in corners) == 3


def test_pad_batch(rng):
    samples = [blocks(rng, 5, 7), blocks(rng, 8, 4)]
    x, labels = pad_batch(samples)
    assert x.shape == (2, 3, 8, 7) and x.dtype == np.float32
    assert labels.shape == (2, 8, 7) and labels.dtype == np.int64
    np.testing.assert_array_equal(x[0, :, :5, :7], preprocess(samples[0][0]))
    np.testing.assert_array_equal(x[1, :, :8, :4], preprocess(samples[1][0]))
    assert np.all(x[0, :, 5:] == 0) and np.all(x[1, :, :, 4:] == 0)
    np.testing.assert_array_equal(labels[0, :5], samples[0][1])
    assert np.all(labels[0, 5:] == 255) and np.all(labels[1, :, 4:] == 255)
    # already preprocessed images are taken as they are
    x2, _ = pad_batch([(preprocess(im), lab) for im, lab in samples])
    np.testing.assert_array_equal(x2, x)


def test_tile_places_crops_of_each_sample_in_its_cell(rng):
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    sizes = [(40, 50), (20, 70), (16, 16)]
    samples = [(np.broadcast_to(np.uint8(c), (h, w, 3)).copy(), np.full((h, w), k + 1, np.uint8))
               for k, (c, (h, w)) in enumerate(zip(colours, sizes))]
    canvas, labels = tile(samples, grid=(2, 2), crop=32, rng=np.random.default_rng(0))
    assert canvas.shape == (64, 64, 3) and labels.shape == (64, 64) and labels.dtype == np.uint8
    cells = [(slice(0, 32), slice(0, 32)), (slice(0, 32), slice(32, 64)), (slice(32, 64), slice(0, 32))]
    for k, (cell, (h, w)) in enumerate(zip(cells, sizes)):
        lab, im = labels[cell], canvas[cell]
        assert set(np.unique(lab)) <= {k + 1, 255}
        assert np.sum(lab == k + 1) == min(h, 32) * min(w, 32)
        assert np.all(im[lab == k + 1] == colours[k])
        assert np.all(im[lab == 255] == MEAN_RGB)
    assert np.all(labels[32:, 32:] == 255)  # the unused fourth cell
    again = tile(samples, grid=(2, 2), crop=32, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(again[1], labels)
    # the 16 px sample lands at different places for different seeds
    places = {tuple(np.argwhere(tile(samples, (2, 2), 32, np.random.default_rng(s))[1] == 3)[0]) for s in range(10)}
    assert len(places) > 3


def test_tile_crops_are_windows_of_the_sample(rng):
    image, label = blocks(rng, 50, 60)
    canvas, labels = tile([(image, label)], grid=(1, 2), crop=(24, 30), rng=np.random.default_rng(5))
    assert canvas.shape == (24, 60, 3)
    crop = canvas[:, :30]
    y, x = np.argwhere(np.all(image == crop[0, 0], axis=-1))[0]
    np.testing.assert_array_equal(crop, image[y:y + 24, x:x + 30])
    np.testing.assert_array_equal(labels[:, :30], label[y:y + 24, x:x + 30])


def test_bad_input_is_refused(rng):
    image, label = blocks(rng, 6, 6)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        preprocess(image[..., :2])
    with pytest.raises(ValueError, match=r"\(6, 6\)"):
        random_flip(image, label[:5], rng)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        deprocess(np.zeros((6, 6, 3)))
    with pytest.raises(ValueError, match="1..4 samples"):
        tile([(image, label)] * 5, grid=(2, 2), crop=4, rng=rng)
    with pytest.raises(ValueError, match="at least one"):
        pad_batch([])
    with pytest.raises(ValueError, match="label"):
        pad_batch([(image, label[:3])])
