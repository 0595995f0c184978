"""Shuffling BN on one device (MoCo Sec. 3.3): split-BN groups and a key-batch shuffle.

With plain BN, q and its positive k+ are normalised with statistics of the same batch,
which leaks the positive's identity and lets the model "cheat" the pretext task. MoCo
encodes keys on a batch shuffled across GPUs. On one device the same effect comes from
normalising G groups of the batch separately (:class:`~moco.layers.split_bn.SplitBatchNorm2d`)
and shuffling the key batch before the key encoder, so a key's BN group differs from its
query's group.
"""

from __future__ import annotations

import torch

from moco import dist
from moco.layers.split_bn import SplitBatchNorm1d, SplitBatchNorm2d

__all__ = ["SplitBatchNorm1d", "SplitBatchNorm2d", "batch_shuffle", "batch_unshuffle"]


def batch_shuffle(
    x: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle the key batch, across processes when distributed (MoCo Sec. 3.3).

    x: this process's (n, ...) slice of the global batch (W processes, W * n images in
    rank order). The global batch is gathered, permuted with one permutation shared by
    every rank (drawn on rank 0, from ``generator`` when given, and broadcast), and each
    rank gets its n-row slice of the permuted batch. Returns (slice, inverse), where
    ``inverse`` (W * n,) is the inverse global permutation for :func:`batch_unshuffle`.
    In one process this is x[perm]: with ``SplitBatchNorm2d`` groups, rank r's slice is
    exactly BN group r of the one-process run, which makes the two equivalent.
    """
    x_all = dist.all_gather_nograd(x)
    perm = torch.randperm(x_all.shape[0], device=x.device, generator=generator)
    dist.broadcast_(perm)
    mine = perm.view(dist.world_size(), -1)[dist.rank()]
    return x_all[mine], torch.argsort(perm)


def batch_unshuffle(y: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Undo :func:`batch_shuffle`: this rank's rows of ``y`` (n, ...) back in the order
    of its own input slice (gathering every rank's rows when distributed)."""
    y_all = dist.all_gather_nograd(y)
    return y_all[inverse.view(dist.world_size(), -1)[dist.rank()]]
