"""Numeric arguments of the evaluation commands are checked before anything runs: a
bad value exits 2 with argparse's one line naming the argument and the value."""

import argparse
import math

import pytest

from moco.cli import build_parser, main
from moco.cli.evaluate import positive_float, positive_int
from moco.errors import ConfigError
from moco.runs.records import finetune_protocol, linear_protocol


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["knn", "CKPT", "--k", "0"], "argument --k: must be a positive integer, got 0"),
        (["knn", "CKPT", "--k", "-5"], "argument --k: must be a positive integer, got -5"),
        (["knn", "CKPT", "--k", "2.5"], "argument --k: must be a positive integer, got '2.5'"),
        (["knn", "CKPT", "--t", "0"], "argument --t: must be a finite number > 0, got 0"),
        (["knn", "CKPT", "--t", "-0.1"], "argument --t: must be a finite number > 0, got -0.1"),
        (["knn", "CKPT", "--t", "inf"], "argument --t: must be a finite number > 0, got inf"),
        (["lincls", "CKPT", "--lr", "nan"], "argument --lr: must be a finite number > 0, got nan"),
        (
            ["lincls", "CKPT", "--epochs", "0"],
            "argument --epochs: must be a positive integer, got 0",
        ),
        (["finetune", "CKPT", "--epochs", "0"], "argument --epochs: must be a positive integer"),
        (["finetune", "CKPT", "--lr", "-1"], "argument --lr: must be a finite number > 0, got -1"),
        (["finetune", "CKPT", "--batch-size", "0"], "argument --batch-size: must be a positive"),
        (["finetune", "CKPT", "--lr", "fast"], "argument --lr: must be a number > 0, got 'fast'"),
        (
            ["lincls", "CKPT", "--label-fraction", "0"],
            "argument --label-fraction: must be a number in (0, 1], got 0",
        ),
        (
            ["lincls", "CKPT", "--label-fraction", "1.5"],
            "argument --label-fraction: must be a number in (0, 1], got 1.5",
        ),
        (["lincls", "CKPT", "--label-fraction", "-0.1"], "argument --label-fraction: must be"),
        (
            ["finetune", "CKPT", "--label-fraction", "nan"],
            "argument --label-fraction: must be a number in (0, 1], got nan",
        ),
        (
            ["finetune", "CKPT", "--label-fraction", "ten"],
            "argument --label-fraction: must be a number in (0, 1], got 'ten'",
        ),
        (
            ["finetune", "CKPT", "--label-seed", "-1"],
            "argument --label-seed: must be a whole number >= 0, got -1",
        ),
    ],
)
def test_bad_numbers_exit_2_naming_the_argument(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {message}" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing loaded, nothing written


def test_the_type_functions_accept_good_values():
    assert positive_int("1") == 1 and positive_int("200") == 200
    assert positive_float("0.07") == 0.07 and positive_float("30") == 30.0
    assert positive_float("1e-9") == 1e-9
    for bad in ("0", "-1", "x", "1.0"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(bad)
    for bad in ("0", "-0.0", "nan", "inf", "-inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_float(bad)


@pytest.mark.parametrize(
    ("changes", "key"),
    [({"epochs": 0}, "epochs"), ({"lr": math.nan}, "lr"), ({"lr": -1.0}, "lr"),
     ({"epochs": 2.5}, "epochs")],
)  # fmt: skip
def test_the_library_refuses_the_same_values(changes, key):
    with pytest.raises(ConfigError, match=f"{key} must be"):
        linear_protocol("small", **changes)
    with pytest.raises(ConfigError, match=f"{key} must be"):
        finetune_protocol(**changes)
    with pytest.raises(ConfigError, match="batch_size must be a finite number > 0, got 0"):
        finetune_protocol(batch_size=0)


@pytest.mark.parametrize("command", ["lincls", "finetune"])
def test_the_label_fraction_flags_parse(command):
    args = build_parser().parse_args([command, "CKPT", "--label-fraction", "0.01",
                                      "--label-seed", "3"])  # fmt: skip
    assert (args.label_fraction, args.label_seed) == (0.01, 3)
    default = build_parser().parse_args([command, "CKPT"])
    assert (default.label_fraction, default.label_seed) == (1.0, 0)  # every label
    assert build_parser().parse_args([command, "CKPT", "--label-fraction", "1"]).label_fraction == 1
