"""The trainer: loss falls, interrupted + resumed equals uninterrupted bit for bit,
NaN stops the run and keeps the last good checkpoint, staged initialisation, the verb."""
import json
import os
import signal

import numpy as np
import pytest

from minifcn.backend import to_numpy
from minifcn.cli import main as cli
from minifcn.io import load_npz
from minifcn.models import build
from minifcn.train import Batches, TrainConfig, Trainer, TrainingDiverged, copy_matching

TINY = dict(width=1 / 16, crop=32, grid=2, warmup=2, val_every=0, log_every=1, lr=0.01)


def _config(tmp_path, name="run", **kw):
    return TrainConfig(out=str(tmp_path / name), **{**TINY, **kw})


def _params(model):
    return {k: to_numpy(p.data).copy() for k, p in model.named_parameters()}


def test_loss_falls(tmp_path):
    trainer = Trainer(_config(tmp_path, iters=40, model="fcn32s", dropout=0.0, class_weights=False), progress=False)
    trainer.run()
    losses = [r["loss"] for r in trainer.history if "loss" in r]
    assert len(losses) == 40
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:4])  # from log(6) = 1.79 at the start
    rows = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert [r["iteration"] for r in rows] == list(range(1, 41))
    assert (tmp_path / "run" / "checkpoint.npz").is_file() and (tmp_path / "run" / "curves.png").is_file()


def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path, monkeypatch):
    """Ctrl-C after iteration 3 saves a checkpoint; resuming gives the same parameters,
    momentum and RNG streams (data and dropout) as a run that never stopped."""
    kw = dict(iters=6, checkpoint_every=100, model="fcn16s", dropout=0.5, iter_size=2)
    straight = Trainer(_config(tmp_path, "a", **kw), progress=False)
    straight.run()

    first = Trainer(_config(tmp_path, "b", **kw), progress=False)
    step = first.step

    def step_then_ctrl_c():
        loss = step()
        if first.iteration == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(first, "step", step_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt, match="interrupted at iteration 3"):
        first.run()
    assert load_npz(tmp_path / "b" / "checkpoint.npz")[1]["train"]["iteration"] == 3

    resumed = Trainer(_config(tmp_path, "b", **kw), resume=True, progress=False)
    assert resumed.iteration == 3
    resumed.run()
    a, b = _params(straight.model), _params(resumed.model)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    for k, v in straight.optimizer.state_dict().items():
        assert np.array_equal(to_numpy(v), to_numpy(resumed.optimizer.state_dict()[k])), k
    assert not np.array_equal(a["score_fr.weight"], 0 * a["score_fr.weight"])  # it did learn


def test_canvases_drawn_ahead_are_those_drawn_one_after_the_other(tmp_path):
    """Batches draws the next canvas in a background thread; canvases and the state() a checkpoint
    stores are exactly those of plain sequential draws, also after set_state()."""
    config = _config(tmp_path)
    ahead, plain = Batches(config), Batches(config)
    states = []
    for _ in range(3):
        states.append(plain._state())
        assert ahead.state() == states[-1]
        image, label = next(ahead)
        want_image, want_label = plain._draw()
        assert np.array_equal(image, want_image) and np.array_equal(label, want_label)
    ahead.set_state(states[1])   # back two canvases, as a failed step does
    assert ahead.state() == states[1]
    assert np.array_equal(next(ahead)[1], _nth_label(config, 1))


def _nth_label(config, n):
    b = Batches(config)
    for _ in range(n):
        b._draw()
    return b._draw()[1]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(_config(tmp_path, iters=10, checkpoint_every=2), progress=False)
    step = trainer.step

    def poisoned_step():
        if trainer.iteration == 3:  # a weight goes bad during iteration 4
            trainer.model.score_fr.bias.data[0] = float("nan")
        return step()

    monkeypatch.setattr(trainer, "step", poisoned_step)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at iteration 4.*holds iteration 2, the last with a finite loss"):
        trainer.run()
    arrays, meta = load_npz(tmp_path / "run" / "checkpoint.npz")
    assert meta["train"]["iteration"] == 2
    assert all(np.isfinite(v).all() for v in arrays.values())


def test_class_weights_follow_inverse_square_root_frequency(tmp_path):
    batches = Batches(_config(tmp_path))
    w = batches.class_weights(n=16)
    counts = np.zeros(batches.n_class)
    from minifcn.data.synthetic import sample

    rng = np.random.default_rng([0, 11])
    for _ in range(16):
        counts += np.bincount(sample(rng)[1].ravel(), minlength=256)[: batches.n_class]
    freq = counts / counts.sum()
    np.testing.assert_allclose(w / w[0], (freq / freq[0]) ** -0.5, rtol=1e-12)
    assert (freq * w).sum() == pytest.approx(1.0)


