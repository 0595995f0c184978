"""Result files: the default name carries every setting that changes the number, the same
measurement re-run replaces its own file, and a file of other settings is never replaced."""

import json

import pytest

from moco.cli import main
from moco.errors import OutputExistsError
from moco.eval.finetune import FinetuneProtocol
from moco.runs.records import (
    data_tag,
    finetune_kind,
    finetune_protocol,
    knn_kind,
    lincls_kind,
    linear_protocol,
    number,
    save_record,
)


def test_numbers_in_names_read_back_as_the_same_float():
    assert [number(x) for x in (30.0, 0.1, 1e-05, 0.05, 3.0000001)] == [
        "30", "0.1", "1e-05", "0.05", "3.0000001"
    ]  # fmt: skip


def test_kinds_name_every_setting():
    assert knn_kind(200, 0.1, "backbone") == "knn-k200-t0.1-backbone"
    assert knn_kind(200, 0.5, "head") == "knn-k200-t0.5-head"
    assert lincls_kind("small", linear_protocol("small")) == "lincls-small-e30-lr30"
    assert lincls_kind("paper", linear_protocol("paper", 50, 3.0)) == "lincls-paper-e50-lr3"
    assert finetune_kind(FinetuneProtocol()) == "finetune-e20-lr0.05-b128"
    p = finetune_protocol(2, 0.1, 64, norm_features=False)
    assert finetune_kind(p) == "finetune-e2-lr0.1-b64-nonorm"


def test_data_tags_tell_sources_apart(tmp_path):
    assert data_tag(None) == "" and data_tag("bundled") == "-data-bundled"
    a, b = tmp_path / "a" / "test", tmp_path / "b" / "test"
    assert data_tag(str(a)).startswith("-data-test-") and data_tag(str(a)) != data_tag(str(b))
    assert data_tag(f"folder:{a}").startswith("-data-folder-test-")
    assert data_tag(f"folder:{a}") != data_tag(str(a))
    assert knn_kind(5, 0.1, "backbone", str(a)).startswith("knn-k5-t0.1-backbone-data-test-")


def _record(run, **settings):
    return {"checkpoint": str(run / "checkpoint.pth.tar"), "epoch": 2, "random_init": False,
            "data": "tiny", "k": 20, "t": 0.1, "features": "backbone", "top1": 0.5,
            **settings}  # fmt: skip


def test_same_settings_replace_their_file_other_settings_are_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    path = save_record(_record(run), "knn-k20")
    assert path.name == "knn-k20-epoch2.json"
    again = save_record(_record(run, top1=0.6), "knn-k20")  # the same measurement, re-run
    assert again == path and json.loads(path.read_text())["top1"] == 0.6
    with pytest.raises(OutputExistsError, match=r"holds a result of other settings \(t 0.1"):
        save_record(_record(run, t=0.5), "knn-k20")
    with pytest.raises(OutputExistsError, match="features 'backbone' there, 'head' now"):
        save_record(_record(run, features="head"), "knn-k20", path)
    assert json.loads(path.read_text())["top1"] == 0.6  # untouched
    protocol = {"epochs": 2, "milestones": (1, 2)}  # a tuple, read back as a list
    out = tmp_path / "p.json"
    save_record(_record(run, protocol=protocol), "x", out)
    save_record(_record(run, protocol=protocol, top1=0.7), "x", out)
    with pytest.raises(OutputExistsError, match="protocol"):
        save_record(_record(run, protocol={**protocol, "epochs": 3}), "x", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "run"]  # no temporaries


def test_a_file_that_is_no_record_is_never_overwritten(tmp_path):
    ckpt = tmp_path / "checkpoint.pth.tar"
    ckpt.write_bytes(b"PK\x03\x04 weights")
    with pytest.raises(OutputExistsError, match="exists and is not a result record"):
        save_record(_record(tmp_path), "knn", ckpt)
    assert ckpt.read_bytes() == b"PK\x03\x04 weights"


def test_knn_results_of_other_settings_get_their_own_files(untrained_checkpoint, capsys):
    run = untrained_checkpoint.parent
    base = [str(run), "--k", "5", "--device", "cpu"]
    assert main(["knn", *base, "--t", "0.05"]) == 0
    assert main(["knn", *base, "--features", "head"]) == 0
    assert main(["knn", *base, "--t", "0.05"]) == 0  # the same again: its own file, replaced
    names = sorted(p.name for p in run.glob("knn-*.json"))
    assert names == ["knn-k5-t0.05-backbone-epoch3.json", "knn-k5-t0.1-head-epoch3.json"]
    first = json.loads((run / names[0]).read_text())
    assert (first["t"], first["features"]) == (0.05, "backbone")
    assert main(["knn", *base, "--out", str(run / names[0])]) == 1  # t 0.1 over t 0.05
    assert "holds a result of other settings (t 0.05 there, 0.1 now)" in capsys.readouterr().err


def test_lincls_and_finetune_names_carry_their_protocol(untrained_checkpoint):
    run = untrained_checkpoint.parent
    args = [str(run), "--device", "cpu", "--protocol", "small", "--epochs", "1"]
    assert main(["lincls", *args]) == 0
    assert main(["lincls", *args, "--lr", "3"]) == 0
    ft = [str(run), "--device", "cpu", "--epochs", "1", "--batch-size", "64"]
    assert main(["finetune", *ft]) == 0
    assert main(["finetune", *ft, "--no-feature-norm"]) == 0
    assert sorted(p.name for p in run.glob("*.json")) == [
        "finetune-e1-lr0.05-b64-epoch3.json",
        "finetune-e1-lr0.05-b64-nonorm-epoch3.json",
        "lincls-small-e1-lr3-epoch3.json",
        "lincls-small-e1-lr30-epoch3.json",
    ]
