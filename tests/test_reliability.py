"""No command destroys a user's files or work: predict never writes over an input and
never lets outputs collide; train refuses an existing run folder; --resume applies the
flags that may change and refuses the others; SIGTERM and errors mid-run save the last
good state; the NaN stop keeps a checkpoint that resumes; stale temporaries are cleaned."""
import json
import os
import shutil
import signal

import numpy as np
import pytest
from PIL import Image

from minifcn.cli import main as cli
from minifcn.data.synthetic import make_dataset
from minifcn.evaluate import output_names, predict
from minifcn.io import clean_stale, load_npz, save_npz
from minifcn.models import build
from minifcn.train import RunExists, TrainConfig, Trainer, TrainingDiverged, TrainingError

from test_train import TINY, _config, _params

TRAIN = ["train", "--model", "fcn32s", "--width", "0.0625", "--crop", "32", "--val-every", "0", "--warmup", "1",
         "--log-every", "1"]


def _dead_pid():
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model")
    model = build("fcn8s", n_class=6, width=1 / 16, seed=1)
    rng = np.random.default_rng(0)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        w = getattr(model, name).weight
        w.data = rng.standard_normal(w.shape).astype(np.float32)
    model.save(tmp / "model.npz")
    return tmp / "model.npz", model.eval()


def _image(path, seed, size=(30, 40)):
    im = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(im).save(path)
    return np.asarray(Image.open(path).convert("RGB"))


# --- 1. predict ----------------------------------------------------------------------
def test_predict_never_writes_over_its_input(model_file, tmp_path, capsys):
    ckpt, _ = model_file
    _image(tmp_path / "ow" / "photo.png", 0)
    before = (tmp_path / "ow" / "photo.png").read_bytes()
    assert cli(["predict", str(tmp_path / "ow" / "photo.png"), "--checkpoint", str(ckpt), "-o", str(tmp_path / "ow")]) == 2
    err = capsys.readouterr().err
    assert "over the input image" in err and "photo.png" in err and err.count("\n") == 1
    assert (tmp_path / "ow" / "photo.png").read_bytes() == before
    assert sorted(os.listdir(tmp_path / "ow")) == ["photo.png"]
    # an input named like another input's overlay is not overwritten either: the names move apart
    _image(tmp_path / "ow2" / "x.jpg", 1)
    _image(tmp_path / "ow2" / "x_overlay.png", 2)
    keep = {p: (tmp_path / "ow2" / p).read_bytes() for p in ("x.jpg", "x_overlay.png")}
    assert cli(["predict", str(tmp_path / "ow2" / "x.jpg"), str(tmp_path / "ow2" / "x_overlay.png"),
                "--checkpoint", str(ckpt), "-o", str(tmp_path / "ow2")]) == 0
    assert {p: (tmp_path / "ow2" / p).read_bytes() for p in keep} == keep
    assert sorted(os.listdir(tmp_path / "ow2")) == ["x.jpg", "x.jpg.png", "x.jpg_overlay.png", "x_overlay.png",
                                                    "x_overlay.png.png", "x_overlay.png_overlay.png"]


def test_predict_outputs_never_collide(model_file, tmp_path):
    ckpt, model = model_file
    images = {p: _image(tmp_path / p, i, (20 + 5 * i, 33)) for i, p in enumerate(["a/x.png", "b/x.png", "b/x.jpg", "c/y.png"])}
    names = ["a/x", "b/x.png", "b/x.jpg", "y"]
    assert output_names([tmp_path / p for p in images]) == names
    assert cli(["predict", *[str(tmp_path / p) for p in images], "--checkpoint", str(ckpt), "-o", str(tmp_path / "out")]) == 0
    for p, name in zip(images, names):
        got = np.array(Image.open(tmp_path / "out" / f"{name}.png"))
        assert np.array_equal(got, predict(model, images[p])), p
        assert (tmp_path / "out" / f"{name}_overlay.png").is_file()
    # label of one input vs overlay of another: x.png and x_overlay.png
    assert output_names(["d/x.png", "d/x_overlay.jpg"]) == ["x.png", "x_overlay.jpg"]


def test_predict_streams_one_image_at_a_time(model_file, tmp_path, monkeypatch, capsys):
    """Each image is decoded just before its prediction, not all up front; a file whose
    header is fine but whose data is broken is skipped with one line and exit code 2."""
    import minifcn.data as data

    ckpt, _ = model_file
    paths = [tmp_path / f"im{i}.png" for i in range(3)]
    for i, p in enumerate(paths):
        _image(p, i)
    events = []
    real_read = data.read_image
    monkeypatch.setattr(data, "read_image", lambda p: events.append(("read", os.path.basename(p))) or real_read(p))
    import minifcn.viz as viz
    real_save = viz.save_label_png
    monkeypatch.setattr(viz, "save_label_png", lambda l, p: events.append(("write", os.path.basename(p))) or real_save(l, p))
    assert cli(["predict", *map(str, paths), "--checkpoint", str(ckpt), "-o", str(tmp_path / "o")]) == 0
    assert events == [("read", "im0.png"), ("write", "im0.png"), ("read", "im1.png"), ("write", "im1.png"),
                      ("read", "im2.png"), ("write", "im2.png")]
    capsys.readouterr()
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(paths[0].read_bytes()[:200])  # a valid header, then nothing
    assert cli(["predict", str(truncated), str(paths[1]), "--checkpoint", str(ckpt), "-o", str(tmp_path / "t")]) == 2
    assert "trunc.png" in capsys.readouterr().err
    assert (tmp_path / "t" / "im1.png").is_file()


