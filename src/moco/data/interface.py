"""The one data interface of pre-training: what the engine asks of data, whichever path.

:func:`open_data` reads a source either into memory (:func:`~moco.data.sources.load_source`,
wrapped as :class:`~moco.data.in_memory.InMemoryData`) or as a file listing to stream
(:func:`~moco.data.file_splits.list_source`, wrapped as
:class:`~moco.data.streamed.StreamedData`). Both are a :class:`PretrainData`: the training
loop iterates its :class:`Batches` of :class:`TrainBatch` es and applies its
``view_transform``, and the kNN monitor (:func:`moco.eval.monitor.knn_monitor`) reads its
``eval_splits``; neither asks which path it has. The types are defined in
:mod:`moco.data.contract` (a leaf, so the implementations can use them) and re-exported
here.
"""

from __future__ import annotations

import os

from moco import dist
from moco.data.contract import Batches, EvalSplit, PretrainData, TrainBatch
from moco.data.file_splits import list_source
from moco.data.in_memory import InMemoryData
from moco.data.listing import list_files
from moco.data.sources import load_source, parse_source
from moco.data.splits import BUNDLED, FILE_KINDS
from moco.data.streamed import StreamedData
from moco.errors import ConfigError

__all__ = [
    "Batches",
    "EvalSplit",
    "InMemoryData",
    "PretrainData",
    "StreamedData",
    "TrainBatch",
    "open_data",
]


def open_data(
    source: str, holdout_fraction: float, seed: int, load_size: int | None, stream: bool
) -> PretrainData:
    """The data named by ``source`` (``data.source``), held out with ``holdout_fraction``
    and ``seed`` where the source has no held-out split of its own.

    ``stream=False``: every image decoded into memory (image files at ``load_size``);
    image files that would not fit in this machine's memory are refused before any is
    decoded (:func:`check_fits_in_memory`). ``stream=True``: image files listed only,
    and decoded in DataLoader workers at every step (``load_size`` unused; other kinds
    of source are refused).
    """
    if stream:
        return StreamedData(list_source(source, holdout_fraction, seed))
    kind, path = parse_source(source) if source != BUNDLED else (BUNDLED, None)
    if kind in FILE_KINDS and path is not None and load_size:
        listing = list_files(kind, path)  # listed again by load_source: cheap next to decoding
        files = len(listing.train) + len(listing.test or [])
        check_fits_in_memory(source, files, load_size, dist.local_world_size() or 1)
    return InMemoryData(load_source(source, holdout_fraction, seed, load_size))


# Decoding image files into memory holds each image about three times at its peak: the
# decoded arrays, the stacked (N, H, W, C) array and its channel-first copy (data/folder.py;
# measured 2.97x the held bytes for 2,000 files at 224 px).
LOAD_COPIES = 3
MEMORY_BUDGET = 0.75  # of physical memory, for the peak of every process of a node


def in_memory_bytes(files: int, load_size: int, channels: int = 3) -> int:
    """Bytes one process holds for ``files`` image files decoded at ``load_size``:
    files x C x load_size^2 (uint8; C = 3 unless every image is greyscale, which is not
    known before decoding)."""
    return files * channels * load_size * load_size


def physical_memory() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(
    source: str, files: int, load_size: int, processes: int, memory: int | None = None
) -> None:
    """Refuse, with the arithmetic, to decode ``files`` image files at ``load_size`` into
    memory in each of ``processes`` processes of this node (every rank decodes the whole
    source) when the peak, ``LOAD_COPIES`` x :func:`in_memory_bytes` per process, is over
    ``MEMORY_BUDGET`` of ``memory`` (default: :func:`physical_memory`). A run that would
    be killed by the kernel after hours of decoding (ImageNet at 224 px: 193 GB per
    process) stops at once and says to stream instead."""
    memory = physical_memory() if memory is None else memory
    if not memory:
        return
    held = in_memory_bytes(files, load_size)
    peak = LOAD_COPIES * held * processes
    if peak <= MEMORY_BUDGET * memory:
        return
    on_node = f" x {processes} processes on this node" if processes > 1 else ""
    raise ConfigError(
        f"data.source={source}: decoding its {files:,} image files into memory at "
        f"data.load_size={load_size} holds {_gb(held)} per process ({files:,} x 3 x "
        f"{load_size}^2 bytes), about {LOAD_COPIES}x that while decoding: "
        f"{_gb(LOAD_COPIES * held)}{on_node} = {_gb(peak)}, over "
        f"{MEMORY_BUDGET:.0%} of this machine's {_gb(memory)} of memory. Stream the files "
        "instead with data.stream=true (decoded per step in DataLoader workers), or lower "
        "data.load_size"
    )


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"
