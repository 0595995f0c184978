"""Protocols built from the command line's values, result records and where they are saved."""

import json

import pytest

from moco.errors import ConfigError
from moco.eval.finetune import FinetuneProtocol
from moco.eval.linear import PROTOCOLS, LinearProtocol, train_linear_probe
from moco.runs.load import load_for_eval
from moco.runs.records import (
    finetune_protocol,
    finetune_record,
    lincls_record,
    linear_protocol,
    result_path,
    save_record,
)


def test_linear_protocol_keeps_the_milestones_in_place_when_the_epochs_change():
    assert linear_protocol("paper") == PROTOCOLS["paper"]
    p = linear_protocol("paper", epochs=50, lr=3.0)
    assert (p.epochs, p.milestones, p.lr) == (50, (30, 40), 3.0)  # 60, 80 of 100
    small = linear_protocol("small", epochs=2)
    assert small.epochs == 2 and small.milestones == (1, 2) and small.cache_features
    with pytest.raises(ConfigError, match="unknown linear protocol 'huge'; allowed: paper"):
        linear_protocol("huge")


def test_finetune_protocol_changes_only_what_was_given():
    assert finetune_protocol() == FinetuneProtocol()
    p = finetune_protocol(epochs=3, batch_size=32, norm_features=False)
    assert (p.epochs, p.batch_size, p.norm_features) == (3, 32, False)
    assert p.lr == FinetuneProtocol().lr


def test_records_are_saved_next_to_the_checkpoint_by_epoch_or_random_init(tmp_path):
    record = {"checkpoint": str(tmp_path / "run" / "checkpoint.pth.tar"), "epoch": 7,
              "random_init": False, "top1": 0.5}  # fmt: skip
    assert result_path(record, "lincls") == tmp_path / "run" / "lincls-epoch7.json"
    baseline = {**record, "random_init": True}
    assert result_path(baseline, "knn-k20") == tmp_path / "run" / "knn-k20-random-init.json"
    (tmp_path / "run").mkdir()
    path = save_record(record, "finetune")
    assert path == tmp_path / "run" / "finetune-epoch7.json"
    assert json.loads(path.read_text()) == record
    chosen = save_record(record, "finetune", tmp_path / "mine.json")
    assert chosen == tmp_path / "mine.json" and json.loads(chosen.read_text()) == record


def test_lincls_record_says_what_was_measured_and_on_what(untrained_checkpoint):
    protocol = linear_protocol("small", epochs=1)
    r = lincls_record(untrained_checkpoint, protocol, device="cpu")
    assert r["checkpoint"] == str(untrained_checkpoint) and r["epoch"] == 3
    assert not r["random_init"] and r["train_images"] == 256 and r["test_images"] == 64
    assert r["validation"] == "10% of train, stratified, seed 0"
    assert 0.0 <= r["test_top1"] <= r["test_top5"] <= 1.0 and r["selected_epoch"] == 1
    # one step of SGD leaves the probe near chance (observed test top-1 0.17), so measure
    # again from what the record says was measured: the same numbers come back
    e = load_for_eval(r["checkpoint"], r["data"], r["random_init"])
    again = train_linear_probe(
        e.encoder, e.data, LinearProtocol(**r["protocol"]), e.size, e.mean, e.std
    )
    assert (again.test_top1, again.test_top5) == (r["test_top1"], r["test_top5"])
    assert again.curve == r["curve"] and r["val_top1_selected"] == r["curve"][0]["val_top1"]
    assert r["protocol"]["epochs"] == 1 and len(r["curve"]) == 1
    assert {"data", "test_split", "val_top1_selected", "version"} <= set(r)
    assert result_path(r, "lincls").name == "lincls-epoch3.json"


def test_finetune_record_of_the_random_init_baseline(untrained_checkpoint):
    protocol = finetune_protocol(epochs=1, batch_size=64)
    r = finetune_record(untrained_checkpoint, protocol, device="cpu", random_init=True)
    assert r["random_init"] and r["protocol"]["norm_features"] and r["selected_epoch"] == 1
    assert result_path(r, "finetune").name == "finetune-random-init.json"
