"""The streamed pre-training loader: image files read from disk at every step.

For folders too large to decode into memory. The in-memory path (:mod:`moco.data.folder`)
decodes every image once, at one small size. For ImageNet-sized data that is neither
possible nor wanted: each view is a random crop of the original photo. Here the files
stay on disk and every step reads its batch. The pieces, one module each:

- :mod:`moco.data.file_splits`: :func:`list_source` names the files of a ``folder:`` /
  ``images:`` / ``filelist:`` source and its held-out split without decoding them
  (:class:`FileSplits`);
- :mod:`moco.data.crop_dataset`: :class:`CropFlipDataset` makes the views of one file in
  a DataLoader worker (stage 1: decode, random-resized crop, flip); the photometric ops
  run batched on the device afterwards (``views.build_photometric_transform``, stage 2);
- :mod:`moco.data.sampling`: :class:`GlobalBatchSampler` orders the samples exactly as
  :class:`~moco.data.loader.InMemoryLoader` does, under torch.distributed too;
- this module: :class:`StreamingLoader` ties them together: persistent workers, pinned
  memory, prefetch, and the handling of unreadable files;
- :mod:`moco.data.eval_batches`: the files as the in-memory path stores them (centre
  crops), for feature extraction (kNN monitor, linear probe) without holding the dataset.

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

import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from moco.augment.two_stage import CropFlip
from moco.data.crop_dataset import Batch, CropFlipDataset, Sample, collate_samples
from moco.data.decode import Decoded, warn_unreadable
from moco.data.file_splits import FileSplits, list_source
from moco.data.sampling import GlobalBatchSampler
from moco.errors import DataSourceError

__all__ = ["FileSplits", "StreamingLoader", "list_source"]  # the first and last: file_splits


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


def leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """A DataLoader worker ignores SIGINT and SIGTERM: a Ctrl-C or a scheduler's SIGTERM
    reaches every process of the job, and the training process, which saves a checkpoint
    before it stops, must find its workers still there. It shuts them down itself."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


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
            worker_init_fn=leave_stop_signals_to_the_main_process,
            # the workers' base seed comes from here, not from the global RNG: a resumed
            # run starts its iterator at another point of that RNG's stream, and the
            # crops depend on (seed, epoch, index) alone anyway
            generator=torch.Generator().manual_seed(seed),
        )
        self.unreadable: dict[Path, str] = {}
        self.unreadable_in_epoch = 0

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.sampler.set_epoch(epoch, start)
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
