"""The built-in data set: determinism, VOC-style labels, colour that does not give the
class away, a VOCdevkit tree the reader accepts, and the make-dataset command."""
import numpy as np
import pytest
from matplotlib.colors import rgb_to_hsv
from PIL import Image

from minifcn.cli import main as cli
from minifcn.data import VOCSegmentation
from minifcn.data.synthetic import CLASS_NAMES, N_CLASS, SIZE_RANGE, FreshSamples, make_dataset, sample
from minifcn.metrics import confusion_matrix, scores


def test_sample_is_deterministic_and_well_formed():
    a = sample(np.random.default_rng(5))
    b = sample(np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    sizes = set()
    rng = np.random.default_rng(0)
    for _ in range(20):
        image, label = sample(rng)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert label.dtype == np.uint8 and label.shape == image.shape[:2]
        assert SIZE_RANGE[0] <= min(label.shape) and max(label.shape) <= SIZE_RANGE[1]
        assert set(np.unique(label)) <= set(range(N_CLASS)) | {255}
        sizes.add(label.shape)
    assert len(sizes) > 10  # varied image sizes
    image, label = sample(np.random.default_rng(1), size=(50, 70))
    assert label.shape == (50, 70)


def test_void_band_separates_every_pair_of_classes():
    rng = np.random.default_rng(3)
    for _ in range(10):
        _, label = sample(rng)
        lab = label.astype(int)
        for a, b in ((lab[1:], lab[:-1]), (lab[:, 1:], lab[:, :-1]), (lab[1:, 1:], lab[:-1, :-1])):
            touching = (a != b) & (a != 255) & (b != 255)
            assert not touching.any(), "two classes touch without a 255 border"
        assert (label == 255).any()


def test_every_class_appears_with_small_and_thin_objects():
    rng = np.random.default_rng(0)
    counts = np.zeros(256, np.int64)
    for _ in range(100):
        counts += np.bincount(sample(rng)[1].ravel(), minlength=256)
    assert (counts[:N_CLASS] > 0).all()
    # thin classes (ring, bar) cover far less area than the filled ones
    assert counts[CLASS_NAMES.index("bar")] < counts[CLASS_NAMES.index("disk")] / 2


def _colour_bins(n, seed):
    rng = np.random.default_rng(seed)
    bins, labels = [], []
    for _ in range(n):
        image, label = sample(rng)
        keep = label != 255
        hsv = rgb_to_hsv(image[keep] / 255.0)
        q = np.minimum((hsv * [12, 4, 4]).astype(int), [11, 3, 3])
        bins.append(q @ [16, 4, 1])
        labels.append(label[keep].astype(np.int64))
    return np.concatenate(bins), np.concatenate(labels)


def test_colour_alone_does_not_identify_a_class():
    """A per-pixel colour classifier (the best class for each of 192 HSV bins, learned on
    other images) stays far below what a shape-aware network reaches (mean IU >= 0.5)."""
    bins, labels = _colour_bins(60, 1)
    table = np.zeros((192, N_CLASS))
    np.add.at(table, (bins, labels), 1.0)
    test_bins, test_labels = _colour_bins(30, 2)
    for t in (table, table / np.maximum(table.sum(0), 1)):  # majority and class-balanced
        pred = np.argmax(t, axis=1)[test_bins]
        assert scores(confusion_matrix(test_labels, pred, N_CLASS))["mean_iu"] < 0.25


def test_make_dataset_writes_a_voc_tree_the_reader_accepts(tmp_path):
    root = make_dataset(tmp_path / "a", n_train=3, n_val=2, seed=7, progress=False)
    assert root.endswith("VOC2012")
    ds = VOCSegmentation(root, "train")
    assert len(ds) == 3 and ds.class_names == CLASS_NAMES and ds.n_class == N_CLASS
    assert len(VOCSegmentation(root, "val")) == 2 and len(VOCSegmentation(root, "trainval")) == 5
    image, label = ds[0]
    png = Image.open(ds.label_path(0))
    assert png.mode == "P"
    ref_image, ref_label = sample(np.random.default_rng([7, 1, 0]))
    assert np.array_equal(label, ref_label)                                 # labels are lossless
    assert np.abs(image.astype(int) - ref_image).mean() < 6                # JPEG is close
    again = make_dataset(tmp_path / "b", n_train=3, n_val=2, seed=7, progress=False)
    for name in ("train_00002", "val_00001"):
        for sub, ext in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png")):
            assert (tmp_path / "a/VOC2012" / sub / (name + ext)).read_bytes() == \
                (tmp_path / "b/VOC2012" / sub / (name + ext)).read_bytes()
    with pytest.raises(ValueError, match="already exists"):
        make_dataset(tmp_path / "a", n_train=1, n_val=1, progress=False)
    with pytest.raises(ValueError, match="n_train"):
        make_dataset(tmp_path / "c", n_train=0, n_val=1, progress=False)
    assert not (tmp_path / "c" / "VOC2012").exists()
    assert again != root


def test_fresh_samples_resume_the_same_stream():
    s = FreshSamples(seed=4)
    next(s)
    state = s.state()
    expected = next(s)[1]
    t = FreshSamples(seed=4)
    t.set_state(state)
    assert np.array_equal(next(t)[1], expected)


def test_make_dataset_command(tmp_path, capsys):
    assert cli(["make-dataset", str(tmp_path), "--n-train", "2", "--n-val", "1", "--seed", "3"]) == 0
    assert "2 train + 1 val" in capsys.readouterr().out
    assert len(VOCSegmentation(tmp_path, "trainval")) == 3
    assert cli(["make-dataset", str(tmp_path), "--n-train", "2", "--n-val", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
