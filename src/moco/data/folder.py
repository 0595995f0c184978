"""Image files decoded into memory: ``folder:PATH``, ``images:PATH`` and ``filelist:FILE``.

The files a source names come from :mod:`moco.data.listing` (the layouts are described
there); a source without a held-out split holds out ``holdout_fraction`` of what was read
(:func:`moco.data.splits.hold_out`: stratified when labelled, else random; seeded).

Every image is decoded into memory (the batched in-memory path of the engine, as for the
other sources; so this suits datasets of up to some 100k images at a small
``load_size``): it is converted to "RGB" or "L" (:mod:`moco.data.decode`), its shorter
side resized to ``load_size`` (bilinear, antialiased) and the centre ``load_size`` x
``load_size`` square cut out, in one resampling step (:mod:`moco.data.center_crop`).
Images smaller than ``load_size`` are upscaled the same way (rather than padded or
dropped: the random-resized crop of pre-training resamples them anyway). The source has 1
channel when every image is greyscale and 3 otherwise (greyscale images then repeat their
one channel). Unreadable files are skipped with one
:class:`~moco.data.decode.UnreadableImageWarning` each, and the count is part of the
source's name ("skipped 3 unreadable files of 120").

Decoding runs on :func:`~moco.data.center_crop.decode_threads` threads (Pillow releases
the GIL while it decodes and resamples), in file order, so the images, the warnings and
the report are the same as one thread gives. Datasets too large for memory are streamed
instead (:mod:`moco.data.stream`), from the same listing.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from moco.data.center_crop import decode_center_crop, decode_threads, map_ordered
from moco.data.decode import Decoded, warn_unreadable
from moco.data.listing import list_files
from moco.data.splits import ImageSplits, hold_out
from moco.errors import DataSourceError


@dataclass
class FilesReport:
    """What decoding the files found: for `moco data check` and the skipped count."""

    files: int = 0
    modes: Counter[str] = field(default_factory=Counter)  # before conversion
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    unreadable: list[Decoded] = field(default_factory=list)

    def add(self, d: Decoded) -> None:
        self.files += 1
        if d.image is None:
            self.unreadable.append(d)
            return
        self.modes[d.mode] += 1
        self.widths.append(d.size[0])
        self.heights.append(d.size[1])

    @property
    def skipped(self) -> str:
        """``"skipped 3 unreadable files of 120"``, or "" when every file was read."""
        n = len(self.unreadable)
        return f"skipped {n} unreadable file{'s' if n != 1 else ''} of {self.files}" if n else ""

    def size_summary(self) -> list[str]:
        """Min / median / max of the original widths and heights, and the modes seen."""
        if not self.widths:
            return ["image sizes: no readable images"]
        out = []
        for name, v in (("width", self.widths), ("height", self.heights)):
            out.append(f"{name:<6} min {min(v)}  median {statistics.median(v):g}  max {max(v)}")
        modes = ", ".join(f"{m} {n}" for m, n in self.modes.most_common())
        return [*out, f"modes (before conversion): {modes}"]


def load_files(
    kind: str, path: Path, load_size: int | None, holdout_fraction: float, seed: int
) -> tuple[ImageSplits, FilesReport]:
    """The images of a ``folder`` / ``images`` / ``filelist`` source, decoded at
    ``load_size``, and the report of what decoding found (module docstring)."""
    if load_size is None or load_size < 1:
        raise DataSourceError(
            f"{kind}:{path}: image files are resized when loaded and need a positive "
            f"load_size (data.load_size, 0 = augment.size), got {load_size}"
        )
    listing = list_files(kind, path)
    report = FilesReport()
    train_x, train_y = _decode_all(listing.train, load_size, report)
    test_x: list[np.ndarray] = []
    test_y: list[int] = []
    if listing.test is not None:
        test_x, test_y = _decode_all(listing.test, load_size, report)
    name = f"{kind} {path}" + (f" ({report.skipped})" if report.skipped else "")
    if not train_x:
        raise DataSourceError(
            f"{kind}:{path}: none of the {report.files} image files could be read"
        )
    images = _stack(train_x + test_x, load_size)
    labels = torch.tensor(train_y + test_y, dtype=torch.int64)
    n = len(train_x)
    if listing.test is not None:
        if not test_x:
            raise DataSourceError(f"{kind}:{path}: no readable image in the held-out split")
        splits = ImageSplits(
            name, images[:n], labels[:n], images[n:], labels[n:], listing.held_out,
            classes=listing.classes,
        )  # fmt: skip
        return splits, report
    if n < 2:
        raise DataSourceError(
            f"{kind}:{path}: {n} readable image; at least 2 are needed to hold one out"
        )
    keep, held, how = hold_out(labels, holdout_fraction, seed)
    splits = ImageSplits(
        name, images[keep], labels[keep], images[held], labels[held], how, classes=listing.classes
    )
    return splits, report


def _decode_all(
    entries: Iterable[tuple[Path, int]],
    size: int,
    report: FilesReport,
    threads: int | None = None,
) -> tuple[list[np.ndarray], list[int]]:
    """Decoded (size, size[, 3]) uint8 arrays and their labels; unreadable files are
    reported, warned about once each and left out. Decodes on ``threads`` threads
    (None: :func:`decode_threads`); results, warnings and the report come in file order."""
    entries = list(entries)
    xs, ys = [], []
    threads = decode_threads() if threads is None else threads
    decoded = map_ordered(decode_center_crop, [p for p, _ in entries], size, threads)
    for (_, label), (d, arr) in zip(entries, decoded, strict=True):
        report.add(d)
        if arr is None:
            warn_unreadable(d)
            continue
        xs.append(arr)
        ys.append(label)
    return xs, ys


def _stack(arrays: list[np.ndarray], size: int) -> torch.Tensor:
    """uint8 (N, C, size, size): C = 1 when every image is greyscale, else 3."""
    if all(a.ndim == 2 for a in arrays):
        return torch.from_numpy(np.stack(arrays)[:, None])
    out = np.empty((len(arrays), size, size, 3), np.uint8)
    for i, a in enumerate(arrays):
        out[i] = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
