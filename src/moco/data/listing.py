"""Which files an image-file source names, with their labels, before anything is decoded.

- ``folder:PATH``: labelled, the ImageNet / torchvision ``ImageFolder`` layout. One
  sub-folder per class (labels 0..C-1 in sorted name order), images at any depth below
  it. If PATH holds ``train/`` and ``val/`` (or ``test/``; ``val/`` wins when both are
  there), those are the training and held-out splits and ``val/`` uses ``train/``'s class
  names; otherwise the source has no held-out split and the caller holds out a fraction
  (:func:`moco.data.splits.hold_out`). A PATH holding only ``train/`` reads ``train/`` as
  the class root.
- ``images:PATH``: unlabelled, any tree of images (recursive). Labels are all -1 (no
  class can match them), there are no class names and no held-out split. Pre-training
  needs nothing more; kNN and linear evaluation need labels and refuse such data.
- ``filelist:FILE``: a text file, one image per line, optionally followed by whitespace
  and an integer label (``train/cat/1.jpg 3``). Relative paths are relative to FILE's
  folder; blank lines and ``#`` comments are skipped. Either every line has a label or
  none has (a mix is an error naming the first line that differs).

Folders are searched for the extensions of :data:`IMAGE_EXTENSIONS` (any case); hidden
files and folders (``.name``) and other extensions are ignored. A file list names its
files explicitly, so every line is read whatever its extension. Both the in-memory path
(:mod:`moco.data.folder`) and the streamed one (:mod:`moco.data.file_splits`) start from
this listing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from moco.errors import DataSourceError

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


@dataclass
class Listing:
    """What a file source names before anything is decoded: (path, label) per split."""

    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]] | None  # None: hold out a fraction of train
    classes: tuple[str, ...] | None
    held_out: str = ""  # how the given held-out split was found, e.g. "val/ folder"


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
