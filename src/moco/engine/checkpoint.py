"""Checkpoints: the official MoCo layout plus everything an exact resume needs.

``state_dict`` holds the model's keys prefixed with ``module.`` (``module.encoder_q.*``,
``module.encoder_k.*``, ``module.queue``, ``module.queue_ptr``), as the official
``main_moco.py`` writes them, so the official ``main_lincls.py`` reads our files and
we read theirs. Next to it: optimiser, AMP scaler, global step, RNG states, the
resolved config, the derived values and the package version. Files are written to a
temporary name and renamed, so a crash mid-write never leaves a broken checkpoint.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from moco import dist
from moco.errors import CheckpointError
from moco.version import __version__

PREFIX = "module."


def to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {PREFIX + k: v for k, v in state.items()}


def from_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(PREFIX): v for k, v in state.items()}


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """torch.save to ``path`` via a temporary file in the same directory and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file (or ``checkpoint.pth.tar`` inside a run directory) on CPU."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pth.tar"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {err}") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{str(path)!r} is not a MoCo checkpoint (no 'state_dict')")
    ckpt["path"] = str(path)
    return ckpt


@dataclass
class LoopState:
    """Where the loop is: what a checkpoint records besides the weights."""

    epoch: int = 0  # epochs done
    step: int = 0  # optimiser steps done
    history: dict[str, Any] = field(default_factory=lambda: {"knn": {}})  # knn: epoch -> top1


class Checkpointer:
    """Saves and restores one run's ``checkpoint.pth.tar``: the model (official key
    schema), optimiser, scaler, loop state, every rank's RNG, config and plan.

    Every rank calls :meth:`save` (BN statistics are averaged and RNG states gathered
    over ranks); rank 0 alone writes, atomically.
    """

    def __init__(
        self,
        path: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        meta: dict[str, Any],
    ) -> None:
        self.path = path
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.meta = meta  # arch, config (YAML), derived (the plan): written as they are

    def save(self, state: LoopState) -> None:
        dist.average_bn_stats_(self.model)  # the running stats of the one-process run
        rngs = dist.all_gather_object(rng_state())
        if not dist.is_main():
            return
        save_atomic(
            {
                "epoch": state.epoch,
                "arch": self.meta["arch"],
                "state_dict": to_official(self.model.state_dict()),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "step": state.step,
                "rng": rngs[0],
                "rng_per_rank": rngs,
                "config": self.meta["config"],
                "derived": self.meta["derived"],
                "history": state.history,
                "version": __version__,
            },
            self.path,
        )

    def restore(self, ckpt: dict[str, Any]) -> LoopState:
        """Weights, optimiser and scaler from ``ckpt`` (as :func:`load` returns it)."""
        self.model.load_state_dict(from_official(ckpt["state_dict"]))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        return LoopState(ckpt["epoch"], ckpt["step"], ckpt["history"])


def restore_rng(ckpt: dict[str, Any], world: int) -> str | None:
    """Each rank's RNG as saved, so a resume is bitwise the uninterrupted run. With a
    different number of processes that is impossible: ranks are re-seeded instead, and
    the note to print is returned."""
    per_rank = ckpt.get("rng_per_rank") or [ckpt["rng"]]
    if len(per_rank) == world:
        set_rng_state(per_rank[dist.rank()])
        return None
    torch.manual_seed(int(ckpt["step"]) * 1000 + dist.rank())
    return (
        f"note: the checkpoint was written by {len(per_rank)} processes and this run has "
        f"{world}; training continues equivalently but not bitwise (augmentation RNG "
        "re-seeded per rank)"
    )
