"""Few-label results: the fraction, the seed and the count of labelled images are recorded
and named in the result file; every label keeps today's records and names."""

import json

import pytest

from moco.cli import main
from moco.errors import ConfigError
from moco.runs.records import (
    finetune_kind,
    finetune_protocol,
    lincls_kind,
    lincls_record,
    linear_protocol,
    save_record,
)


def test_the_record_holds_the_fraction_seed_and_count(untrained_checkpoint):
    protocol = linear_protocol("small", epochs=1, label_fraction=0.1, label_seed=4)
    r = lincls_record(untrained_checkpoint, protocol, device="cpu")
    # tiny_idx: 256 training images; validation holds out 10 % per class, the rest are
    # cut to 10 % per class (rounded half up, at least one)
    assert r["label_fraction"] == 0.1 and r["label_seed"] == 4
    assert 10 <= r["labelled_images"] <= 35 and r["train_images"] == 256
    assert r["labels"] == "10% of train less validation per class, seed 4"
    assert r["protocol"]["label_fraction"] == 0.1 and r["protocol"]["label_seed"] == 4
    assert r["validation"] == "10% of train, stratified, seed 0"  # unchanged
    path = save_record(r, lincls_kind("small", protocol))
    assert path.name == "lincls-small-e1-lr30-labels0.1-seed4-epoch3.json"
    saved = json.loads(path.read_text())
    assert (saved["label_fraction"], saved["labelled_images"]) == (0.1, r["labelled_images"])


def test_every_label_keeps_the_names_and_old_records_match(untrained_checkpoint):
    full = linear_protocol("small", epochs=1)
    assert lincls_kind("small", full) == "lincls-small-e1-lr30"
    assert finetune_kind(finetune_protocol(epochs=1)) == "finetune-e1-lr0.05-b128"
    few = finetune_protocol(epochs=1, label_fraction=0.01)
    assert finetune_kind(few) == "finetune-e1-lr0.05-b128-labels0.01-seed0"
    r = lincls_record(untrained_checkpoint, full, device="cpu")
    assert r["label_fraction"] == 1.0 and r["labelled_images"] == 256 - 26
    assert r["labels"] == "all of train less validation"
    path = save_record(r, lincls_kind("small", full))
    old = {k: v for k, v in r.items() if k not in ("label_fraction", "label_seed")}
    old["protocol"] = {k: v for k, v in r["protocol"].items() if not k.startswith("label_")}
    path.write_text(json.dumps(old))  # a record written before the few-label fields
    assert save_record(r, lincls_kind("small", full)) == path  # the same settings: replaced


@pytest.mark.parametrize("bad", [0, -1.0, 1.5, float("nan")])
def test_the_library_refuses_bad_fractions_and_seeds(bad):
    with pytest.raises(ConfigError, match="label_fraction must be a number in"):
        linear_protocol("small", label_fraction=bad)
    with pytest.raises(ConfigError, match="label_fraction must be a number in"):
        finetune_protocol(label_fraction=bad)
    with pytest.raises(ConfigError, match="label_seed must be a whole number >= 0"):
        linear_protocol("small", label_seed=-1)


def test_the_commands_write_few_label_results(untrained_checkpoint, capsys):
    run = untrained_checkpoint.parent
    args = [str(run), "--device", "cpu", "--epochs", "1", "--label-fraction", "0.1"]
    assert main(["lincls", *args, "--protocol", "small", "--label-seed", "2"]) == 0
    line = capsys.readouterr().out
    assert "labelled images (10% of train less validation per class, seed 2)" in line
    assert main(["finetune", *args, "--batch-size", "64"]) == 0
    names = sorted(p.name for p in run.glob("*.json"))
    assert names == [
        "finetune-e1-lr0.05-b64-labels0.1-seed0-epoch3.json",
        "lincls-small-e1-lr30-labels0.1-seed2-epoch3.json",
    ]
    for name in names:
        r = json.loads((run / name).read_text())
        assert r["label_fraction"] == 0.1 and r["labelled_images"] < 64
