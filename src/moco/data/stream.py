"""Image files streamed from disk: for folders too large to decode into memory.

The in-memory path (:mod:`moco.data.folder`) decodes every image once, at one small
size. For ImageNet-sized data that is neither possible nor wanted: each view is a random
crop of the original photo. Here the files stay on disk and every step reads its batch:

- :func:`list_source` names the files of a ``folder:`` / ``images:`` / ``filelist:``
  source and its held-out split without decoding them (:class:`FileSplits`);
- :class:`CropFlipDataset` makes the views of one file in a DataLoader worker: decode
  (reduced-size for JPEGs where the crops allow), random-resized crop, flip
  (:class:`~moco.augment.two_stage.CropFlip`, stage 1); the photometric ops run batched on
  the device afterwards (``views.build_photometric_transform``, stage 2);
- :class:`GlobalBatchSampler` orders the samples exactly as
  :class:`~moco.data.loader.InMemoryLoader` does, under torch.distributed too;
- :class:`StreamingLoader` ties them together: persistent workers, pinned memory,
  prefetch, and the handling of unreadable files;
- :func:`iter_center_crops` reads files as the in-memory path stores them (centre crops),
  for feature extraction (kNN monitor, linear probe) without holding the dataset.

Unreadable files (empty, truncated, corrupt, not an image) never stop a run: the worker
returns a placeholder and says why, the batch takes a copy of a good sample of the same
batch in its place (batches stay the same size, which split BN, the queue and equal
per-rank slices need), one :class:`~moco.data.decode.UnreadableImageWarning` per file is
issued over the whole run, and each epoch's count is kept for the engine to print.

Determinism: the views of sample i in epoch e are a function of (seed, e, i) alone
(``CropFlip``), and the batches of epoch e of the seed alone; so a run gives the same
batches for any number of workers, and a resumed run the same as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from moco import dist
from moco.augment.two_stage import CropFlip
from moco.data.decode import Decoded, read_image, warn_unreadable
from moco.data.folder import (
    FILE_KINDS,
    decode_center_crop,
    decode_threads,
    hold_out,
    list_files,
    map_ordered,
)
from moco.data.sources import BUNDLED, DataSourceError, parse_source

_MODE_SAMPLE = 32  # readable files looked at to decide between "L" and "RGB"
_EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that transpose the image


# ----------------------------------------------------------------------------- listing


@dataclass
class FileSplits:
    """A file source's train and held-out files, (path, label) each, label -1 = none.

    The streaming counterpart of :class:`~moco.data.sources.ImageSplits`: the same
    listing and the same held-out split, without the pixels. ``mode`` is the PIL mode the
    views are made in: "L" (1 channel) when every file of a sample of the source is
    greyscale, else "RGB" (greyscale files then repeat their channel).
    """

    name: str
    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]]
    held_out: str  # how the held-out split was made, as ImageSplits.held_out
    classes: tuple[str, ...] | None = None
    mode: str = "RGB"

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    @property
    def labelled(self) -> bool:
        return all(y >= 0 for _, y in self.train)

    @property
    def num_classes(self) -> int:
        return max((y for _, y in self.train), default=-1) + 1

    def mean_std(
        self, size: int, max_images: int = 512, seed: int = 0
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std in [0, 1], as ``ImageSplits.mean_std`` (over all pixels,
        unbiased std), estimated from ``size`` x ``size`` centre crops of at most ``max_images``
        training files drawn with ``seed``. Unreadable files are left out here without a
        warning: the loader warns about each once."""
        n = len(self.train)
        pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_images]
        paths = [self.train[i][0] for i in sorted(pick.tolist())]
        total = np.zeros(self.channels, np.float64)
        total_sq = np.zeros(self.channels, np.float64)
        count = 0
        for _, arr in map_ordered(decode_center_crop, paths, size, decode_threads()):
            if arr is None:
                continue
            x = chw(arr, self.mode).numpy().reshape(self.channels, -1) / 255.0
            total += x.sum(1)
            total_sq += (x * x).sum(1)
            count += x.shape[1]
        if count < 2:
            raise DataSourceError(f"{self.name}: none of {len(paths)} sampled files was readable")
        mean = total / count
        var = np.maximum(total_sq - count * mean * mean, 0.0) / (count - 1)
        return tuple(mean.tolist()), tuple(np.sqrt(var).tolist())