def test_init_from_copies_matching_parameters(tmp_path):
    src = build("fcn32s", n_class=6, width=1 / 16, seed=3)
    src.score_fr.weight.data = src.score_fr.weight.data + 1.0
    src.save(tmp_path / "32s.npz")
    dst = build("fcn16s", n_class=6, width=1 / 16, seed=4)
    copied = copy_matching(dst, tmp_path / "32s.npz")
    assert copied == len(list(src.named_parameters())) - 1  # all but upscore (another kernel size)
    assert np.array_equal(dst.score_fr.weight.data, src.score_fr.weight.data)
    assert not dst.score_pool4.weight.data.any()
    with pytest.raises(ValueError, match="scores 6 classes but the model has 21"):
        copy_matching(build("fcn16s", n_class=21, width=1 / 16), tmp_path / "32s.npz")


def test_train_command_errors_and_run(tmp_path, capsys):
    assert cli(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    args = ["train", "--model", "fcn32s", "--width", "0.0625", "--crop", "32", "--iters", "3", "--val-every", "0",
            "--warmup", "1", "--out", str(tmp_path / "cli")]
    capsys.readouterr()
    assert cli(args) == 0
    assert load_npz(tmp_path / "cli" / "checkpoint.npz")[1]["train"]["iteration"] == 3
    assert "trained iterations 1-3 in " in capsys.readouterr().out     # a summary even without validation
    assert cli(["train", "--iters", "5", "--out", str(tmp_path / "cli"), "--resume"]) == 0
    assert "trained iterations 4-5 in " in capsys.readouterr().out
    # a resumed run keeps the settings it started with but --iters extends it
    arrays, meta = load_npz(tmp_path / "cli" / "checkpoint.npz")
    assert meta["train"]["iteration"] == 5
    assert meta["train"]["config"]["width"] == 0.0625 and meta["train"]["config"]["crop"] == 32


def test_trainer_and_resume_on_every_backend(backend, tmp_path):
    """Steps, checkpoint and resume work on each backend (strict:device1 refuses hidden host
    transfers, as CuPy would) and give the same result as an uninterrupted run there."""
    kw = dict(iters=3, model="fcn8s", dropout=0.5, backend=backend.name, crop=24)
    straight = Trainer(_config(tmp_path, "a", **kw), progress=False)
    for _ in range(3):
        straight.step()
    first = Trainer(_config(tmp_path, "b", **kw), progress=False)
    first.step(), first.step()
    first.save_checkpoint()
    resumed = Trainer(_config(tmp_path, "b", **kw), resume=True, progress=False)
    resumed.step()
    assert resumed.iteration == 3
    a, b = _params(straight.model), _params(resumed.model)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _watch_scores_and_softmax(model, monkeypatch):
    """Make ``model.backward`` record whether the step still holds the scores of its
    forward and the softmax of its loss (weak references: dead once nothing holds them)."""
    import weakref

    from minifcn import functional as F

    refs, alive = {}, []
    forward, backward, loss = model.forward, model.backward, F.softmax_cross_entropy

    def watched_forward(x):
        scores = forward(x)
        refs["scores"] = weakref.ref(scores)
        return scores

    def watched_loss(*args, **kwargs):
        value, cache = loss(*args, **kwargs)
        refs["softmax"] = weakref.ref(cache.prob)
        return value, cache

    def watched_backward(dscores, **kwargs):
        alive.append(sorted(k for k, r in refs.items() if r() is not None))
        return backward(dscores, **kwargs)

    monkeypatch.setattr(model, "forward", watched_forward)
    monkeypatch.setattr(model, "backward", watched_backward)
    monkeypatch.setattr(F, "softmax_cross_entropy", watched_loss)
    return alive


def test_a_step_frees_its_scores_and_softmax_before_the_backward(tmp_path, monkeypatch):
    from minifcn import bench

    trainer = Trainer(_config(tmp_path, iters=1, model="fcn8s"), progress=False)
    alive = _watch_scores_and_softmax(trainer.model, monkeypatch)
    trainer.step()
    x = np.zeros((1, 3, 32, 32), np.float32)
    bench.MinifcnStep(trainer.model, x, np.zeros((1, 32, 32), np.int64))()
    assert alive == [[], []]          # (trainer, bench step): nothing held through the backward
