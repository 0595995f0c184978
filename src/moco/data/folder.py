"""Image files as a data source: ``folder:PATH``, ``images:PATH`` and ``filelist:FILE``.

- ``folder:PATH``: labelled, the ImageNet / torchvision ``ImageFolder`` layout. One
  sub-folder per class (labels 0..C-1 in sorted name order), images at any depth below
  it. If PATH holds ``train/`` and ``val/`` (or ``test/``; ``val/`` wins when both are
  there), those are the training and held-out splits and ``val/`` uses ``train/``'s class
  names; otherwise a stratified ``holdout_fraction`` of the images is held out (seeded).
  A PATH holding only ``train/`` reads ``train/`` as the class root.
- ``images:PATH``: unlabelled, any tree of images (recursive). Labels are all -1 (no
  class can match them), there are no class names, and a seeded random
  ``holdout_fraction`` is held out. Pre-training needs nothing more; kNN and linear
  evaluation need labels and refuse such data.
- ``filelist:FILE``: a text file, one image per line, optionally followed by whitespace
  and an integer label (``train/cat/1.jpg 3``). Relative paths are relative to FILE's
  folder; blank lines and ``#`` comments are skipped. Either every line has a label or
  none has (a mix is an error naming the first line that differs).

Folders are searched for the extensions of :data:`IMAGE_EXTENSIONS` (any case); hidden
files and folders (``.name``) and other extensions are ignored. A file list names its
files explicitly, so every line is read whatever its extension.

Every image is decoded into memory (the batched in-memory path of the engine, as for the
other sources; so this suits datasets of up to some 100k images at a small
``load_size``): it is converted to "RGB" or "L" (:mod:`moco.data.decode`), its shorter
side resized to ``load_size`` (bilinear, antialiased) and the centre ``load_size`` x
``load_size`` square cut out, in one resampling step. Images smaller than ``load_size``
are upscaled the same way (rather than padded or dropped: the random-resized crop of
pre-training resamples them anyway). The source has 1 channel when every image is
greyscale and 3 otherwise (greyscale images then repeat their one channel). Unreadable
files are skipped with one :class:`~moco.data.decode.UnreadableImageWarning` each, and
the count is part of the source's name ("skipped 3 unreadable files of 120").

Decoding runs on :func:`decode_threads` threads (Pillow releases the GIL while it decodes
and resamples), in file order, so the images, the warnings and the report are the same
as one thread gives. Datasets too large for memory are streamed instead
(:mod:`moco.data.stream`), from the same listing.
"""

from __future__ import annotations

import os
import re
import statistics
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from moco.data.decode import Decoded, read_image, warn_unreadable
from moco.data.sources import (
    BUNDLED,
    DataSourceError,
    ImageSplits,
    load_source,
    parse_source,
    stratified_split,
)

FILE_KINDS = ("folder", "images", "filelist")
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
_LAYOUT = {
    "folder": "folder:PATH expects one sub-folder per class holding its images (at any "
    "depth), e.g. PATH/cat/1.jpg, PATH/dog/a/2.png; or PATH/train/<class>/... with "
    "PATH/val/<class>/... (or test/)",
    "images": "images:PATH expects image files anywhere below PATH "
    f"({', '.join(sorted(IMAGE_EXTENSIONS))})",
    "filelist": "filelist:FILE expects a text file with one image path per line, optionally "
    "followed by an integer label",
}
_LABELLED_LINE = re.compile(r"(?P<path>.*\S)\s+(?P<label>[+-]?\d+)")
_In = TypeVar("_In")
_Out = TypeVar("_Out")


@dataclass
class Listing:
    """What a file source names before anything is decoded: (path, label) per split."""

    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]] | None  # None: hold out a fraction of train
    classes: tuple[str, ...] | None
    held_out: str = ""  # how the given held-out split was found, e.g. "val/ folder"


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