def list_source(spec: str, holdout_fraction: float = 0.1, seed: int = 0) -> FileSplits:
    """The files of a ``folder:`` / ``images:`` / ``filelist:`` source and its split.

    The listing is :func:`moco.data.folder.list_files`' (a missing or empty source fails
    here, with its message). A source without a held-out split holds out
    ``holdout_fraction`` with the rule of ``load_files`` (stratified when labelled, else
    random, drawn with ``seed``), so streaming and in-memory runs hold out the same files
    when every file is readable. (The in-memory path splits the files it could read, so
    an unreadable file shifts its split; streaming cannot know which files are unreadable
    before it reads them, and splits the listing.) Only a sample of files is opened:
    to choose the mode.
    """
    kind, path = ("bundled", Path(BUNDLED)) if spec == BUNDLED else parse_source(spec)
    if kind not in FILE_KINDS:
        raise DataSourceError(
            f"data source {spec!r}: only image files can be streamed "
            f"({', '.join(k + ':PATH' for k in FILE_KINDS)}); {kind} data is loaded into memory"
        )
    listing = list_files(kind, path)
    name = f"{kind} {path}"
    if listing.test is not None:
        train, test, how = listing.train, listing.test, listing.held_out
    else:
        n = len(listing.train)
        if n < 2:
            raise DataSourceError(
                f"{kind}:{path}: {n} image file; at least 2 are needed to hold one out"
            )
        labels = torch.tensor([y for _, y in listing.train], dtype=torch.int64)
        keep, held, how = hold_out(labels, holdout_fraction, seed)
        train = [listing.train[i] for i in keep.tolist()]
        test = [listing.train[i] for i in held.tolist()]
    mode = _sample_mode([p for p, _ in train + test], name)
    return FileSplits(name, train, test, how, listing.classes, mode)


def _sample_mode(paths: Sequence[Path], name: str) -> str:
    """ "L" when the first :data:`_MODE_SAMPLE` readable files of an even spread over
    ``paths`` are all greyscale (after :func:`~moco.data.decode.read_image`), else "RGB".

    A sample, not every file: reading a million files to find one colour image would
    cost a full pass over the data. A colour file in an "L" source is converted to "L"."""
    spread = np.linspace(0, len(paths) - 1, num=min(len(paths), 4 * _MODE_SAMPLE))
    order = np.unique(spread.round().astype(np.int64)).tolist()
    readable: list[str] = []
    first_error: Decoded | None = None
    for i in order:
        d = read_image(paths[i], draft_size=_MODE_SAMPLE)
        if d.image is None:
            first_error = first_error or d
            continue
        readable.append(d.image.mode)
        if len(readable) == _MODE_SAMPLE:
            break
    if not readable:
        assert first_error is not None
        raise DataSourceError(
            f"{name}: none of {len(order)} files sampled across the source could be read "
            f"(e.g. {first_error.path}: {first_error.error})"
        )
    return "L" if all(m == "L" for m in readable) else "RGB"


def chw(arr: np.ndarray, mode: str) -> torch.Tensor:
    """uint8 (H, W) or (H, W, 3) -> (C, H, W) with C = 1 for mode "L", 3 for "RGB":
    greyscale repeats its channel (as the in-memory stacking does), colour becomes "L"
    by Pillow's ITU-R 601 conversion."""
    if mode == "L" and arr.ndim == 3:
        arr = np.asarray(Image.fromarray(arr).convert("L"))
    x = torch.from_numpy(np.array(arr))  # a copy: arrays of PIL images are read-only
    if x.ndim == 2:
        x = x.unsqueeze(0)
        return x.expand(3, -1, -1).contiguous() if mode == "RGB" else x
    return x.permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------- dataset


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
    return crop.cut(img, w, h, crops, flips), ""


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


# ----------------------------------------------------------------------------- sampling


class GlobalBatchSampler(Sampler[list[int]]):
    """This rank's share of each global batch: lists of ``batch_size / num_replicas`` indices.

    The rule of :class:`~moco.data.loader.InMemoryLoader`, so both paths see the same
    batches: epoch e's order is ``randperm(n)`` from a generator seeded with
    ``seed * 100_003 + e`` (the same on every rank, independent of earlier epochs), cut
    into global batches of ``batch_size``; rank r takes the r-th of ``num_replicas``
    equal contiguous slices of each.

    drop_last: only whole global batches are used, ``n // batch_size`` per epoch. The at
    most ``batch_size - 1`` indices left over at the end of the order are skipped on
    every rank alike and change from epoch to epoch, so every sample is seen at most
    once per epoch across all ranks, each rank's slice has the same size (DDP and split BN
    need that), and the ranks together see exactly the batches of one process with the
    same seed. ``num_replicas`` / ``rank`` default to the current process group's.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
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
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} is larger than the dataset ({n})")
        self.n = n
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        local = self.batch_size // self.num_replicas
        for i in range(len(self)):
            start = i * self.batch_size + self.rank * local
            yield order[start : start + local]


class _WithEpoch(Sampler[list[tuple[int, int]]]):
    """A batch sampler's lists with the epoch attached to every index: ``(i, epoch)``."""

    def __init__(self, batches: GlobalBatchSampler) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        e = self.batches.epoch
        for batch in self.batches:
            yield [(i, e) for i in batch]


