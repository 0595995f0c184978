"""`moco ablate`: real sweeps on the bundled data, resumption, divergence, default values.

Two sweeps train for real (a tiny config, about a second per run); everything else
replaces pretrain / resume with fakes that write what a run directory holds.
"""

import json
from pathlib import Path

import pytest

from moco.cli import main
from moco.config.schema import load_config, to_yaml
from moco.engine.metrics import read_metrics
from moco.errors import NonFiniteLossError
from moco.experiments import ablate
from moco.runs import train as train_mod

from ..conftest import TINY_OVERRIDES


def _rows(sweep_dir):
    return {r["value"]: r for r in json.loads((sweep_dir / "table.json").read_text())["rows"]}


def _fake_pretrain(calls, knn=0.5):
    """A pretrain that writes config.yaml, metrics.jsonl and result.json, and records the
    configs it got."""

    def fake(cfg):
        calls.append(cfg)
        run_dir = Path(cfg.run.out_dir) / cfg.run.name
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
        e = cfg.optim.epochs
        records = [
            {"kind": "knn", "step": 0, "epoch": 0, "top1": 0.25},
            {"kind": "train", "step": 3, "epoch": e, "loss": 9.0, "pretext_acc": 0.1},
            {"kind": "train", "step": 4, "epoch": e, "loss": 4.5, "pretext_acc": 0.75},
            {"kind": "knn", "step": 4, "epoch": e, "top1": knn},
        ]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        result = {"epochs": e, "knn_top1": knn, "knn_top1_random_init": 0.25}
        (run_dir / "result.json").write_text(json.dumps(result))
        return train_mod.PretrainResult(run_dir, run_dir / "checkpoint.pth.tar", e, knn, 0.25)

    return fake


def _no_training(*args, **kwargs):
    raise AssertionError("a finished sweep must not train again")


def test_momentum_sweep_trains_each_value_and_tables_what_the_runs_wrote(
    tiny_idx, tmp_path, monkeypatch
):
    overrides = [*TINY_OVERRIDES, f"data.source={tiny_idx}"]
    r = ablate.run_sweep("momentum", None, overrides, ["0.9", "0.99"], tmp_path, None, 1)
    assert r.sweep_dir == tmp_path / "ablate-momentum-default" and r.ran == ["0.9", "0.99"]
    assert r.table_json.is_file() and r.table_md.is_file() and r.figure.stat().st_size > 5000
    rows, md = _rows(r.sweep_dir), r.table_md.read_text()
    for value in ("0.9", "0.99"):
        run_dir = r.sweep_dir / f"momentum={value}"
        result = json.loads((run_dir / "result.json").read_text())
        last = [x for x in read_metrics(run_dir) if x["kind"] == "train"][-1]
        row = rows[value]
        assert row["run_dir"] == str(run_dir) and row["status"] == "ok"
        assert row["knn_top1"] == result["knn_top1"] is not None
        assert row["knn_top1_init"] == result["knn_top1_random_init"] is not None
        assert row["pretext_acc"] == last["pretext_acc"] and row["loss"] == last["loss"]
        assert last["epoch"] == row["epochs"] == 1
        assert row["momentum"] == float(value) and row["method"] == "moco"
        assert row["k"] == 128 and row["k_source"] == "queue" and row["wall_s"] > 0
        line = next(x for x in md.splitlines() if x.startswith(f"| `{value}` |"))
        assert f"| {result['knn_top1']:.4f} | {result['knn_top1_random_init']:.4f} |" in line
        assert f"| {value} | true | 1 |" in line and line.endswith("| ok |")

    # the same command again reads every run back and trains nothing
    stamps = {p: p.stat().st_mtime_ns for p in r.sweep_dir.glob("*/result.json")}
    monkeypatch.setattr(train_mod, "pretrain", _no_training)
    monkeypatch.setattr(train_mod, "resume", _no_training)
    again = ablate.run_sweep("momentum", None, overrides, ["0.9", "0.99"], tmp_path, None, 1)
    assert again.ran == [] and again.rows == r.rows
    assert stamps == {p: p.stat().st_mtime_ns for p in r.sweep_dir.glob("*/result.json")}

    # a different experiment under the same name is refused, not mixed into the table
    with pytest.raises(ValueError, match=r"another config \(optim.epochs: 1 -> 2\)"):
        ablate.run_sweep("momentum", None, overrides, ["0.9"], tmp_path, None, 2)


