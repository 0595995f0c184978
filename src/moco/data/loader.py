"""Batches of an in-memory uint8 image tensor, in the order of :mod:`moco.data.sampling`."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from moco.data.sampling import GlobalBatches, OverGlobalBatches


class InMemoryLoader(OverGlobalBatches):
    """Yields (images uint8 (b, C, H, W), labels (b,), indices (b,)) on ``device``.

    The batches are :mod:`moco.data.sampling`'s: epoch e's order is a seeded ``randperm``
    that does not depend on what ran before it (a resumed run sees the same batches), cut
    into global batches of ``batch_size`` (B) with ``drop_last`` (MoCo's queue and split
    BN want fixed batches; the at most B - 1 images left out change each epoch), of which
    rank r takes the r-th of ``num_replicas`` equal contiguous slices (b = B /
    num_replicas). ``num_replicas`` / ``rank`` default to the current process group's.
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
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batches = GlobalBatches(
            len(images), batch_size, seed, num_replicas, rank, shuffle, drop_last,
            self.images.device,
        )  # fmt: skip

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for idx in self.batches:
            yield self.images[idx], self.labels[idx], idx
