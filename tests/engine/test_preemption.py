"""Runs survive what clusters do to them: SIGTERM mid-epoch, a kill before the first
checkpoint, two runs started in the same second, a full disk, a resume's history."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from moco.cli import main
from moco.engine import checkpoint as ckpt_io
from moco.engine import run_dir as run_dir_mod
from moco.engine import train as train_mod
from moco.engine.metrics import read_metrics
from moco.errors import CheckpointError
from moco.runs.train import pretrain, resume

from ..conftest import TINY_OVERRIDES, launch_ranks, make_idx_dir


def assert_same_run(a_dir: Path, b_dir: Path) -> None:
    """Every tensor of the two final checkpoints is equal, and so is the history."""
    a, b = ckpt_io.load(a_dir), ckpt_io.load(b_dir)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for i, s in a["optimizer"]["state"].items():
        for name, t in s.items():
            assert torch.equal(t, b["optimizer"]["state"][i][name]), (i, name)
    assert a["history"]["knn"] == b["history"]["knn"]


def train_records(run_dir: Path) -> list[tuple[int, float, float]]:
    return [(r["step"], r["loss"], r["pretext_acc"]) for r in read_metrics(run_dir)
            if r["kind"] == "train"]  # fmt: skip


def test_sigterm_mid_epoch_saves_the_step_and_the_resume_is_bitwise_the_full_run(
    tiny_idx, tmp_path, monkeypatch, capsys
):
    args = ["pretrain", "--data", str(tiny_idx), "--out", str(tmp_path), *TINY_OVERRIDES]
    args += ["optim.epochs=2", "eval.knn_every=1", "run.device=cpu"]  # bitwise: CPU
    assert main([*args, "run.name=full"]) == 0

    real, calls = train_mod.train_step, [0]

    def step_then_sigterm(*a, **k):  # the scheduler pre-empts during step 6 (epoch 2)
        out = real(*a, **k)
        calls[0] += 1
        if calls[0] == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(train_mod, "train_step", step_then_sigterm)
    capsys.readouterr()
    assert main([*args, "run.name=cut"]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    cut = tmp_path / "cut"
    assert "stopped by SIGTERM at step 6 (epoch 2, batch 2/4)" in err
    assert f"Resume with: moco pretrain --resume {cut}" in err
    ck = ckpt_io.load(cut)
    assert (ck["epoch"], ck["step"]) == (1, 6)  # the step reached, not the last epoch's end
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    monkeypatch.setattr(train_mod, "train_step", real)

    assert main(["pretrain", "--resume", str(cut)]) == 0
    assert_same_run(tmp_path / "full", cut)
    # the history holds each step once, with the uninterrupted run's values
    assert train_records(cut) == train_records(tmp_path / "full")
    steps = [(r["kind"], r["step"]) for r in read_metrics(cut)]
    assert len(steps) == len(set(steps))


@pytest.mark.slow
def test_two_processes_resume_bitwise_after_epoch0_and_after_sigterm(tmp_path):
    make_idx_dir(tmp_path / "data", 256, 64)
    for scenario in ("full", "cut0", "resume_cut0", "sigterm", "resume_sigterm"):
        launch_ranks(scenario, tmp_path, worker="preempt_worker.py", timeout=240)
    runs = tmp_path / "runs"
    assert (tmp_path / "cut0-rank1.txt").is_file()
    killed, message = (tmp_path / "sigterm-rank0.txt").read_text().split(" ", 1)
    assert int(killed) == 128 + signal.SIGTERM
    # SIGTERM during step 5: both ranks agree at the step-6 log point and save it
    assert "at step 6 (epoch 2, batch 2/4)" in message
    assert f"torchrun --nproc_per_node 2 -m moco pretrain --resume {runs / 'sigterm'}" in message
    assert_same_run(runs / "full", runs / "cut0")
    assert_same_run(runs / "full", runs / "sigterm")
    assert train_records(runs / "sigterm") == train_records(runs / "full")


def test_a_run_killed_before_its_first_checkpoint_restarts_in_place(tiny_config, tmp_path):
    cfg = tiny_config("optim.epochs=1", "run.name=early")
    run_dir = tmp_path / "early"
    run_dir.mkdir()  # what a run killed during the epoch-0 kNN leaves behind
    (run_dir / "config.yaml").write_text("# partial\n")
    (run_dir / "derived.json").write_text("{}")
    (run_dir / "metrics.jsonl").write_text('{"kind": "knn", "step": 0, "top1": 0.5}\n')
    (run_dir / f"{ckpt_io.TMP_PREFIX}checkpoint.pth.tar.123").write_bytes(b"half")
    again = pretrain(cfg)  # the same command again: started again in place
    assert again.run_dir == run_dir and (run_dir / "checkpoint.pth.tar").is_file()
    assert not list(run_dir.glob(f"{ckpt_io.TMP_PREFIX}*"))  # stale temporaries gone
    knn = [r for r in read_metrics(run_dir) if r["kind"] == "knn"]
    assert [r["epoch"] for r in knn] == [0, 1]  # the dead attempt's record is gone

    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text(Path(run_dir / "config.yaml").read_text())
    resumed = resume(other)  # --resume on such a directory starts it with its config
    assert resumed.run_dir == other and ckpt_io.load(other)["epoch"] == 1


def test_a_named_directory_holding_anything_else_is_refused(tiny_config, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        pretrain(tiny_config("run.name=mine"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_runs_started_in_the_same_second_get_their_own_directories(tiny_config, monkeypatch):
    monkeypatch.setattr(train_mod.time, "strftime", lambda fmt: "20260101-120000")
    cfg = tiny_config()
    cfg.run.name = ""  # no name: the preset and the time
    dirs = [run_dir_mod.new_run_dir(cfg) for _ in range(3)]
    assert [d.name for d in dirs] == [
        "default-20260101-120000", "default-20260101-120000-2", "default-20260101-120000-3"
    ]  # fmt: skip
    assert all((d / "config.yaml").is_file() for d in dirs)  # each claimed


def test_a_full_disk_says_so_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth.tar"
    ckpt_io.save_atomic({"state_dict": {"w": torch.ones(2)}, "epoch": 1}, path)

    def full_disk(obj, f):  # torch's zip writer on ENOSPC: no errno, this text
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(ckpt_io.torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"no space left on .* while writing .*intact"):
        ckpt_io.save_atomic({"state_dict": {"w": torch.zeros(2)}, "epoch": 2}, path)
    monkeypatch.undo()
    assert ckpt_io.load(path)["epoch"] == 1  # the previous checkpoint, whole
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth.tar"]  # no temporary


def test_a_hand_edited_config_is_kept_aside_on_resume(tiny_config, tmp_path, capsys):
    first = pretrain(tiny_config("run.name=edited"))
    edited = (first.run_dir / "config.yaml").read_text().replace("queue_size: 128", "queue_size: 9")
    (first.run_dir / "config.yaml").write_text(edited)
    resume(first.run_dir, ["optim.epochs=2"])
    kept = list(first.run_dir.glob("config.yaml.edited-*"))
    assert len(kept) == 1 and kept[0].read_text() == edited
    assert "queue_size: 128" in (first.run_dir / "config.yaml").read_text()
    assert "differs from the config its checkpoint trained with" in capsys.readouterr().out


def test_resume_of_a_file_that_is_no_run_points_to_init(tmp_path):
    official = tmp_path / "official.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet50", "state_dict": {}}, official)
    with pytest.raises(CheckpointError, match="moco pretrain --init"):
        resume(official)


def test_sigterm_to_a_streamed_run_and_its_workers_saves_and_resumes_bitwise(tmp_path, monkeypatch):
    """SLURM signals every process of the job: the DataLoader workers leave the signal to
    the training process, which saves the step reached; the resume is the full run."""
    from ..data.image_files import rgb

    for c in ("a", "b"):
        for i in range(24):
            rgb(tmp_path / "photos" / c / f"{i}.png", seed=100 * ord(c) + i, size=(40, 30))
    args = ["pretrain", "--data", f"folder:{tmp_path / 'photos'}", "--out", str(tmp_path)]
    args += [*TINY_OVERRIDES, "optim.batch_size=8", "model.queue_size=32", "augment.size=32"]
    args += ["data.stream=true", "data.workers=2", "optim.epochs=2", "eval.knn_every=0"]
    args += ["run.device=cpu"]  # bitwise: CPU
    assert main([*args, "run.name=full"]) == 0

    real, calls = train_mod.train_step, [0]

    def step_then_sigterm_everyone(*a, **k):
        out = real(*a, **k)
        calls[0] += 1
        if calls[0] == 6:
            workers = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text()
            for pid in [*map(int, workers.split()), os.getpid()]:
                os.kill(pid, signal.SIGTERM)
        return out

    monkeypatch.setattr(train_mod, "train_step", step_then_sigterm_everyone)
    assert main([*args, "run.name=cut"]) == 128 + signal.SIGTERM
    assert ckpt_io.load(tmp_path / "cut")["step"] == 6  # mid-epoch 2 (5 steps an epoch)
    monkeypatch.setattr(train_mod, "train_step", real)
    assert main(["pretrain", "--resume", str(tmp_path / "cut")]) == 0
    assert_same_run(tmp_path / "full", tmp_path / "cut")
