"""Evaluation batches of streamed data: files read as the in-memory path stores them.

:func:`iter_center_crops` yields the centre crops (:mod:`moco.data.center_crop`) of a file
list in order, decoded in DataLoader workers, so feature extraction (kNN monitor, linear
probe) runs on data that is not held in memory; :class:`FileEvalSplit` reads any subset of
the files that way (a rank's shard) and says which of them could be read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from moco.data.center_crop import chw, decode_center_crop
from moco.data.decode import Decoded, warn_unreadable

EVAL_BATCH = 256  # files per evaluation batch


class CropBatch(NamedTuple):
    """The readable files of one batch of a file list, read as centre crops."""

    images: torch.Tensor  # uint8 (g, C, size, size), on the CPU
    labels: torch.Tensor  # int64 (g,)
    ok: torch.Tensor  # bool (b,): which of the batch's b files they are (g = ok.sum())


def center_crop_batches(
    files: Sequence[tuple[Path, int]],
    size: int,
    batch_size: int,
    workers: int = 4,
    mode: str = "RGB",
) -> Iterator[CropBatch]:
    """Every batch of ``batch_size`` files of ``files``, in order, decoded in ``workers``
    DataLoader processes: each file as the in-memory path stores it
    (:func:`~moco.data.center_crop.decode_center_crop`), C from ``mode``. Unreadable files
    are left out (one warning each); a batch may hold none (g = 0)."""
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    loader: DataLoader[tuple[torch.Tensor | None, int, Path, str]] = DataLoader(
        _CenterCrops(files, size, mode),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate_crops,
        generator=torch.Generator().manual_seed(0),  # worker seeds: not the global RNG
    )
    for x, y, ok, failed in loader:
        for path, why in failed:
            warn_unreadable(Decoded(path, None, error=why))
        if not len(y):
            x = torch.empty(0, 1 if mode == "L" else 3, size, size, dtype=torch.uint8)
        yield CropBatch(x, y, ok)


def iter_center_crops(
    files: Sequence[tuple[Path, int]],
    size: int,
    batch_size: int,
    workers: int = 4,
    mode: str = "RGB",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 (b, C, size, size), labels (b,)) of ``files`` in order, on the CPU: the
    batches of :func:`center_crop_batches` that hold a readable file.

    For feature extraction (kNN, linear probe) on data that is not held in memory.
    Unreadable files are left out (b shrinks; such batches are not trained on), each
    with one warning; a batch with no readable file is skipped.
    """
    for x, y, _ in center_crop_batches(files, size, batch_size, workers, mode):
        if len(y):
            yield x, y


class FileEvalSplit:
    """A streamed split for feature extraction (:class:`~moco.data.contract.EvalSplit`):
    batches of :data:`EVAL_BATCH` files of any positions, read as centre crops."""

    def __init__(self, files: Sequence[tuple[Path, int]], size: int, mode: str) -> None:
        self.files, self.size, self.mode = list(files), size, mode
        self._labels = torch.tensor([y for _, y in self.files], dtype=torch.int64)

    @property
    def labels(self) -> torch.Tensor:
        return self._labels

    def __len__(self) -> int:
        return len(self.files)

    def batches(
        self, positions: torch.Tensor, workers: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        files = [self.files[i] for i in positions.tolist()]
        for x, _, ok in center_crop_batches(files, self.size, EVAL_BATCH, workers, self.mode):
            yield x, ok


class _CenterCrops(Dataset[tuple[torch.Tensor | None, int, Path, str]]):
    def __init__(self, files: Sequence[tuple[Path, int]], size: int, mode: str) -> None:
        self.files, self.size, self.mode = list(files), size, mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, Path, str]:
        path, label = self.files[i]
        d, arr = decode_center_crop(path, self.size)
        if arr is None:
            return None, label, path, d.error or "unreadable"
        return chw(arr, self.mode), label, path, ""


def _collate_crops(
    items: Sequence[tuple[torch.Tensor | None, int, Path, str]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[Path, str]]]:
    good = [(x, y) for x, y, _, _ in items if x is not None]
    ok = torch.tensor([x is not None for x, _, _, _ in items], dtype=torch.bool)
    failed = [(p, why) for x, _, p, why in items if x is None]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), ok, failed
    x = torch.stack([x for x, _ in good])
    return x, torch.tensor([y for _, y in good], dtype=torch.int64), ok, failed
