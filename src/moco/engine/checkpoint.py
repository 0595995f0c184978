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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moco.errors import CheckpointError

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