# --- 2. a new run into an existing folder ----------------------------------------------
def test_train_refuses_an_existing_run_folder(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli(TRAIN + ["--iters", "2", "--out", out]) == 0
    before = (tmp_path / "run" / "checkpoint.npz").read_bytes(), (tmp_path / "run" / "log.jsonl").read_text()
    capsys.readouterr()
    assert cli(TRAIN + ["--iters", "2", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--out" in err and "--overwrite" in err and err.count("\n") == 1
    assert ((tmp_path / "run" / "checkpoint.npz").read_bytes(), (tmp_path / "run" / "log.jsonl").read_text()) == before
    with pytest.raises(RunExists):
        Trainer(TrainConfig(out=out, **TINY), progress=False)
    assert cli(TRAIN + ["--iters", "3", "--out", out, "--overwrite"]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert [r["iteration"] for r in rows if "loss" in r] == [1, 2, 3]  # a fresh log, not appended


# --- 3. --resume and the command line ---------------------------------------------------
def test_resume_applies_iters_data_and_val_every_and_refuses_the_rest(tmp_path, capsys):
    root = make_dataset(tmp_path / "data", n_train=2, n_val=1, seed=1, progress=False)
    out = str(tmp_path / "run")
    assert cli(TRAIN + ["--data", root, "--iters", "2", "--out", out]) == 0
    capsys.readouterr()
    for flags, named in ((["--lr", "0.5"], "--lr"), (["--width", "0.125"], "--width"), (["--model", "fcn8s"], "--model"),
                         (["--crop", "48"], "--crop")):
        assert cli(["train", "--resume", "--out", out, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert named in err and "--iters" in err and err.count("\n") == 1, err
    moved = str(tmp_path / "moved")
    shutil.move(os.path.dirname(root), moved)
    assert cli(["train", "--resume", "--out", out, "--iters", "4", "--data", moved, "--val-every", "2"]) == 0
    meta = load_npz(tmp_path / "run" / "checkpoint.npz")[1]["train"]
    assert meta["iteration"] == 4 and meta["config"]["data"] == moved and meta["config"]["val_every"] == 2
    rows = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert any("val_mean_iu" in r and r["iteration"] == 2 for r in rows) is False  # only after resuming at 2
    assert [r["iteration"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    assert cli(["train", "--resume", "--out", out]) == 0  # nothing left to do: says so, trains nothing
    assert "nothing to train" in capsys.readouterr().out
    assert cli(["train", "--resume", "--out", out, "--iters", "3"]) == 2
    assert "--iters 3 is below the 4 iterations" in capsys.readouterr().err


def test_resume_of_a_model_only_checkpoint_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    build("fcn32s", n_class=6, width=1 / 16).save(tmp_path / "run" / "checkpoint.npz")
    assert cli(["train", "--resume", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "no training state" in err and "--init-from" in err and "Traceback" not in err


# --- 4. failures mid-training are saved ------------------------------------------------
def test_sigterm_saves_like_ctrl_c(tmp_path, monkeypatch):
    trainer = Trainer(_config(tmp_path, iters=8, checkpoint_every=100), progress=False)
    step = trainer.step

    def step_then_sigterm():
        loss = step()
        if trainer.iteration == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(trainer, "step", step_then_sigterm)
    with pytest.raises(KeyboardInterrupt, match="stopped by SIGTERM at iteration 3"):
        trainer.run()
    assert load_npz(tmp_path / "run" / "checkpoint.npz")[1]["train"]["iteration"] == 3
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is put back


def test_unreadable_image_mid_run_saves_and_resumes_exactly(tmp_path, monkeypatch):
    """The images iteration 3 reads go bad: the state after iteration 2 is saved and the error is
    one line; once the files are fixed, resuming gives what an unbroken run gives. (Canvases are
    drawn one step ahead, so iteration 3's images are read while iteration 2 runs.)"""
    root = make_dataset(tmp_path / "data", n_train=3, n_val=1, seed=1, progress=False)
    kw = dict(iters=4, data=root, checkpoint_every=100, class_weights=False)
    straight = Trainer(_config(tmp_path, "a", **kw), progress=False)
    straight.run()
    jpgs = sorted((tmp_path / "data" / "VOC2012" / "JPEGImages").glob("train_*.jpg"))
    good = {p: p.read_bytes() for p in jpgs}
    broken = Trainer(_config(tmp_path, "b", **kw), progress=False)
    step = broken.step

    def step_with_bad_data():
        if broken.iteration == 1:
            for p in jpgs:
                p.write_bytes(b"garbage")
        return step()

    monkeypatch.setattr(broken, "step", step_with_bad_data)
    with pytest.raises(TrainingError, match=r"cannot read image .*train_.*at iteration 3\); saved iteration 2") as info:
        broken.run()
    assert "\n" not in str(info.value)
    assert load_npz(tmp_path / "b" / "checkpoint.npz")[1]["train"]["iteration"] == 2
    for p, data in good.items():
        p.write_bytes(data)
    resumed = Trainer(_config(tmp_path, "b", **kw), resume=True, progress=False)
    resumed.run()
    a, b = _params(straight.model), _params(resumed.model)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_bad_val_image_saves_the_run(tmp_path, capsys):
    def bad_val():
        raise ValueError("cannot read image val_00007.jpg: truncated")

    class Val:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            bad_val()

    trainer = Trainer(_config(tmp_path, iters=4, val_every=2), progress=False, val_data=Val())
    with pytest.raises(TrainingError, match=r"val_00007.jpg: truncated \(after iteration 2\); saved iteration 2"):
        trainer.run()
    assert load_npz(tmp_path / "run" / "checkpoint.npz")[1]["train"]["iteration"] == 2


# --- 5. the NaN stop keeps a checkpoint that resumes -----------------------------------
def test_huge_lr_keeps_a_checkpoint_whose_loss_was_finite(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli(TRAIN + ["--iters", "30", "--checkpoint-every", "1", "--lr", "10", "--warmup", "0", "--out", out,
                        "--no-class-weights"]) == 1
    err = capsys.readouterr().err
    assert "loss became nan" in err or "loss became inf" in err
    ckpt = tmp_path / "run" / "checkpoint.npz"
    assert "the last with a finite loss and finite parameters" in err
    kept = int(err.split("holds iteration ")[1].split(",")[0])
    arrays, meta = load_npz(ckpt)
    assert meta["train"]["iteration"] == kept
    # its parameters give a finite loss: the first resumed step does not diverge
    resumed = Trainer(TrainConfig(**{**meta["train"]["config"], "out": out}), resume=True, progress=False)
    assert np.isfinite(resumed.step())


def test_lr_1e6_keeps_no_poisoned_checkpoint(tmp_path, capsys):
    """Iteration 1 ends with weights near 1e6 whose loss is NaN: it must not be kept."""
    out = str(tmp_path / "run")
    assert cli(TRAIN + ["--iters", "5", "--checkpoint-every", "1", "--lr", "1e6", "--warmup", "0", "--out", out,
                        "--no-class-weights"]) == 1
    assert "at iteration 2" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_nan_parameters_are_never_checkpointed(tmp_path):
    trainer = Trainer(_config(tmp_path, iters=3), progress=False)
    trainer.step()
    trainer.save_checkpoint()
    trainer.model.fc6.weight.data[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"fc6.weight holds 1 NaN/inf"):
        trainer.save_checkpoint()
    assert load_npz(tmp_path / "run" / "checkpoint.npz")[1]["train"]["iteration"] == 1


# --- 6. stale temporaries --------------------------------------------------------------
def test_stale_temporaries_of_our_naming_are_cleaned(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    dead, alive = _dead_pid(), os.getpid()
    stale = run / f".checkpoint.npz.{dead}.0123456789ab.tmp"
    live = run / f".checkpoint.npz.{alive}.0123456789ab.tmp"
    other = run / ".checkpoint.npz.mine.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"x" * 100)
    Trainer(TrainConfig(out=str(run), **TINY), progress=False)
    assert not stale.exists() and live.exists() and other.exists()
    live.unlink()
    # a killed make-dataset leaves .VOC2012-<pid>-<hex>; the next build removes it
    left = tmp_path / "d" / f".VOC2012-{dead}-abcdefabcdef"
    (left / "JPEGImages").mkdir(parents=True)
    make_dataset(tmp_path / "d", n_train=1, n_val=1, progress=False)
    assert not left.exists() and sorted(os.listdir(tmp_path / "d")) == ["VOC2012"]
    # and atomic writes clean their own file's leftovers
    (tmp_path / f".x.npz.{dead}.0123456789ab.tmp").write_bytes(b"")
    save_npz(tmp_path / "x.npz", {"a": np.zeros(2)})
    assert sorted(os.listdir(tmp_path)) == ["d", "run", "x.npz"]
    assert clean_stale(tmp_path) == []


def test_trainer_config_check_names_the_flag():
    for field, value, flag in (("dropout", 1.0, "--dropout"), ("dropout", -0.5, "--dropout"),
                               ("width", float("inf"), "--width"), ("checkpoint_every", 0, "--checkpoint-every"),
                               ("val_limit", 0, "--val-limit"), ("crop", 100000, "--crop"), ("out", "", "--out"),
                               ("model", "nope", "--model"), ("lr", float("nan"), "--lr")):
        with pytest.raises(ValueError, match=flag):
            TrainConfig(**{field: value}).check()


def test_diverged_is_not_a_training_error():
    assert not issubclass(TrainingDiverged, TrainingError)
