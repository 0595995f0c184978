"""Learning-rate schedules as pure functions of the global step."""

from __future__ import annotations

import math
from collections.abc import Sequence

from moco.errors import ConfigError


def lr_at(
    step: int,
    base_lr: float,
    total_steps: int,
    steps_per_epoch: int,
    schedule: str,
    milestones: Sequence[int] = (),
    warmup_steps: int = 0,
) -> float:
    """lr of global step ``step`` (0-based).

    ``"step"``: base_lr x 0.1 for each milestone epoch passed (MoCo v1: 120, 160 of 200).
    ``"cosine"``: base_lr x 0.5 (1 + cos(pi x progress)) with progress measured in
    steps (MoCo v2; the official code steps it per epoch, a per-step curve is smoother).
    A linear warm-up from 0 over ``warmup_steps`` multiplies either.
    """
    if schedule == "step":
        epoch = step // steps_per_epoch
        lr = base_lr * 0.1 ** sum(epoch >= m for m in milestones)
    elif schedule == "cosine":
        lr = base_lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    else:
        raise ConfigError(f"unknown schedule {schedule!r}; choose step or cosine")
    if warmup_steps > 0 and step < warmup_steps:
        lr *= (step + 1) / warmup_steps
    return lr


def momentum_at(step: int, base_m: float, total_steps: int, schedule: str) -> float:
    """Key-encoder momentum of global step ``step``.

    ``"constant"``: ``base_m`` throughout (MoCo v1/v2). ``"cosine"``: from ``base_m`` at
    step 0 to 1 at the end, m = 1 - (1 - base_m) (cos(pi t / T) + 1) / 2 (MoCo v3
    Sec. 4, following BYOL: 0.99 -> 1).
    """
    if schedule == "constant":
        return base_m
    if schedule == "cosine":
        t = min(step, total_steps) / max(total_steps, 1)
        return 1.0 - (1.0 - base_m) * (math.cos(math.pi * t) + 1.0) / 2.0
    raise ConfigError(f"unknown momentum schedule {schedule!r}; choose constant or cosine")
