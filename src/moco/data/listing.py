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

A bare path (no ``KIND:``) is recognised by :func:`detect_layout`, with the rules above
read as a test: a folder whose sub-folders (at least two, or ``train/`` + ``val/``) all
hold images and which holds no loose image is a ``folder``; any other tree with images
is ``images`` (unlabelled); a text file whose first lines name image files is a
``filelist``. A tree of images that happen to be sorted into sub-folders (by date, say)
reads as classes: the detected kind is printed with its reason, and ``images:PATH``
forces the other reading.
"""

from __future__ import annotations

import os
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
_PEEK_BYTES = 1 << 16  # of a file, to tell a file list from anything else
_PEEK_LINES = 20  # entries of a file list checked for naming images


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


def detect_layout(path: Path) -> tuple[str, str] | None:
    """(kind, why) when the existing ``path`` reads as an image-file source (module
    docstring), else None; ``why`` says what was found, e.g. "3 class sub-folders".

    Cheap on large trees: each sub-folder is searched only until its first image, and a
    file only in its first :data:`_PEEK_BYTES`."""
    if path.is_file():
        return _detect_filelist(path)
    if not path.is_dir():
        return None
    held = next((s for s in ("val", "test") if (path / s).is_dir()), None)
    if (path / "train").is_dir() and held is not None:
        classes = _class_dirs(path / "train")
        if classes:
            return "folder", f"train/ and {held}/ with {_plural(len(classes), 'class sub-folder')}"
    root = path / "train" if (path / "train").is_dir() and _subdirs(path) == ["train"] else path
    classes = _class_dirs(root)
    if classes and len(classes) > 1:
        inside = "train/ with " if root != path else ""
        return "folder", f"{inside}{_plural(len(classes), 'class sub-folder')}"
    if not _has_image(path):
        return None
    return "images", _why_unlabelled(path)


def _class_dirs(root: Path) -> list[str] | None:
    """The sub-folders of ``root`` when each holds an image and no image lies loose in
    ``root`` (``folder:``'s layout), else None."""
    subdirs = _subdirs(root)
    if not subdirs or _loose_images(root):
        return None
    return subdirs if all(_has_image(root / d) for d in subdirs) else None


def _why_unlabelled(path: Path) -> str:
    """Why a tree with images is not one folder per class, for :func:`detect_layout`."""
    subdirs, loose = _subdirs(path), _loose_images(path)
    if not subdirs:
        return f"{_plural(len(loose), 'image file')}, no sub-folders: unlabelled"
    if loose:
        return (
            f"{_plural(len(loose), 'image')} beside {_plural(len(subdirs), 'sub-folder')}, "
            "not one folder per class: unlabelled"
        )
    if len(subdirs) == 1:
        return f"one sub-folder ({subdirs[0]}/), no classes to tell apart: unlabelled"
    empty = next(d for d in subdirs if not _has_image(path / d))
    return f"sub-folder {empty}/ holds no image, not one folder per class: unlabelled"


def _detect_filelist(path: Path) -> tuple[str, str] | None:
    """("filelist", why) when the text at the start of ``path`` names image files: each
    of its first :data:`_PEEK_LINES` entries has an image extension or is a file."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return None  # one image, not a list of them
    try:
        with path.open("rb") as f:
            raw = f.read(_PEEK_BYTES)
    except OSError:
        return None
    if b"\0" in raw:
        return None  # binary
    text = raw.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if len(raw) == _PEEK_BYTES:
        lines = lines[:-1]  # the last line may be cut short
    entries = [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]
    entries = entries[:_PEEK_LINES]
    if not entries or "\ufffd" in "".join(entries):
        return None
    labelled = 0
    for line in entries:
        m = _LABELLED_LINE.fullmatch(line)
        file = Path(m["path"] if m else line).expanduser()
        file = file if file.is_absolute() else path.parent / file
        if file.suffix.lower() not in IMAGE_EXTENSIONS and not file.is_file():
            return None
        labelled += m is not None
    how = "with labels" if labelled == len(entries) else "without labels"
    return "filelist", f"a text file of image paths, {how}"


def _has_image(root: Path) -> bool:
    """Whether an image file lies anywhere below ``root`` (hidden ones skipped). Stops at
    the first: a folder is read entry by entry (``os.scandir``), so a class folder of
    thousands of images costs a few entries, and sub-folders are searched only when the
    folder itself holds no image."""
    subdirs = []
    try:
        with os.scandir(root) as entries:
            for e in entries:
                if e.name.startswith("."):
                    continue
                if e.is_dir(follow_symlinks=False):  # as find_images: no loops
                    subdirs.append(e.path)
                elif Path(e.name).suffix.lower() in IMAGE_EXTENSIONS and e.is_file():
                    return True
    except OSError:
        return False
    return any(_has_image(Path(d)) for d in subdirs)


def _loose_images(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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
    loose = _loose_images(root)
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