# ----------------------------------------------------------------------------- loading


class StreamingLoader:
    """Yields (views, labels (b,), indices (b,)) on ``device``, views a tuple of
    ``crop.n_views`` uint8 (b, C, s, s) tensors: InMemoryLoader's triple with the views
    first. ``batch_size`` is the global batch; b = batch_size / num_replicas.

    Batches are ordered by :class:`GlobalBatchSampler` and made in ``workers`` DataLoader
    processes (persistent across epochs; ``prefetch_factor`` batches ahead each) into
    pinned memory (``pin_memory`` None: when ``device`` is CUDA), then copied without
    blocking. Unreadable files: module docstring; ``unreadable_in_epoch`` counts this
    rank's replaced samples in the current (after it, the last) epoch, and
    ``unreadable`` maps every unreadable file met so far to its reason.
    """

    def __init__(
        self,
        files: Sequence[tuple[Path, int]],
        crop: CropFlip,
        batch_size: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        workers: int = 4,
        prefetch_factor: int = 2,
        pin_memory: bool | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.device = torch.device(device)
        self.dataset = CropFlipDataset(files, crop)
        self.sampler = GlobalBatchSampler(len(files), batch_size, seed, num_replicas, rank)
        pin = self.device.type == "cuda" if pin_memory is None else pin_memory
        self._loader: DataLoader[Sample] = DataLoader(
            self.dataset,  # type: ignore[arg-type]  # its items are (index, epoch) pairs
            batch_sampler=_WithEpoch(self.sampler),
            num_workers=workers,
            collate_fn=collate_samples,
            pin_memory=pin,
            persistent_workers=workers > 0,
            prefetch_factor=prefetch_factor if workers > 0 else None,
        )
        self.unreadable: dict[Path, str] = {}
        self.unreadable_in_epoch = 0

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]]:
        self.unreadable_in_epoch = 0
        for batch in self._loader:
            if batch.failed:
                self._note_failures(batch)
            views = tuple(v.to(self.device, non_blocking=True) for v in batch.views)
            labels = batch.labels.to(self.device, non_blocking=True)
            yield views, labels, batch.indices.to(self.device, non_blocking=True)

    def _note_failures(self, batch: Batch) -> None:
        files = self.dataset.files
        if len(batch.failed) == len(batch.labels):
            named = [f"{files[i][0]} ({why})" for i, why in batch.failed[:5]]
            more = f" and {len(batch.failed) - 5} more" if len(batch.failed) > 5 else ""
            raise DataSourceError(
                f"no file of a batch of {len(batch.failed)} could be read (epoch "
                f"{self.epoch}): {'; '.join(named)}{more}"
            )
        for i, why in batch.failed:
            self.unreadable_in_epoch += 1
            path = files[i][0]
            if path not in self.unreadable:
                self.unreadable[path] = why
                warn_unreadable(Decoded(path, None, error=why))


def iter_center_crops(
    files: Sequence[tuple[Path, int]],
    size: int,
    batch_size: int,
    workers: int = 4,
    mode: str = "RGB",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 (b, C, size, size), labels (b,)) of ``files`` in order, on the CPU: each file
    as the in-memory path stores it (``folder.decode_center_crop``), C from ``mode``.

    For feature extraction (kNN, linear probe) on data that is not held in memory.
    Unreadable files are left out (b shrinks; such batches are not trained on), each
    with one warning; a batch with no readable file is skipped.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    loader: DataLoader[tuple[torch.Tensor | None, int, Path, str]] = DataLoader(
        _CenterCrops(files, size, mode),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate_crops,
    )
    for x, y, failed in loader:
        for path, why in failed:
            warn_unreadable(Decoded(path, None, error=why))
        if len(y):
            yield x, y


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
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[Path, str]]]:
    good = [(x, y) for x, y, _, _ in items if x is not None]
    failed = [(p, why) for x, _, p, why in items if x is None]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), failed
    x = torch.stack([x for x, _ in good])
    return x, torch.tensor([y for _, y in good], dtype=torch.int64), failed
