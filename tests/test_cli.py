"""Every verb ends a user error in ONE line naming the file or flag and what was expected,
exit code 2, no traceback (unless --debug or MINIFCN_DEBUG=1); flags are checked before
any work starts."""
import importlib.util
import json
import os

import numpy as np
import pytest

from minifcn import cli as cli_module
from minifcn.cli import main as cli
from minifcn.data.synthetic import make_dataset
from minifcn.io import save_npz
from minifcn.models import build, load_model

NO_CUPY = importlib.util.find_spec("cupy") is None
TINY = ["--model", "fcn32s", "--width", "0.0625", "--crop", "32", "--iters", "2", "--val-every", "0"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    root = make_dataset(tmp / "data", n_train=1, n_val=2, seed=3, progress=False)
    model = build("fcn8s", n_class=6, width=1 / 16, seed=1)
    model.save(tmp / "model.npz")
    (tmp / "a_file").write_text("x")
    return tmp, root


def _one_line_error(capsys, rc, *words):
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.splitlines()  # progress lines may come first; the error is one line, the last
    assert [i for i, line in enumerate(lines) if "error" in line] == [len(lines) - 1], err
    assert "Traceback" not in err, err
    err = lines[-1]
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.mark.parametrize("flags, named", [
    (["--checkpoint-every", "0"], "--checkpoint-every"),
    (["--val-limit", "0"], "--val-limit"),
    (["--dropout", "1"], "--dropout"),
    (["--dropout", "-0.5"], "--dropout"),
    (["--width", "inf"], "--width"),
    (["--width", "nan"], "--width"),
    (["--crop", "100000"], "--crop"),
    (["--lr", "-1"], "--lr"),
    (["--momentum", "1"], "--momentum"),
    (["--model", "fcn7s"], "--model"),
    (["--iter-size", "0"], "--iter-size"),
    (["--out", ""], "--out"),
    (["--data", "/nonexistent/voc"], "--data"),
    (["--init-from", "/nonexistent/c.npz"], "--init-from"),
    (["--iters", "abc"], "--iters"),
    (["--model", "segnet", "--same-padding"], "--same-padding"),
])
def test_train_flag_errors(tmp_path, capsys, flags, named):
    args = ["train", *TINY, "--out", str(tmp_path / "run"), *flags]
    try:
        rc = cli(args)
    except SystemExit as exc:  # argparse type errors
        rc = exc.code
    _one_line_error(capsys, rc, named)
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


@pytest.mark.parametrize("seconds", ["0", "-1", "inf"])
def test_train_seconds_checked_before_timing(tmp_path, capsys, monkeypatch, seconds):
    import minifcn.train as train

    monkeypatch.setattr(train, "iterations_for", lambda *a: pytest.fail("timed before the flags were checked"))
    _one_line_error(capsys, cli(["train", *TINY[:-4], "--seconds", seconds, "--out", str(tmp_path / "r")]), "--seconds")


def test_model_choices_come_from_the_registry(capsys):
    import minifcn.models as models

    with pytest.raises(SystemExit):
        cli(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # undo argparse's wrapping
    for name in models.MODELS:
        assert name in help_text


def test_out_that_is_a_file_is_refused_before_any_work(files, capsys, monkeypatch):
    tmp, root = files
    import minifcn.evaluate as ev

    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking --out"))
    _one_line_error(capsys, cli(["eval", "--checkpoint", str(tmp / "model.npz"), "--data", root,
                                 "--out", str(tmp / "a_file")]), "--out", "existing file")
    _one_line_error(capsys, cli(["eval", "--checkpoint", str(tmp / "model.npz"), "--data", root, "--out", ""]),
                    "--out")
    _one_line_error(capsys, cli(["train", *TINY, "--out", str(tmp / "a_file")]), "--out", "existing file")
    _one_line_error(capsys, cli(["demo", "--out", str(tmp / "a_file")]), "--out")
    _one_line_error(capsys, cli(["predict", str(tmp / "a_file"), "--checkpoint", str(tmp / "model.npz"), "-o", ""]),
                    "--out")
    _one_line_error(capsys, cli(["make-dataset", str(tmp / "a_file")]), "a_file")


@pytest.mark.skipif(not NO_CUPY, reason="CuPy is installed here")
@pytest.mark.parametrize("verb", ["train", "eval", "predict", "demo"])
def test_backend_cupy_without_cupy(files, tmp_path, capsys, verb):
    tmp, root = files
    args = {"train": ["train", *TINY, "--out", str(tmp_path / "r")],
            "eval": ["eval", "--checkpoint", str(tmp / "model.npz"), "--data", root],
            "predict": ["predict", str(tmp / "a_file"), "--checkpoint", str(tmp / "model.npz"), "-o", str(tmp_path)],
            "demo": ["demo", "--out", str(tmp_path / "d")]}[verb]
    _one_line_error(capsys, cli(args + ["--backend", "cupy"]), "--backend cupy")


def test_eval_on_a_broken_voc_tree(files, tmp_path, capsys):
    tmp, root = files
    import shutil

    broken = tmp_path / "VOC2012"
    shutil.copytree(root, broken)
    (broken / "ImageSets" / "Segmentation" / "val.txt").write_text("")
    _one_line_error(capsys, cli(["eval", "--checkpoint", str(tmp / "model.npz"), "--data", str(broken)]),
                    "val.txt", "empty")
    (broken / "ImageSets" / "Segmentation" / "val.txt").write_text("val_00000\nval_00001\n")
    (broken / "JPEGImages" / "val_00001.jpg").write_bytes(b"\xff\xd8 not really")
    _one_line_error(capsys, cli(["eval", "--checkpoint", str(tmp / "model.npz"), "--data", str(broken),
                                 "--out", str(tmp_path / "e")]), "val_00001.jpg")
    (broken / "JPEGImages" / "val_00001.jpg").unlink()
    _one_line_error(capsys, cli(["eval", "--checkpoint", str(tmp / "model.npz"), "--data", str(broken),
                                 "--out", str(tmp_path / "e")]), "val_00001.jpg", "does not exist")
    _one_line_error(capsys, cli(["eval", "--checkpoint", str(tmp / "model.npz"), "--data", root, "--limit", "0"]),
                    "--limit")


@pytest.mark.parametrize("meta, words", [
    ([1, 2], ["metadata of the wrong type", "list"]),
    ({"model": "fcn8s"}, ["no model config", "str"]),
    ({"model": {"name": 8, "n_class": 6, "width": 0.0625}}, ["'name'", "str"]),
    ({"model": {"name": "fcn8s", "n_class": "six", "width": 0.0625}}, ["'n_class'", "int"]),
    ({"model": {"name": "fcn8s", "n_class": 6, "width": "thin"}}, ["'width'"]),
    ({"model": {"name": "fcn8s", "n_class": 6, "width": 0.0625}, "train": []}, None),
])
def test_checkpoint_metadata_of_the_wrong_type(files, tmp_path, capsys, meta, words):
    tmp, root = files
    from minifcn.io import load_npz

    arrays, _ = load_npz(tmp / "model.npz")
    path = tmp_path / "c.npz"
    import zipfile

    save_npz(path, arrays, {})
    if isinstance(meta, list):  # save_npz writes only dicts: put a JSON list in by hand
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("__meta__.npy", _npy_bytes(np.frombuffer(json.dumps(meta).encode(), np.uint8)))
    else:
        save_npz(path, arrays, meta)
    if words is None:  # a model whose training state is damaged: eval works, --resume refuses
        (tmp_path / "run").mkdir()
        os.replace(path, tmp_path / "run" / "checkpoint.npz")
        _one_line_error(capsys, cli(["train", "--resume", "--out", str(tmp_path / "run")]), "no training state")
        return
    _one_line_error(capsys, cli(["eval", "--checkpoint", str(path), "--data", root]), str(path), *words)


def _npy_bytes(a):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, a)
    return buf.getvalue()


def test_poisoned_checkpoint_is_refused_naming_the_parameter(files, tmp_path, capsys):
    tmp, root = files
    from minifcn.io import load_npz

    arrays, meta = load_npz(tmp / "model.npz")
    arrays["conv3_2.weight"][0, 0, 0, 0] = np.nan
    save_npz(tmp_path / "nan.npz", arrays, meta)
    _one_line_error(capsys, cli(["eval", "--checkpoint", str(tmp_path / "nan.npz"), "--data", root]),
                    "conv3_2.weight", "NaN/inf")
    _one_line_error(capsys, cli(["predict", str(tmp / "a_file"), "--checkpoint", str(tmp_path / "nan.npz"),
                                 "-o", str(tmp_path / "p")]), "conv3_2.weight")


def test_init_from_another_width_is_refused(files, tmp_path, capsys):
    tmp, _ = files
    _one_line_error(capsys, cli(["train", "--model", "fcn16s", "--width", "0.125", "--crop", "32", "--iters", "1",
                                 "--val-every", "0", "--init-from", str(tmp / "model.npz"), "--out", str(tmp_path / "r")]),
                    "width 0.0625", "width 0.125", "--width")


def test_init_from_same_width_says_what_was_copied(files, tmp_path, capsys):
    tmp, _ = files
    assert cli(["train", "--model", "fcn16s", "--width", "0.0625", "--crop", "32", "--iters", "1", "--val-every", "0",
                "--init-from", str(tmp / "model.npz"), "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "copied" in err and "of" in err and "fresh: " in err and "upscore16.weight" in err


def test_same_padding_run_is_stored_and_read_back(files, tmp_path):
    """--same-padding is part of the run: the checkpoint's model config rebuilds it for eval
    and for --resume."""
    from minifcn.io import load_npz

    tmp, root = files
    run = tmp_path / "r"
    assert cli(["train", *TINY, "--model", "fcn8s", "--same-padding", "--data", str(root),
                "--out", str(run)]) == 0
    assert load_npz(run / "checkpoint.npz")[1]["model"]["same_padding"] is True
    model = load_model(run / "checkpoint.npz")
    assert model.same_padding and model.crop_final.offset == (4, 4)
    assert cli(["eval", "--checkpoint", str(run / "checkpoint.npz"), "--data", str(root),
                "--out", str(tmp_path / "e")]) == 0
    assert cli(["train", "--resume", "--out", str(run), "--iters", "3"]) == 0   # the stored trunk again
    assert load_model(run / "checkpoint.npz").same_padding


@pytest.mark.parametrize("flags, named", [
    (["--md5", "abc"], "--md5"),
    (["--md5", "z" * 32], "--md5"),
    (["--url", "http://127.0.0.1:9/voc/"], "--url"),
    (["--url", "http://127.0.0.1:9"], "--url"),
])
def test_download_flags_checked_before_downloading(tmp_path, capsys, monkeypatch, flags, named):
    import minifcn.data.download as dl

    monkeypatch.setattr(dl, "download", lambda *a, **k: pytest.fail("downloaded before checking the flags"))
    _one_line_error(capsys, cli(["download-voc", str(tmp_path), *flags]), named)


def test_demo_flags(tmp_path, capsys):
    for flags, named in ((["--iters", "0"], "--iters"), (["--seconds", "-1"], "--seconds"),
                         (["--seconds", "0"], "--seconds"), (["--seed", "-3"], "--seed")):
        _one_line_error(capsys, cli(["demo", "--out", str(tmp_path / "d"), *flags]), named)
    assert not (tmp_path / "d").exists()


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    args = ["train", *TINY, "--dropout", "1", "--out", str(tmp_path / "r")]
    with pytest.raises(ValueError, match="--dropout"):
        cli(["--debug", *args])
    with pytest.raises(ValueError, match="--dropout"):
        cli([*args, "--debug"])
    monkeypatch.setenv("MINIFCN_DEBUG", "1")
    with pytest.raises(ValueError, match="--dropout"):
        cli(args)


def test_a_bug_is_one_line_with_exit_code_1(tmp_path, capsys, monkeypatch):
    import minifcn.demo as demo

    def broken(*a, **k):
        raise AttributeError("'NoneType' object has no attribute 'x'")

    monkeypatch.setattr(demo, "run_demo", broken)
    assert cli(["demo", "--out", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: AttributeError" in err and "--debug" in err
    assert cli_module.debugging() is False


def test_crf_and_compare_flags_in_the_help(capsys):
    for verb, flags in (("eval", ["--crf", "--crf-iterations", "--crf-w-appearance", "--crf-theta-alpha",
                                  "--crf-theta-beta", "--crf-w-smooth", "--crf-theta-gamma"]),
                        ("predict", ["--crf", "--crf-theta-alpha"]), ("demo", ["--compare", "--models", "--iters"])):
        with pytest.raises(SystemExit):
            cli([verb, "--help"])
        help_text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
        for flag in flags:
            assert flag in help_text, (verb, flag)
    with pytest.raises(SystemExit):
        cli(["eval", "--help"])
    help_text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
    assert "default 121 * max(H, W) / 500 per image" in help_text and "(default 10; needs --crf)" in help_text
