"""Features of a frozen encoder over an in-memory image tensor, in eval mode."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from moco import dist


@torch.no_grad()
def extract_features(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    transform: nn.Module,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(N, D) float features of uint8 ``images`` (N, C, H, W), batch by batch, on device.

    ``forward`` is e.g. ``encoder.forward_features`` (pooled backbone) or ``encoder``
    (head output). The caller puts the encoder in eval mode; this only batches.

    Under torch.distributed each rank encodes a contiguous 1/W of the images and the
    shards are gathered back by sample index (padding dropped), so every rank returns
    the same (N, D) tensor in the original order, with no sample counted twice.
    """
    mine = dist.shard_indices(len(images))
    out = []
    for i in range(0, len(mine), batch_size):
        x = transform(images[mine[i : i + batch_size]].to(device, non_blocking=True))
        out.append(forward(x).float())
    return dist.gather_shards(torch.cat(out), len(images))
