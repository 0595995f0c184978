"""Streamed data behind the one data interface: :class:`StreamedData` wraps a
:class:`~moco.data.file_splits.FileSplits`.

The files stay on disk. Each step's files are decoded and cropped in DataLoader workers
(stage 1, :class:`~moco.augment.two_stage.CropFlip`, two crops per file: the two crops of
a :class:`~moco.data.contract.TrainBatch`), and the photometric ops run batched on the
device (stage 2, ``views.build_photometric_transform``), or, when training on a CPU, in
stage 1 per uint8 crop, stage 2 then only normalising
(:func:`~moco.augment.two_stage.photometric_in_workers` decides both sides). Evaluation
reads the files as the in-memory path stores them: ``size`` x ``size`` centre crops.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import torch
from torch import nn

from moco.augment.two_stage import CropFlip, photometric_in_workers
from moco.augment.views import ViewSpec, build_eval_transform, build_photometric_transform
from moco.data.contract import TrainBatch, describe
from moco.data.eval_batches import FileEvalSplit
from moco.data.file_splits import FileSplits
from moco.data.stream import StreamingLoader


class StreamedBatches:
    """A :class:`StreamingLoader`'s batches as :class:`TrainBatch` es."""

    def __init__(self, loader: StreamingLoader) -> None:
        self.loader = loader  # of 2 crops per file

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.loader.set_epoch(epoch, start)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[TrainBatch]:
        for (q, k), labels, index in self.loader:
            yield TrainBatch((q, k), labels, index)

    @property
    def unreadable_in_epoch(self) -> int:
        return self.loader.unreadable_in_epoch


class _Stage2(nn.Module):
    """Stage 2 as stage 1 chose for the batch's device (``photometric_in_workers``)."""

    def __init__(self, photometric: nn.Module, normalise: nn.Module) -> None:
        super().__init__()
        self.photometric = photometric
        self.normalise = normalise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if photometric_in_workers(x.device):
            return self.normalise(x)
        return self.photometric(x)


class StreamedData:
    """:class:`~moco.data.contract.PretrainData` of image files read at every step."""

    def __init__(self, files: FileSplits) -> None:
        self.files = files
        self.name = files.name
        self.held_out = files.held_out
        self.classes = files.classes

    @property
    def channels(self) -> int:
        return self.files.channels

    @property
    def labelled(self) -> bool:
        return self.files.labelled

    @property
    def num_pretrain(self) -> int:
        return len(self.files.train)

    @property
    def num_held_out(self) -> int:
        return len(self.files.test)

    @property
    def train_class_counts(self) -> list[int]:
        return list(Counter(y for _, y in self.files.train if y >= 0).values())

    def mean_std(self, size: int, seed: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Of a seeded sample of the training files (:meth:`FileSplits.mean_std`)."""
        return self.files.mean_std(size, seed=seed)

    def batches(
        self,
        spec: ViewSpec,
        size: int,
        batch_size: int,
        device: torch.device,
        seed: int,
        workers: int,
    ) -> StreamedBatches:
        in_workers = photometric_in_workers(device)
        crop = CropFlip(spec, size, 2, seed, self.files.mode, photometric=in_workers)
        return StreamedBatches(
            StreamingLoader(self.files.train, crop, batch_size, device, seed, workers)
        )

    def view_transform(
        self, spec: ViewSpec, size: int, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> nn.Module:
        """Stage 2 (the crops are made in the workers): the batched photometric ops and
        normalisation for batches on an accelerator; normalisation alone for batches on
        a CPU, whose photometric ops stage 1 applied."""
        return _Stage2(
            build_photometric_transform(spec, size, self.channels, mean, std),
            build_eval_transform(size, mean, std, size),
        )

    def eval_transform(
        self, size: int, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> nn.Module:
        return build_eval_transform(size, mean, std, size)  # crops are read at ``size``

    def eval_splits(self, size: int) -> tuple[FileEvalSplit, FileEvalSplit]:
        f = self.files
        return FileEvalSplit(f.train, size, f.mode), FileEvalSplit(f.test, size, f.mode)

    def describe(self) -> str:
        return describe(self)
