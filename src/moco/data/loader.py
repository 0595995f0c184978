"""Batches of an in-memory uint8 image tensor, reshuffled each epoch from a seed."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from moco import dist


class InMemoryLoader:
    """Yields (images uint8 (b, C, H, W), labels (b,), indices (b,)) on ``device``.

    The order of epoch e is ``randperm`` from a generator seeded with (seed, e), so an
    epoch's batches do not depend on what ran before it: a resumed run sees the same
    batches. ``drop_last`` keeps every step the same size (MoCo's queue and split BN
    want fixed batches); the at most ``batch_size - 1`` images left out change each epoch.

    Distributed sampling: ``batch_size`` is the global batch B. Every rank draws the same
    epoch order, cuts it into global batches, and takes the ``rank``-th of
    ``num_replicas`` equal contiguous slices of each (b = B / num_replicas images). So
    each image is seen at most once per epoch across all ranks, the ``drop_last`` rule
    applies to the global batch (the same images are left out on every rank), and the
    ranks together see exactly the batches of a one-process run with the same seed.
    ``num_replicas`` / ``rank`` default to the current process group's.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_replicas = dist.world_size() if num_replicas is None else num_replicas
        self.rank = dist.rank() if rank is None else rank
        if batch_size % self.num_replicas != 0:
            raise ValueError(
                f"global batch_size {batch_size} is not divisible by {self.num_replicas} processes"
            )
        if drop_last is False and self.num_replicas > 1:
            raise ValueError("distributed sampling needs drop_last=True (equal slices per rank)")
        if drop_last and batch_size > len(images):
            raise ValueError(f"batch_size {batch_size} is larger than the dataset ({len(images)})")
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=g).to(self.images.device)
        else:
            order = torch.arange(n, device=self.images.device)
        local = self.batch_size // self.num_replicas
        for i in range(len(self)):
            start = i * self.batch_size + self.rank * local
            idx = order[start : start + local]
            yield self.images[idx], self.labels[idx], idx
