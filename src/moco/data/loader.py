"""Batches of an in-memory uint8 image tensor, reshuffled each epoch from a seed."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class InMemoryLoader:
    """Yields (images uint8 (B, C, H, W), labels (B,), indices (B,)) on ``device``.

    The order of epoch e is ``randperm`` from a generator seeded with (seed, e), so an
    epoch's batches do not depend on what ran before it: a resumed run sees the same
    batches. ``drop_last`` keeps every step the same size (MoCo's queue and split BN
    want fixed batches); the at most ``batch_size - 1`` images left out change each epoch.
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
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx], idx
