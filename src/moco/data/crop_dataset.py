"""The views of one file, made in a DataLoader worker: stage 1 of the streamed path.

:func:`crop_flip_file` decodes a file (reduced-size for JPEGs where the crops allow) and
cuts its random-resized, flipped crops (:class:`~moco.augment.two_stage.CropFlip`); the
photometric ops run batched on the device afterwards (stage 2,
``views.build_photometric_transform``). :class:`CropFlipDataset` serves them by index and
epoch, and :func:`collate_samples` stacks a batch, replacing unreadable samples by copies
of readable ones of the same batch (so batches keep their size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image
from torch.utils.data import Dataset

from moco.augment.two_stage import CropFlip
from moco.data.decode import read_image

_EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that transpose the image


@dataclass(frozen=True)
class Sample:
    """One file's views: ``ok`` False (with ``error``, and zero views) when unreadable."""

    views: tuple[torch.Tensor, ...]  # n_views x uint8 (C, size, size)
    label: int
    index: int
    ok: bool
    error: str


class Batch(NamedTuple):
    """Collated samples; ``failed`` lists (index, reason) of the replaced samples."""

    views: tuple[torch.Tensor, ...]  # n_views x uint8 (b, C, size, size)
    labels: torch.Tensor  # int64 (b,)
    indices: torch.Tensor  # int64 (b,)
    failed: list[tuple[int, str]]


def crop_flip_file(
    crop: CropFlip, path: Path, index: int, epoch: int
) -> tuple[tuple[torch.Tensor, ...] | None, str]:
    """The views of one file (``crop``'s draws for (index, epoch)), or (None, reason).

    As ``crop(path, index, epoch)``, with the decoding of the in-memory path
    (:func:`~moco.data.decode.read_image`: every mode converted the same way, EXIF
    orientation applied, damage found and reported instead of raised). The crops are
    planned from the header's size first, so that JPEGs decode at a reduced scale
    (``CropFlip.plan``'s reduction r): ``draft_size = min(W, H) // r`` makes Pillow's
    draft pick exactly r; ``CropFlip.cut`` then cuts the views from the shrunk image.
    """
    size = _oriented_size(path)
    if size is None:  # the header cannot be read: read_image says why
        d = read_image(path)
        if d.image is None:
            return None, d.error or "unreadable"
        size = d.image.size
    w, h = size
    crops, flips, reduction = crop.plan(h, w, index, epoch)
    d = read_image(path, draft_size=min(w, h) // reduction if reduction > 1 else None)
    if d.image is None:
        return None, d.error or "unreadable"
    img = d.image if d.image.mode == crop.mode else d.image.convert(crop.mode)
    return crop.cut(img, w, h, crops, flips, index, epoch), ""


def _oriented_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as displayed (EXIF orientation applied), from the header alone."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # the reason is read_image's to give
        return None
    return (h, w) if orientation in _SWAPS_SIDES else (w, h)


class CropFlipDataset(Dataset[Sample]):
    """Map-style dataset: ``files[i]`` -> :class:`Sample` of ``crop``'s views.

    An item is ``i`` (at :meth:`set_epoch`'s epoch) or ``(i, epoch)``: persistent
    DataLoader workers hold a copy of the dataset made when they started, so the epoch
    travels with the indices (:class:`StreamingLoader` sends pairs) rather than as state.
    """

    def __init__(self, files: Sequence[tuple[Path, int]], crop: CropFlip) -> None:
        self.files = list(files)
        self.crop = crop
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        index, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        path, label = self.files[index]
        views, error = crop_flip_file(self.crop, path, index, epoch)
        if views is None:
            c = 1 if self.crop.mode == "L" else 3
            blank = torch.zeros(c, self.crop.size, self.crop.size, dtype=torch.uint8)
            return Sample((blank,) * self.crop.n_views, label, index, False, error)
        return Sample(views, label, index, True, "")


def collate_samples(samples: Sequence[Sample]) -> Batch:
    """Stack samples; the j-th unreadable one becomes a copy (views, label and index) of
    the (j mod g)-th of the batch's g readable ones, so the batch keeps its size.

    A batch with no readable sample keeps its zero placeholders; the loader raises."""
    good = [s for s in samples if s.ok]
    failed = [(s.index, s.error) for s in samples if not s.ok]
    if good and failed:
        fill = iter(range(len(samples)))
        samples = [s if s.ok else good[next(fill) % len(good)] for s in samples]
    views = tuple(torch.stack(v) for v in zip(*(s.views for s in samples), strict=True))
    labels = torch.tensor([s.label for s in samples], dtype=torch.int64)
    indices = torch.tensor([s.index for s in samples], dtype=torch.int64)
    return Batch(views, labels, indices, failed)
