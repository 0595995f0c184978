"""Pre-training with evaluation wired in: the engine's loop, handed the kNN monitor.

The engine does not import evaluation (it sits beside it); this layer above both joins
them. :func:`pretrain` and :func:`resume` are what ``moco.pretrain``, the command line
and the sweeps call.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from moco.config.schema import Config
from moco.data.interface import PretrainData
from moco.engine import train as engine
from moco.engine.plan import RunPlan
from moco.engine.train import PretrainResult
from moco.eval.monitor import knn_monitor_health


def run_knn_monitor(
    encoder: nn.Module, data: PretrainData, plan: RunPlan, cfg: Config
) -> tuple[float, dict[str, float]]:
    """The engine's :data:`~moco.engine.train.Monitor`: weighted kNN top-1 on the held-out
    split at the run's size and normalisation, with ``cfg.eval``'s k, t and features, and
    the health of those features (effective rank, dimension std)."""
    e = cfg.eval
    return knn_monitor_health(
        encoder,
        data,
        cfg.augment.size,
        plan.mean,
        plan.std,
        e.knn_k,
        e.knn_t,
        e.knn_features.value,
        torch.device(plan.device),
        cfg.data.workers,
    )


def pretrain(cfg: Config) -> PretrainResult:
    """Pre-train as ``cfg`` says, in a new run directory, with the kNN monitor."""
    return engine.pretrain(cfg, monitor=run_knn_monitor)


def resume(checkpoint: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PretrainResult:
    """Continue a run from its checkpoint (file or run directory), with the kNN monitor."""
    return engine.resume(checkpoint, overrides, monitor=run_knn_monitor)
