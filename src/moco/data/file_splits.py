"""The files of a streamed source and its held-out split, without the pixels.

:func:`list_source` names the files of a ``folder:`` / ``images:`` / ``filelist:`` source
(:mod:`moco.data.listing`) and holds out the files the in-memory path would hold out
(:func:`moco.data.splits.hold_out`); :class:`FileSplits` keeps them with the PIL mode the
views are made in, and estimates the normalisation statistics from a sample of the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from moco.data.center_crop import chw, decode_center_crop, decode_threads, map_ordered
from moco.data.decode import Decoded, read_image
from moco.data.listing import list_files
from moco.data.sources import Source, resolve_source
from moco.data.splits import BUNDLED, FILE_KINDS, hold_out
from moco.errors import DataSourceError

_MODE_SAMPLE = 32  # readable files looked at to decide between "L" and "RGB"


@dataclass
class FileSplits:
    """A file source's train and held-out files, (path, label) each, label -1 = none.

    The streaming counterpart of :class:`~moco.data.splits.ImageSplits`: the same
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
    """The files of a ``folder:`` / ``images:`` / ``filelist:`` source and its split; a
    bare path is recognised as :func:`moco.data.sources.load_source` recognises it.

    The listing is :func:`moco.data.listing.list_files`' (a missing or empty source fails
    here, with its message). A source without a held-out split holds out
    ``holdout_fraction`` with the rule of ``load_files`` (stratified when labelled, else
    random, drawn with ``seed``), so streaming and in-memory runs hold out the same files
    when every file is readable. (The in-memory path splits the files it could read, so
    an unreadable file shifts its split; streaming cannot know which files are unreadable
    before it reads them, and splits the listing.) Only a sample of files is opened:
    to choose the mode.
    """
    source = Source("bundled", Path(BUNDLED)) if spec == BUNDLED else resolve_source(spec)
    kind, path = source.kind, source.path
    if kind not in FILE_KINDS:
        detected = f" (detected: {kind}, {source.detected})" if source.detected else ""
        raise DataSourceError(
            f"data source {spec!r}{detected}: only image files can be streamed "
            f"({', '.join(k + ':PATH' for k in FILE_KINDS)}); {kind} data is loaded into memory"
        )
    listing = list_files(kind, path)
    name = source.label(spec, f"{kind} {path}")
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
