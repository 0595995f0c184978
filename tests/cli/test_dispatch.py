"""The command line's error policy: a user's mistake is one line and exit 1, a bug keeps
its traceback, argparse's own errors exit 2, Ctrl-C 130, a torchrun rank names itself."""

import subprocess
import sys

import pytest

import moco.config
from moco import cli
from moco.errors import ConfigError, DataSourceError, MocoError, OutputExistsError


def _raise(err: BaseException):
    def fail(*args, **kwargs):
        raise err

    return fail


@pytest.mark.parametrize(
    "err", [ConfigError("no such key"), DataSourceError("no such data"), MocoError("plain")]
)
def test_a_moco_error_is_one_line_and_exit_1(err, monkeypatch, capsys):
    monkeypatch.setattr(moco.config, "list_presets", _raise(err))
    assert cli.main(["presets"]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"moco presets: error: {err}\n" and captured.out == ""


def test_any_other_exception_is_a_bug_and_keeps_its_traceback(monkeypatch):
    monkeypatch.setattr(moco.config, "list_presets", _raise(ZeroDivisionError("a bug")))
    with pytest.raises(ZeroDivisionError, match="a bug"):
        cli.main(["presets"])


@pytest.mark.parametrize("err", [ValueError("bad"), RuntimeError("bad"), FileExistsError("x")])
def test_builtin_errors_are_no_longer_flattened(err, monkeypatch):
    monkeypatch.setattr(moco.config, "list_presets", _raise(err))
    with pytest.raises(type(err)):
        cli.main(["presets"])


def test_output_exists_is_a_moco_error_and_a_file_exists_error():
    assert issubclass(OutputExistsError, MocoError) and issubclass(
        OutputExistsError, FileExistsError
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["knn"], "the following arguments are required: checkpoint"),
        (["presets", "--bogus"], "unrecognized arguments: --bogus"),
        (["pretrain", "--bogus"], "unrecognized arguments: --bogus"),
        (["knn", "ckpt", "extra"], "unrecognized arguments: extra"),
        (["lincls", "ckpt", "--protocol", "huge"], "invalid choice: 'huge'"),
        (["embed", "ckpt"], "the following arguments are required: --out"),
        (["data"], "the following arguments are required: SUBCOMMAND"),
        (["nosuchcommand"], "invalid choice: 'nosuchcommand'"),
    ],
)
def test_argparse_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_no_command_prints_the_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: moco") and "examples:" in out
    for command in ("pretrain", "presets", "knn", "lincls", "finetune", "embed", "report",
                    "export", "data", "ablate"):  # fmt: skip
        assert command in out


def test_overrides_may_follow_options(monkeypatch, tmp_path, capsys):
    # pretrain --print-config collects key=value pairs before and after its options
    argv = ["pretrain", "optim.epochs=3", "--print-config", "model.queue_size=256"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "epochs: 3" in out and "queue_size: 256" in out


def test_ctrl_c_exits_130_with_a_message(monkeypatch, capsys):
    monkeypatch.setattr(moco.config, "list_presets", _raise(KeyboardInterrupt()))
    assert cli.main(["presets"]) == 130
    assert "interrupted; the last checkpoint of the run is intact" in capsys.readouterr().err


def test_resume_with_preset_data_or_out_is_a_config_error(capsys):
    for extra in (["--preset", "moco_cifar_demo"], ["--data", "bundled"], ["--out", "x"]):
        assert cli.main(["pretrain", "--resume", "runs/x", *extra]) == 1
        err = capsys.readouterr().err
        assert err == (
            "moco pretrain: error: --resume continues a run with its saved config; "
            "drop --preset/--data/--out\n"
        )


def test_a_torchrun_rank_names_itself_for_any_error(monkeypatch, capsys):
    from moco import dist

    monkeypatch.setattr(dist, "world_size", lambda: 2)
    monkeypatch.setattr(dist, "rank", lambda: 1)
    monkeypatch.setattr(moco.config, "list_presets", _raise(ZeroDivisionError("a bug\nmore")))
    assert cli.main(["presets"]) == 1
    assert capsys.readouterr().err == ("moco presets [rank 1/2]: error: ZeroDivisionError: a bug\n")
    monkeypatch.setattr(moco.config, "list_presets", _raise(RuntimeError("Connection reset")))
    assert cli.main(["presets"]) == 1
    err = capsys.readouterr().err
    assert "a collective with the other processes failed (Connection reset)" in err
    assert "--resume RUN_DIR" in err


def test_presets_help_and_print_config_do_not_import_torch():
    code = (
        "import sys, moco.cli\n"
        "assert moco.cli.main(['presets']) == 0\n"
        "try:\n"
        "    moco.cli.main(['--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0\n"
        "assert moco.cli.main([]) == 2\n"
        "assert moco.cli.main(['pretrain', '--print-config', 'optim.epochs=7']) == 0\n"
        "loaded = [m for m in ('torch', 'numpy', 'moco.dist') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "moco_v2_imagenet" in done.stdout and "epochs: 7" in done.stdout


def test_the_package_runs_as_a_module():
    for module in ("moco", "moco.cli"):
        done = subprocess.run(
            [sys.executable, "-m", module, "presets"], capture_output=True, text=True, check=True
        )
        assert "default" in done.stdout
