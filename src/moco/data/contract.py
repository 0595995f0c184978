"""What the engine and the kNN monitor see of pre-training data: types only.

The types of :mod:`moco.data.interface` (which re-exports them and picks an
implementation); they live in this leaf so that the two implementations,
:mod:`moco.data.in_memory` and :mod:`moco.data.streamed`, can build a
:class:`TrainBatch` without importing the module that imports them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple, Protocol

import torch
from torch import nn

from moco.augment.views import ViewSpec


class TrainBatch(NamedTuple):
    """One step's batch of this rank, on the device."""

    # uint8 (b, C, H, W) each: the two crops that become x_q and x_k. In memory: the same
    # batch tensor twice (the views do all the augmentation); streamed: the two CropFlip
    # crops of each file.
    crops: tuple[torch.Tensor, torch.Tensor]
    labels: torch.Tensor  # int64 (b,), -1 for unlabelled images
    # int64 (b,) dataset indices (the memory bank needs them). The name shadows
    # tuple.index, which a batch has no use for; mypy flags the shadowing.
    index: torch.Tensor  # type: ignore[assignment]


class Batches(Protocol):
    """What the training loop iterates, one epoch at a time (``set_epoch`` first)."""

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The next iteration is ``epoch`` from its batch ``start`` on (a mid-epoch resume)."""
        ...

    def __len__(self) -> int:  # steps per epoch (the whole epoch, whatever ``start``)
        ...

    def __iter__(self) -> Iterator[TrainBatch]: ...

    @property
    def unreadable_in_epoch(self) -> int:
        """This rank's replaced unreadable samples in the current epoch (0 in memory)."""
        ...


class EvalSplit(Protocol):
    """One split as feature extraction reads it: positions 0..n-1, every label known up
    front, the images decoded batch by batch for any list of positions (a rank's shard).

    A position whose file cannot be read (streamed data only) has no image: ``batches``
    says which positions of each batch it could read, and the caller leaves the others
    out of the features and the labels.
    """

    @property
    def labels(self) -> torch.Tensor:  # int64 (n,), on the CPU
        ...

    def __len__(self) -> int: ...

    def batches(
        self, positions: torch.Tensor, workers: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The images at ``positions`` (int64 (p,)), in order, in batches of the split's
        own size: (uint8 (g, C, H, W) the readable images of the batch, on the CPU; bool
        (b,) which of the batch's b positions they are, g = its sum)."""
        ...


class PretrainData(Protocol):
    """A data source as pre-training and its kNN monitor use it, in memory or streamed."""

    name: str
    held_out: str  # how the held-out split was made
    classes: tuple[str, ...] | None

    @property
    def channels(self) -> int: ...

    @property
    def labelled(self) -> bool:
        """The training split has labels (the kNN monitor can score)."""
        ...

    @property
    def num_pretrain(self) -> int:
        """Images one pre-training epoch draws from (train + unlabelled)."""
        ...

    @property
    def num_held_out(self) -> int: ...

    @property
    def train_class_counts(self) -> list[int]:
        """Images per class of the labelled training split ([] when unlabelled)."""
        ...

    def mean_std(self, size: int, seed: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std in [0, 1] of the training images (streamed: of a seeded
        sample of ``size`` x ``size`` centre crops)."""
        ...

    def batches(
        self,
        spec: ViewSpec,
        size: int,
        batch_size: int,
        device: torch.device,
        seed: int,
        workers: int,
    ) -> Batches:
        """The pre-training batches (``batch_size`` global) of this rank, on ``device``."""
        ...

    def view_transform(
        self, spec: ViewSpec, size: int, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> nn.Module:
        """The module that turns one crop batch into a normalised view (not yet moved to
        a device)."""
        ...

    def eval_transform(
        self, size: int, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> nn.Module:
        """The deterministic module that turns a batch of :meth:`eval_splits` into
        normalised ``size`` x ``size`` encoder inputs (not yet moved to a device)."""
        ...

    def eval_splits(self, size: int) -> tuple[EvalSplit, EvalSplit]:
        """(training split, held-out split) for feature extraction: the kNN memory and its
        queries; streamed files are read as ``size`` x ``size`` centre crops."""
        ...

    def describe(self) -> str:
        """E.g. ``"NAME (5000 train / 1000 held-out images, test split)"``."""
        ...


def describe(data: PretrainData) -> str:
    """:meth:`PretrainData.describe`, the same for every implementation."""
    return (
        f"{data.name} ({data.num_pretrain} train / {data.num_held_out} held-out images, "
        f"{data.held_out})"
    )
