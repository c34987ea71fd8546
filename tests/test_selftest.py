import pytest

from minifcn import cli, selftest


def test_selftest_all_cases_pass(backend):
    reports = selftest.run(backend.name, verbose=False)
    assert len(reports) >= 12
    bad = [str(r) for r in reports if not r.ok]
    assert not bad, "\n".join(bad)


def test_selftest_command_prints_table(capsys):
    assert cli.main(["selftest"]) == 0
    out = capsys.readouterr().out
    assert "conv_transpose2d" in out and "max_pool2d" in out and "0 failed" in out
    for name in ("reference conv2d", "reference conv_transpose2d", "reference max_pool2d", "batch_norm2d",
                 "max_unpool2d", "interpolate_bilinear", "BatchNorm2d layer", "MaxUnpool2d layer",
                 "Interpolate layer"):
        assert name in out, name


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert "minifcn" in capsys.readouterr().out
