"""Stopping on a scheduler's SIGTERM or a Ctrl-C: the loop is asked to stop, saves the step
it reached and raises :class:`~moco.errors.RunInterrupted` with the resume command."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from moco import dist
from moco.engine.checkpoint import LoopState
from moco.engine.plan import RunPlan
from moco.errors import RunInterrupted


class StopOnSignals:
    """While active, SIGTERM (how SLURM and Kubernetes pre-empt) and SIGINT (Ctrl-C) ask
    the loop to stop: it saves a checkpoint of the step it reached and raises
    :class:`~moco.errors.RunInterrupted`. A second Ctrl-C interrupts at once.

    Ranks must stop at the same step (the checkpoint gathers from all of them), so the
    request is shared at the loop's log points, inside the all-reduce they already make
    (one process checks it every step); :meth:`agreed` asks all ranks at an epoch's end.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():  # where signals land
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._request)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _request(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now, the last checkpoint is intact
        self.signum = signum
        if dist.is_main():
            tqdm.write(f"{signal.Signals(signum).name}: saving a checkpoint, then stopping")

    def flag(self, device: torch.device) -> torch.Tensor:
        return torch.tensor([0.0 if self.signum is None else 1.0], device=device)

    def agreed(self, device: torch.device) -> bool:
        """Whether any rank was asked to stop (a collective: every rank calls it)."""
        if dist.world_size() == 1:
            return self.signum is not None
        return self.shared(float(dist.all_reduce_sum_(self.flag(device))[0]) > 0)

    def shared(self, asked: bool) -> bool:
        """``asked``: whether any rank's flag was set (summed over ranks); a peer's request
        becomes this rank's too."""
        if asked and self.signum is None:
            self.signum = int(signal.SIGTERM)
        return asked


def interrupted(
    stop: StopOnSignals, state: LoopState, plan: RunPlan, ckpt_path: Path
) -> RunInterrupted:
    """The one-line message of a run stopped by a signal, after its checkpoint."""
    signum = stop.signum if stop.signum is not None else int(signal.SIGTERM)
    batch = state.step - state.epoch * plan.steps_per_epoch
    where = (
        f"epoch {state.epoch + 1}, batch {batch}/{plan.steps_per_epoch}"
        if batch
        else f"after epoch {state.epoch}"
    )
    launcher = (
        f"torchrun --nproc_per_node {plan.world_size} -m moco" if plan.world_size > 1 else "moco"
    )
    return RunInterrupted(
        f"stopped by {signal.Signals(signum).name} at step {state.step} ({where}); "
        f"checkpoint saved: {ckpt_path}. Resume with: "
        f"{launcher} pretrain --resume {ckpt_path.parent}",
        signum,
    )