def test_shuffle_bn_sweep_from_the_command_line(tiny_idx, tmp_path, capsys):
    # overrides right after --values: the CLI tells them apart by their "="
    argv = ["ablate", "shuffle-bn", "--epochs", "1", "--out-dir", str(tmp_path), "--name",
            "sbn", "--values", "false", "true", *TINY_OVERRIDES,
            f"data.source={tiny_idx}"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    sweep = tmp_path / "sbn"
    rows = _rows(sweep)
    assert list(rows) == ["false", "true"]
    for value, row in rows.items():
        run_dir = sweep / f"shuffle_keys={value}"
        assert f"shuffle_keys: {value}" in (run_dir / "config.yaml").read_text()
        assert row["shuffle_keys"] is (value == "true")
        assert row["knn_top1"] == json.loads((run_dir / "result.json").read_text())["knn_top1"]
        assert 0.0 <= row["pretext_acc"] <= 1.0
        last = [x for x in read_metrics(run_dir) if x["kind"] == "train"][-1]
        assert row["pretext_acc"] == last["pretext_acc"] and row["loss"] == last["loss"]
    assert "| value | method | K | m | shuffle_keys | epochs | kNN top-1 (final)" in out
    assert "2 run(s) trained, 0 read back" in out and str(sweep / "table.md") in out
    assert (sweep / "ablate.png").is_file()


def test_a_diverged_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    calls = []
    fake = _fake_pretrain(calls)

    def blow_up_at_m0(cfg):
        if cfg.model.momentum == 0.0:
            calls.append(cfg)
            (tmp_path / "s" / cfg.run.name).mkdir(parents=True)
            raise NonFiniteLossError(
                "loss is nan at step 7 (epoch 2); stopped without saving. The last good ..."
            )
        return fake(cfg)

    monkeypatch.setattr(train_mod, "pretrain", blow_up_at_m0)
    r = ablate.run_sweep("momentum", None, [], ["0", "0.99"], tmp_path, "s", 2)
    assert len(calls) == 2 and r.ran == ["0", "0.99"]
    bad, good = r.rows
    assert bad.status == "diverged at step 7" and bad.knn_top1 is None and bad.loss is None
    assert good.status == "ok" and good.knn_top1 == 0.5 and good.pretext_acc == 0.75
    md = r.table_md.read_text()
    assert "| diverged at step 7 |" in md and "loss is nan at step 7" in md
    assert json.loads((tmp_path / "s" / "momentum=0" / "ablate.json").read_text())["status"] == (
        "diverged at step 7"
    )
    # a recorded divergence is read back, not trained again
    monkeypatch.setattr(train_mod, "pretrain", _no_training)
    assert ablate.run_sweep("momentum", None, [], ["0", "0.99"], tmp_path, "s", 2).ran == []


def test_other_errors_propagate(tmp_path, monkeypatch):
    def broken(cfg):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(train_mod, "pretrain", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        ablate.run_sweep("momentum", None, [], ["0.9"], tmp_path, "s", 1)


def test_a_half_finished_run_is_resumed_from_its_checkpoint(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(train_mod, "pretrain", _fake_pretrain(calls))
    ablate.run_sweep("momentum", None, [], ["0.9", "0.99"], tmp_path, "s", 1)
    cut = tmp_path / "s" / "momentum=0.99"  # as a killed run leaves it: no result.json
    (cut / "result.json").unlink()
    (cut / "checkpoint.pth.tar").write_bytes(b"stand-in")
    resumed = []

    def fake_resume(ckpt, overrides=()):
        resumed.append(ckpt)
        (cut / "result.json").write_text(json.dumps({"epochs": 1, "knn_top1": 0.625}))

    monkeypatch.setattr(train_mod, "pretrain", _no_training)
    monkeypatch.setattr(train_mod, "resume", fake_resume)
    r = ablate.run_sweep("momentum", None, [], ["0.9", "0.99"], tmp_path, "s", 1)
    assert resumed == [cut / "checkpoint.pth.tar"] and r.ran == ["0.99"]
    assert r.rows[1].knn_top1 == 0.625 and "resumed" in r.rows[1].note
    assert (cut / "checkpoint.pth.tar").is_file()  # nothing deleted


def test_mechanism_sweep_matches_k_to_the_batch(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(train_mod, "pretrain", _fake_pretrain(calls))
    r = ablate.run_sweep("mechanism", None, ["optim.batch_size=32"], None, tmp_path, "m", 1)
    assert [c.model.method.value for c in calls] == ["end_to_end", "memory_bank", "moco"]
    assert [c.model.queue_size for c in calls[1:]] == [32, 32]
    assert [(row.k, row.k_source) for row in r.rows] == [(32, "batch"), (32, "bank"),
                                                         (32, "queue")]  # fmt: skip
    assert [row.momentum for row in r.rows] == [None, None, 0.99]  # m: key encoders only
    assert [row.shuffle_keys for row in r.rows] == [True, None, True]  # bank: no key batch

    calls.clear()  # the user's K: for memory bank and MoCo; end-to-end's is its batch
    over = ["optim.batch_size=32", "model.queue_size=512"]
    r = ablate.run_sweep("mechanism", None, over, None, tmp_path, "m512", 1)
    assert [c.model.queue_size for c in calls[1:]] == [512, 512]
    assert [row.k for row in r.rows] == [32, 512, 512]
    assert "| 32 (batch) |" in r.table_md.read_text()


def test_queue_default_values_go_from_the_batch_up_to_the_presets_k(tmp_path, monkeypatch):
    assert ablate.queue_values(load_config("default")) == [64, 256, 1024]
    base = load_config("default")
    assert ablate.default_values("shuffle-bn", base) == ["true", "false"]
    assert ablate.default_values("momentum", base) == ["0", "0.9", "0.99", "0.999", "0.9999"]
    assert ablate.queue_values(load_config("default", ["model.queue_size=3000"])) == [
        64, 256, 1024, 3000
    ]  # fmt: skip
    assert ablate.queue_values(load_config("default", ["model.queue_size=64"])) == [64]
    sym = load_config("default", ["model.symmetric=true"])  # both views' keys enqueued
    assert ablate.queue_values(sym) == [128, 512, 1024]
    calls = []
    monkeypatch.setattr(train_mod, "pretrain", _fake_pretrain(calls))
    r = ablate.run_sweep("queue", None, [], None, tmp_path, None, 1)
    assert [c.model.queue_size for c in calls] == [64, 256, 1024]
    assert [row.value for row in r.rows] == ["64", "256", "1024"]
    assert r.sweep_dir.name == "ablate-queue-default"


def test_preset_axis_runs_each_preset_with_the_same_overrides(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(train_mod, "pretrain", _fake_pretrain(calls))
    values = ["default", "moco_cifar_demo"]
    r = ablate.run_sweep("preset", None, ["optim.batch_size=32"], values, tmp_path, None, 3)
    assert [(c.preset, c.optim.epochs, c.optim.batch_size) for c in calls] == [
        ("default", 3, 32), ("moco_cifar_demo", 3, 32)
    ]  # fmt: skip
    assert r.sweep_dir.name == "ablate-preset-presets"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("speed", None, [], None), "unknown ablation axis 'speed'; allowed: momentum, queue"),
        (("preset", "default", [], ["default"]), "takes its presets as values"),
        (("momentum", None, [], ["0.9", "0.9"]), "repeat"),
        (("momentum", None, ["model.momentum=2"], None), "model.momentum must be in"),
        (("preset", None, [], ["nope"]), "unknown preset 'nope'"),
    ],
)
def test_bad_sweeps_fail_before_anything_trains(args, message, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "pretrain", _no_training)
    with pytest.raises(ValueError, match=message):
        ablate.run_sweep(*args, tmp_path, "bad", None)
    assert not (tmp_path / "bad").exists()


def test_cli_reports_a_bad_axis_without_a_traceback(capsys):
    with pytest.raises(SystemExit):
        main(["ablate", "speed"])
    assert "invalid choice: 'speed'" in capsys.readouterr().err