def hold_out(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(kept, held-out) indices of a source without a held-out split, and how they were
    drawn: stratified when every image is labelled, else random; seeded."""
    if bool((labels >= 0).all()):
        keep, held = stratified_split(labels, fraction, seed)
        return keep, held, f"{fraction:.0%} of train, stratified, seed {seed}"
    keep, held = random_split(len(labels), fraction, seed)
    return keep, held, f"{fraction:.0%} of the images, random, seed {seed}"


def list_files(kind: str, path: Path) -> Listing:
    """The files a source names, with labels; fails at once with the expected layout."""
    if not path.exists():
        raise DataSourceError(f"{kind} data source {str(path)!r} does not exist; {_LAYOUT[kind]}")
    if kind == "filelist":
        if not path.is_file():
            raise DataSourceError(f"{path}: not a file; {_LAYOUT[kind]}")
        return _read_filelist(path)
    if not path.is_dir():
        raise DataSourceError(f"{path}: not a directory; {_LAYOUT[kind]}")
    if kind == "images":
        files = find_images(path)
        if not files:
            raise DataSourceError(f"{path}: holds no image files; {_LAYOUT[kind]}")
        return Listing([(f, -1) for f in files], None, None)
    held = next((path / s for s in ("val", "test") if (path / s).is_dir()), None)
    if (path / "train").is_dir() and held is not None:
        classes, train = _class_folders(path / "train")
        test = _class_files(held, classes)
        return Listing(train, test, classes, f"{held.name}/ folder")
    root = path / "train" if (path / "train").is_dir() and _subdirs(path) == ["train"] else path
    classes, train = _class_folders(root)
    return Listing(train, None, classes)


def find_images(root: Path) -> list[Path]:
    """Image files below ``root`` at any depth, sorted; hidden files and folders skipped."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).parts
        if any(part.startswith(".") for part in rel):
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            out.append(p)
    return out


def _subdirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_folders(root: Path) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    classes = tuple(_subdirs(root))
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not classes:
        hint = f" ({len(loose)} images lie in it: read them unlabelled as images:{root})"
        raise DataSourceError(
            f"{root}: no class sub-folders{hint if loose else ''}; {_LAYOUT['folder']}"
        )
    if loose:
        raise DataSourceError(
            f"{root}: {len(loose)} image(s) (e.g. {loose[0].name}) lie outside every class "
            f"folder; move them into one, or read the tree unlabelled as images:{root}"
        )
    return classes, _class_files(root, classes)


def _class_files(root: Path, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """(file, label) of every image in ``root/<class>/``; a class folder of ``root`` that
    is not in ``classes``, or one with no images, is an error."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = [d for d in _subdirs(root) if d not in index]
    if unknown:
        raise DataSourceError(
            f"{root}: class folder(s) {', '.join(unknown[:5])} are not among the "
            f"{len(classes)} classes of the training split"
        )
    out: list[tuple[Path, int]] = []
    for c in _subdirs(root):
        files = find_images(root / c)
        if not files and root.name not in ("val", "test"):
            raise DataSourceError(f"{root / c}: class folder holds no image files")
        out += [(f, index[c]) for f in files]
    if not out:
        raise DataSourceError(f"{root}: holds no image files; {_LAYOUT['folder']}")
    return out


def _read_filelist(path: Path) -> Listing:
    entries: list[tuple[Path, int]] = []
    labelled: tuple[int, bool] | None = None  # (line number, has label) of the first entry
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):  # whole-line comments: paths may hold "#"
            continue
        m = _LABELLED_LINE.fullmatch(line)
        file, label = (m["path"], int(m["label"])) if m else (line, -1)
        if m and label < 0:
            raise DataSourceError(f"{path}:{number}: label {label} is negative")
        if labelled is None:
            labelled = (number, m is not None)
        elif labelled[1] != (m is not None):
            first, has = labelled
            raise DataSourceError(
                f"{path}:{number}: {'no' if has else 'a'} label, but line {first} "
                f"{'has one' if has else 'has none'}; label every line or none"
            )
        p = Path(file).expanduser()
        entries.append((p if p.is_absolute() else path.parent / p, label))
    if not entries:
        raise DataSourceError(f"{path}: lists no images; {_LAYOUT['filelist']}")
    return Listing(entries, None, None)


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


def decode_center_crop(path: Path, size: int) -> tuple[Decoded, np.ndarray | None]:
    """One file read as the in-memory path stores it: (what reading found, the uint8
    (size, size) or (size, size, 3) centre crop, or None when the file is unreadable).
    JPEGs decode at a reduced scale whose sides stay >= ``size``."""
    d = read_image(path, draft_size=size)
    if d.image is None:
        return d, None
    return d, np.asarray(resize_center_crop(d.image, size))


def decode_threads() -> int:
    """Threads for decoding image files: min(8, CPUs this process may use)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cpus or 1))


