"""Which samples each step sees: the one batching rule of both pre-training loaders.

Epoch e's order is ``randperm(n)`` from a generator seeded with ``seed * 100_003 + e``
(:func:`epoch_order`): the same on every rank, and independent of earlier epochs, so a
resumed run sees the batches of an uninterrupted one. The order is cut into global
batches of ``batch_size``; rank r of W takes the r-th of W equal contiguous slices of
each (b = batch_size / W samples).

drop_last: only whole global batches are used, ``n // batch_size`` per epoch. The at most
``batch_size - 1`` indices left over at the end of the order are skipped on every rank
alike and change from epoch to epoch, so every sample is seen at most once per epoch
across all ranks, each rank's slice has the same size (DDP, split BN and MoCo's queue need
fixed, equal batches), and the ranks together see exactly the batches of one process with
the same seed. ``num_replicas`` / ``rank`` default to the current process group's
(:mod:`moco.dist`).

:class:`GlobalBatches` yields index tensors (the in-memory loader,
:class:`~moco.data.loader.InMemoryLoader`, indexes its tensors with them);
:class:`GlobalBatchSampler` is the same rule as a torch batch sampler of index lists (the
streamed loader, :class:`~moco.data.stream.StreamingLoader`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from moco import dist

SEED_STRIDE = 100_003  # epoch e of seed s draws from seed s * SEED_STRIDE + e


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """int64 (n,): the order of ``range(n)`` in ``epoch`` of a run seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed * SEED_STRIDE + epoch)
    return torch.randperm(n, generator=g)


class GlobalBatches:
    """This rank's share of each global batch of an epoch: int64 index tensors of
    ``batch_size / num_replicas`` entries (module docstring), on ``device``.

    ``shuffle=False`` uses ``arange(n)`` instead of the epoch's order, and
    ``drop_last=False`` keeps the last, short batch (one process only: ranks need equal
    slices); both only for iterating a dataset once in order.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        drop_last: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        self.num_replicas = dist.world_size() if num_replicas is None else num_replicas
        self.rank = dist.rank() if rank is None else rank
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not in [0, {self.num_replicas})")
        if batch_size % self.num_replicas != 0:
            raise ValueError(
                f"global batch_size {batch_size} is not divisible by {self.num_replicas} processes"
            )
        if not drop_last and self.num_replicas > 1:
            raise ValueError("distributed sampling needs drop_last=True (equal slices per rank)")
        if drop_last and batch_size > n:
            raise ValueError(f"batch_size {batch_size} is larger than the dataset ({n})")
        self.n = n
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.device = torch.device(device)
        self.epoch = 0
        self.start = 0  # first batch of the epoch to yield (a resume mid-epoch)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate ``epoch`` from its batch ``start`` on (the batches before it were
        done before a mid-epoch checkpoint); ``len`` stays the whole epoch's."""
        if not 0 <= start <= len(self):
            raise ValueError(f"start batch {start} is outside the epoch's {len(self)} batches")
        self.epoch = epoch
        self.start = start

    def __len__(self) -> int:
        n, b = self.n, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.shuffle:
            order = epoch_order(self.n, self.seed, self.epoch).to(self.device)
        else:
            order = torch.arange(self.n, device=self.device)
        local = self.batch_size // self.num_replicas
        for i in range(self.start, len(self)):
            start = i * self.batch_size + self.rank * local
            yield order[start : start + local]


class OverGlobalBatches:
    """What a loader or sampler built on a :class:`GlobalBatches` (``self.batches``)
    forwards to it: its sizes, rank, epoch, ``set_epoch`` and length."""

    batches: GlobalBatches

    @property
    def n(self) -> int:
        return self.batches.n

    @property
    def batch_size(self) -> int:
        return self.batches.batch_size

    @property
    def seed(self) -> int:
        return self.batches.seed

    @property
    def num_replicas(self) -> int:
        return self.batches.num_replicas

    @property
    def rank(self) -> int:
        return self.batches.rank

    @property
    def epoch(self) -> int:
        return self.batches.epoch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.batches.set_epoch(epoch, start)

    def __len__(self) -> int:
        return len(self.batches)


class GlobalBatchSampler(OverGlobalBatches, Sampler[list[int]]):
    """:class:`GlobalBatches` (shuffled, drop_last) as a torch batch sampler: lists of
    ``batch_size / num_replicas`` indices, for a DataLoader's ``batch_sampler``."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        self.batches = GlobalBatches(n, batch_size, seed, num_replicas, rank)

    def __iter__(self) -> Iterator[list[int]]:
        for idx in self.batches:
            yield idx.tolist()
