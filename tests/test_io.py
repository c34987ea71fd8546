"""Checkpoint files: .npz with JSON metadata, no pickle, atomic writes, clear errors."""
import os
import zipfile

import numpy as np
import pytest

from minifcn import io
from minifcn.backend import get_backend
from minifcn.io import META_KEY, load_npz, model_arrays, save_npz, section


def listing(folder):
    return sorted(os.listdir(folder))


def test_round_trip_arrays_and_meta(tmp_path):
    arrays = {"conv1_1.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
              "fc6.bias": np.linspace(-1, 1, 5),                       # float64
              "optim/conv1_1.weight": np.full((2, 3, 2, 2), 0.5, np.float32),
              "train/step": np.array(17, np.int64),
              "train/flags": np.array([True, False])}
    meta = {"model": {"name": "fcn8s", "n_class": 21, "width": 0.25}, "note": "héllo", "lr": 1e-10}
    save_npz(tmp_path / "c.npz", arrays, meta)
    got, got_meta = load_npz(tmp_path / "c.npz")
    assert got_meta == meta and set(got) == set(arrays)
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v)
    assert listing(tmp_path) == ["c.npz"]                             # no temporary file left
    with np.load(tmp_path / "c.npz", allow_pickle=False) as raw:           # meta is plain bytes
        assert raw[META_KEY].dtype == np.uint8
    assert set(model_arrays(got)) == {"conv1_1.weight", "fc6.bias"}
    assert set(section(got, "train")) == {"step", "flags"} and set(section(got, "optim/")) == {"conv1_1.weight"}


def test_arrays_from_any_backend(tmp_path):
    b = get_backend("strict:device1")
    save_npz(tmp_path / "d.npz", {"w": b.asarray([[1.0, 2.0]], dtype="float32")})
    arrays, meta = load_npz(tmp_path / "d.npz")
    assert meta == {}
    assert arrays["w"].dtype == np.float32 and arrays["w"].tolist() == [[1.0, 2.0]]


def test_plain_npz_without_meta(tmp_path):
    np.savez(tmp_path / "plain.npz", a=np.ones(3))
    arrays, meta = load_npz(tmp_path / "plain.npz")
    assert meta == {} and np.array_equal(arrays["a"], np.ones(3))


def test_overwrite_is_atomic_and_bad_input_writes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    save_npz(path, {"a": np.ones(3)}, {"v": 1})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_npz(path, {"a": np.zeros(3)}, {"v": object()})
    with pytest.raises(ValueError, match="'b' has dtype object"):
        save_npz(path, {"a": np.zeros(3), "b": np.array([{}], dtype=object)})
    with pytest.raises(ValueError, match="non-empty strings"):
        save_npz(path, {META_KEY: np.zeros(3)})
    assert listing(tmp_path) == ["ckpt.npz"]
    assert load_npz(path)[1] == {"v": 1} and np.array_equal(load_npz(path)[0]["a"], np.ones(3))

    def crash(f, **arrays):                       # a crash in the middle of writing
        f.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt
    monkeypatch.setattr(io.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        save_npz(path, {"a": np.zeros(3)}, {"v": 2})
    monkeypatch.undo()
    assert listing(tmp_path) == ["ckpt.npz"]                           # temp file removed
    arrays, meta = load_npz(path)                                      # old file intact
    assert meta == {"v": 1} and np.array_equal(arrays["a"], np.ones(3))
    save_npz(path, {"a": np.zeros(3)}, {"v": 2})
    assert load_npz(path)[1] == {"v": 2}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_npz(tmp_path / "no" / "such" / "x.npz", {"a": np.ones(1)})


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint file: .*missing.npz"):
        load_npz(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("not a zip at all")
    with pytest.raises(ValueError, match="text.npz is not an .npz file"):
        load_npz(tmp_path / "text.npz")
    save_npz(tmp_path / "good.npz", {"a": np.arange(1000.0)})
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2] + data[-200:])   # damaged body
    with pytest.raises(ValueError, match=r"cut.npz (is not an .npz|is a corrupt)"):
        load_npz(tmp_path / "cut.npz")
    np.savez(tmp_path / "pickled.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled.npz is a corrupt or unsupported .npz"):
        load_npz(tmp_path / "pickled.npz")
    with zipfile.ZipFile(tmp_path / "badmeta.npz", "w") as z:
        with z.open(META_KEY + ".npy", "w") as f:
            np.lib.format.write_array(f, np.frombuffer(b"{not json", dtype=np.uint8))
    with pytest.raises(ValueError, match="unreadable metadata"):
        load_npz(tmp_path / "badmeta.npz")


def test_atomic_files_get_ordinary_permissions(tmp_path):
    from minifcn.io import atomic_path

    ref = tmp_path / "plain.txt"
    ref.write_text("x")
    with atomic_path(tmp_path / "atomic.txt") as tmp:
        tmp.write_text("y")
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == ref.stat().st_mode & 0o777