def map_ordered(
    fn: Callable[[_In, int], _Out], items: Sequence[_In], size: int, threads: int
) -> Iterator[_Out]:
    """``fn(item, size)`` for every item, in order, on ``threads`` threads.

    At most ``4 * threads`` results wait to be consumed, so decoding a large folder holds a
    few dozen decoded images at a time, not the whole folder. One thread: a plain loop.
    """
    if threads <= 1 or len(items) <= 1:
        yield from (fn(x, size) for x in items)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="moco-decode") as pool:
        pending: deque[Future[_Out]] = deque()
        for x in items:
            pending.append(pool.submit(fn, x, size))
            if len(pending) >= 4 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """The shorter side resized to ``size`` and the centre square kept: one bilinear
    (antialiased) resampling of the centre square of the original. Upscales small images."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    box = (left, top, left + side, top + side)
    return img.resize((size, size), Image.Resampling.BILINEAR, box=box)


def _stack(arrays: list[np.ndarray], size: int) -> torch.Tensor:
    """uint8 (N, C, size, size): C = 1 when every image is greyscale, else 3."""
    if all(a.ndim == 2 for a in arrays):
        return torch.from_numpy(np.stack(arrays)[:, None])
    out = np.empty((len(arrays), size, size, 3), np.uint8)
    for i, a in enumerate(arrays):
        out[i] = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def random_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held) with a seeded random ``fraction`` of ``range(n)`` held out."""
    if not 0.0 < fraction < 1.0:
        raise DataSourceError(f"holdout fraction must be in (0, 1), got {fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_held = min(n - 1, max(1, round(fraction * n)))
    return torch.sort(perm[n_held:]).values, torch.sort(perm[:n_held]).values


def check_source(spec: str, load_size: int, holdout_fraction: float = 0.1, seed: int = 0) -> str:
    """The text of `moco data check SPEC`: kind and path, images per split and per class,
    and for file sources the original sizes and modes and every unreadable file with its
    reason. Raises :class:`DataSourceError` only when the source itself cannot be read."""
    if spec == BUNDLED:
        kind, path = "bundled", Path("(shipped with the package)")
    else:
        kind, path = parse_source(spec)
    report: FilesReport | None = None
    if kind in FILE_KINDS:
        data, report = load_files(kind, path, load_size, holdout_fraction, seed)
    else:
        data = load_source(spec, holdout_fraction, seed)
    c, h, w = data.train_images.shape[1:]
    lines = [f"source: {kind} {path}", f"held out: {data.held_out}"]
    if report is not None:
        lines.append(f"stored: uint8 {c}x{h}x{w} per image (load size {load_size}); "
                     f"{'greyscale' if c == 1 else 'RGB'}")  # fmt: skip
    else:
        lines.append(f"images: uint8 {c}x{h}x{w}")
    splits = [("train", data.train_labels), ("held-out", data.test_labels)]
    lines += [f"{name:<9} {len(y):>8} images" for name, y in splits]
    if data.unlabelled_images is not None:
        lines.append(
            f"{'unlabelled':<9} {len(data.unlabelled_images):>8} images (pre-training only)"
        )
    labels = torch.cat([data.train_labels, data.test_labels])
    if bool((labels < 0).all()):
        lines.append("classes: none (unlabelled)")
    else:
        k = int(labels.max()) + 1
        names = data.classes or tuple(str(i) for i in range(k))
        width = max(len(n) for n in names)
        tr, te = (torch.bincount(y[y >= 0], minlength=k).tolist() for _, y in splits)
        lines.append(f"classes: {k} (label name: train / held-out)")
        lines += [f"  {i:>3} {names[i]:<{width}} {tr[i]:>7} / {te[i]}" for i in range(k)]
    if report is not None:
        lines += [f"image sizes before resizing ({report.files - len(report.unreadable)} read):"]
        lines += [f"  {s}" for s in report.size_summary()]
        lines.append(f"unreadable: {report.skipped or f'none of {report.files} files'}")
        lines += [f"  {d.path}: {d.error}" for d in report.unreadable]
    return "\n".join(lines)
