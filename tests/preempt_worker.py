"""One rank of the pre-emption tests (tests/engine/test_preemption.py), launched by
``launch_ranks``: ``python preempt_worker.py SCENARIO OUT_DIR`` pre-trains on the tiny
IDX data in ``OUT_DIR/data`` into ``OUT_DIR/runs/<name>``.

Scenarios: ``full`` (uninterrupted), ``cut0`` (every rank dies right after the epoch-0
checkpoint), ``sigterm`` (every rank gets SIGTERM during step 5, as a scheduler's
pre-emption does), ``resume_cut0`` / ``resume_sigterm`` (continue those runs).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

from moco import dist
from moco.config.schema import load_config
from moco.engine import checkpoint as ckpt_io
from moco.engine import train as train_mod
from moco.errors import RunInterrupted
from moco.runs.train import pretrain, resume

OVERRIDES = [
    "model.width=0.125", "model.queue_size=128", "model.bn_splits=2", "optim.batch_size=64",
    "optim.epochs=2", "eval.knn_every=0", "run.progress=false", "run.log_every=2",
    "run.device=cpu",
]  # fmt: skip


class Killed(Exception):
    """Stands for SIGKILL right after a checkpoint (the process is gone, nothing else runs)."""


def config(out: Path, name: str):  # type: ignore[no-untyped-def]
    return load_config(
        "default",
        [
            *OVERRIDES,
            f"data.source={out / 'data'}",
            f"run.out_dir={out / 'runs'}",
            f"run.name={name}",
        ],
    )


def full(out: Path) -> None:
    pretrain(config(out, "full"))


def cut0(out: Path) -> None:
    real = ckpt_io.Checkpointer.save

    def save_then_die(self, state):  # type: ignore[no-untyped-def]
        real(self, state)
        raise Killed

    ckpt_io.Checkpointer.save = save_then_die  # type: ignore[method-assign]
    try:
        pretrain(config(out, "cut0"))
    except Killed:
        (out / f"cut0-rank{dist.rank()}.txt").write_text("killed after epoch 0")


def sigterm(out: Path) -> None:
    real = train_mod.train_step
    calls = [0]

    def step_then_signal(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    train_mod.train_step = step_then_signal
    try:
        pretrain(config(out, "sigterm"))
    except RunInterrupted as err:
        (out / f"sigterm-rank{dist.rank()}.txt").write_text(f"{err.exit_code} {err}")


def resume_cut0(out: Path) -> None:
    resume(out / "runs" / "cut0")


def resume_sigterm(out: Path) -> None:
    resume(out / "runs" / "sigterm")


if __name__ == "__main__":
    torch.set_num_threads(1)
    dist.init_from_env(torch.device("cpu"), timeout_s=60)
    try:
        globals()[sys.argv[1]](Path(sys.argv[2]))
    finally:
        dist.shutdown()
