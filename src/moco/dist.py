"""The one module that touches torch.distributed; in a single process every helper here is
the identity (or its one-process answer), so library code calls them unconditionally."""

from __future__ import annotations

import torch.distributed as torch_dist
from torch import nn


def is_distributed() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def world_size() -> int:
    return torch_dist.get_world_size() if is_distributed() else 1


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """BN layers synchronised across processes (SyncBatchNorm); unchanged in one process,
    where a BN layer already sees the whole batch."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(module) if is_distributed() else module
