"""`moco` under torchrun on 2 CPU processes (gloo): restarts, faults, evaluation.

Every run here pins the CPU (``run.device=cpu``, ``--device cpu``): under ``auto`` a
machine with a GPU would run them on NCCL, where two processes need two GPUs and
bitwise equalities may differ by cuDNN's non-determinism without a bug."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from moco import cli, load_config, pretrain
from moco.engine import checkpoint as ckpt_io
from moco.engine import train as train_mod
from moco.errors import ConfigError

from ..conftest import TINY_OVERRIDES, free_port, rank_env

pytestmark = pytest.mark.slow


def torchrun(args: list[str], log: Path, restarts: int = 0) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "--max-restarts", str(restarts), "--monitor-interval", "0.2", "-m", "moco", *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def finish(proc: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> None:
    """Wait for a torchrun job to succeed; kill it and its workers whatever happens."""
    try:
        assert proc.wait(timeout=timeout) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, f"exited before {text!r}:\n{log.read_text()}"
        assert time.monotonic() < end, f"no {text!r} after {timeout}s:\n{log.read_text()}"
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_killed_worker_restarts_and_resumes_to_the_uninterrupted_weights(tiny_idx, tmp_path):
    """torchrun --max-restarts: the job restarts from the last checkpoint, and the
    resumed 2-process run ends with exactly the weights of an uninterrupted one."""
    args = ["pretrain", "--data", str(tiny_idx), "--out", str(tmp_path), *TINY_OVERRIDES]
    args += ["optim.epochs=4", "eval.knn_every=2", "run.device=cpu"]
    finish(torchrun([*args, "run.name=full"], tmp_path / "full.log"), tmp_path / "full.log")

    log = tmp_path / "cut.log"
    cut = torchrun([*args, "run.name=cut"], log, restarts=1)
    try:
        wait_for(log, "epoch 1/4:", cut)  # printed after the epoch-1 checkpoint
        os.kill(children(cut.pid)[-1], signal.SIGKILL)
    finally:
        finish(cut, log)
    assert "torchrun restart 1: resuming from" in log.read_text()

    a, b = ckpt_io.load(tmp_path / "full"), ckpt_io.load(tmp_path / "cut")
    assert a["epoch"] == b["epoch"] == 4 and a["step"] == b["step"] == 16
    assert len(a["rng_per_rank"]) == 2 and a["derived"]["world_size"] == 2
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["history"] == b["history"]
    result = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert result["processes"] == 2 and result["knn_top1"] == a["history"]["knn"][4]


@pytest.mark.parametrize("fault", ["kill", "hang"])
def test_when_a_rank_dies_or_hangs_the_other_exits_with_a_clear_message(fault, tiny_idx, tmp_path):
    """No launcher agent to clean up: rank 0 itself must notice, quickly when the peer's
    sockets close, within run.dist_timeout when the peer hangs."""
    args = ["-m", "moco", "pretrain", "--data", str(tiny_idx), "--out", str(tmp_path)]
    args += TINY_OVERRIDES
    args += ["optim.epochs=50", "eval.knn_every=0", "run.name=r", "run.dist_timeout=5"]
    args += ["run.device=cpu"]
    port = free_port()
    logs = [tmp_path / f"rank{r}.log" for r in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, *args],
            env={**rank_env(r, 2, port), "PYTHONUNBUFFERED": "1"},
            stdout=logs[r].open("w"),
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    try:
        wait_for(logs[0], "epoch 1/50:", procs[0])
        os.kill(procs[1].pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
        t0 = time.monotonic()
        rc = procs[0].wait(timeout=60)
        waited = time.monotonic() - t0
    finally:
        for p in procs:
            p.kill()
    out = logs[0].read_text()
    assert rc == 1, out
    assert "moco pretrain [rank 0/2]: error: a collective with the other processes failed" in out
    assert "--resume" in out
    assert waited < (20 if fault == "kill" else 40), waited  # dist_timeout is 5 s
    assert ckpt_io.load(tmp_path / "r")["epoch"] >= 1  # the last checkpoint is intact


def test_knn_and_linear_under_torchrun_equal_one_process(tiny_config, tmp_path):
    cfg = tiny_config("eval.knn_every=0", "run.name=r", "run.device=cpu")
    ckpt = str(pretrain(cfg).checkpoint)
    lincls = ["lincls", ckpt, "--protocol", "small", "--epochs", "4", "--device", "cpu"]
    for cmd in (["knn", ckpt, "--k", "20", "--device", "cpu"], lincls):
        # one result file per command: a file holding another command's result is refused
        one_out, two_out = (tmp_path / f"{cmd[0]}-{n}.json" for n in ("one", "two"))
        assert cli.main([*cmd, "--out", str(one_out)]) == 0
        log = tmp_path / "two.log"
        finish(torchrun([*cmd, "--out", str(two_out)], log), log)
        one, two_r = (json.loads(f.read_text()) for f in (one_out, two_out))
        key = "top1" if cmd[0] == "knn" else "test_top1"
        assert two_r[key] == pytest.approx(one[key], abs=1e-9), cmd[0]


def test_bn_groups_and_batch_must_spread_evenly_over_processes(tiny_idx, monkeypatch):
    from moco.data.interface import open_data
    from moco.engine.plan import plan_run

    monkeypatch.setattr(train_mod.dist, "world_size", lambda: 4)
    data = open_data(str(tiny_idx), 0.1, 0, None, False)
    cpu = torch.device("cpu")
    cfg = load_config("default", ["model.bn_splits=2"])
    with pytest.raises(ConfigError, match="multiple of 4"):
        plan_run(cfg, data, cpu)
    cfg = load_config("default", ["optim.batch_size=66", "model.bn_splits=2"])
    with pytest.raises(ConfigError, match="not divisible by 4 processes"):
        plan_run(cfg, data, cpu)
    d = plan_run(load_config("default"), data, cpu)  # batch 64, 8 groups
    assert (d.world_size, d.batch_per_process, d.bn_splits_per_process) == (4, 16, 2)
    assert d.lr == pytest.approx(0.06 * 64 / 256)  # scaled by the global batch, once
    cfg = load_config("default", ["model.sync_bn=true", "model.bn_splits=1"])
    with pytest.raises(ConfigError, match="CUDA only"):
        plan_run(cfg, data, cpu)
