"""In-memory data behind the one data interface: :class:`InMemoryData` wraps an
:class:`~moco.data.splits.ImageSplits`.

Every image is on hand as one uint8 tensor, so each step indexes a batch
(:class:`~moco.data.loader.InMemoryLoader`) and the whole augmentation, crops included,
runs batched on the device (``views.build_view_transform``): both crops of a
:class:`~moco.data.contract.TrainBatch` are the batch itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from moco.augment.views import ViewSpec, build_eval_transform, build_view_transform
from moco.data.contract import TrainBatch, describe
from moco.data.loader import InMemoryLoader
from moco.data.splits import ImageSplits

EVAL_BATCH = 512  # images per feature-extraction batch (eval.features.extract_features')


class InMemoryBatches:
    """An :class:`InMemoryLoader`'s batches as :class:`TrainBatch` es: the batch twice."""

    def __init__(self, loader: InMemoryLoader) -> None:
        self.loader = loader

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.loader.set_epoch(epoch, start)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[TrainBatch]:
        for images, labels, index in self.loader:
            yield TrainBatch((images, images), labels, index)

    @property
    def unreadable_in_epoch(self) -> int:
        return 0  # decoded (or skipped) when the source was loaded


class TensorEvalSplit:
    """An in-memory split for feature extraction: every image is readable."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images  # uint8 (n, C, H, W)
        self._labels = labels

    @property
    def labels(self) -> torch.Tensor:
        return self._labels

    def __len__(self) -> int:
        return len(self.images)

    def batches(
        self, positions: torch.Tensor, workers: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(positions), EVAL_BATCH):
            idx = positions[i : i + EVAL_BATCH]
            yield self.images[idx], torch.ones(len(idx), dtype=torch.bool)


class InMemoryData:
    """:class:`~moco.data.contract.PretrainData` of images held in memory."""

    def __init__(self, splits: ImageSplits) -> None:
        self.splits = splits
        self.name = splits.name
        self.held_out = splits.held_out
        self.classes = splits.classes

    @property
    def channels(self) -> int:
        return self.splits.channels

    @property
    def labelled(self) -> bool:
        return bool((self.splits.train_labels >= 0).any())

    @property
    def num_pretrain(self) -> int:
        return self.splits.num_pretrain_images  # train + unlabelled (STL-10)

    @property
    def num_held_out(self) -> int:
        return len(self.splits.test_images)

    @property
    def train_class_counts(self) -> list[int]:
        labels = self.splits.train_labels
        return [int(c) for c in torch.bincount(labels[labels >= 0]) if c > 0]

    def mean_std(self, size: int, seed: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Of every training image (``size`` and ``seed`` are for sampled statistics)."""
        return self.splits.mean_std()

    def batches(
        self,
        spec: ViewSpec,
        size: int,
        batch_size: int,
        device: torch.device,
        seed: int,
        workers: int,
    ) -> InMemoryBatches:
        """Over train + unlabelled images; labels -1 for unlabelled ones (pre-training reads
        none). ``spec``, ``size`` and ``workers`` are the streamed path's."""
        s = self.splits
        return InMemoryBatches(
            InMemoryLoader(s.pretrain_images, s.pretrain_labels, batch_size, device, seed)
        )

    def view_transform(
        self, spec: ViewSpec, size: int, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> nn.Module:
        """Everything batched on the device: crops and photometric ops."""
        return build_view_transform(spec, size, self.channels, mean, std)

    def eval_transform(
        self, size: int, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> nn.Module:
        return build_eval_transform(size, mean, std, self.splits.image_size)

    def eval_splits(self, size: int) -> tuple[TensorEvalSplit, TensorEvalSplit]:
        s = self.splits
        return TensorEvalSplit(s.train_images, s.train_labels), TensorEvalSplit(
            s.test_images, s.test_labels
        )

    def describe(self) -> str:
        return describe(self)
