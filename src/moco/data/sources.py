"""Where images come from: the bundled Fashion-MNIST subset, IDX, CIFAR-10/100 or STL-10.

Every source gives an :class:`ImageSplits`: uint8 (N, C, H, W) train and held-out images
with integer labels, kept in memory (these datasets are small; the augmentations then
run batched on the device). A source is named by a string (``data.source``):

- ``bundled``: the Fashion-MNIST subset shipped with the package;
- ``idx:PATH``: a directory of IDX files (MNIST / Fashion-MNIST layout);
- ``cifar10:PATH`` / ``cifar100:PATH``: the official python-pickle release
  (:mod:`moco.data.cifar`), as the extracted folder, its parent or the ``.tar.gz``;
- ``stl10:PATH``: the official binary release (:mod:`moco.data.stl10`), whose 100k
  unlabelled images join the pre-training set only (``ImageSplits.pretrain_images``);
- ``folder:PATH`` (one sub-folder per class, or ``train/`` + ``val/``), ``images:PATH``
  (any tree of images, unlabelled: labels -1) and ``filelist:FILE`` (one path and
  optional label per line): image files (:mod:`moco.data.folder`), decoded and resized
  to ``load_size`` x ``load_size`` when loaded.

A bare ``PATH`` is read as what it holds (:func:`detect_source`): IDX files, a CIFAR
folder, its parent or archive, an STL-10 folder or its parent, or else the image-file
layouts (:func:`moco.data.listing.detect_layout`: class sub-folders -> ``folder``, any
other tree of images -> ``images``, a text file of image paths -> ``filelist``). The
data set's name then says what was chosen and why, e.g. ``photos/ (detected: folder, 3
class sub-folders)``; a path that is none of these is refused with the kinds and how to
name one.

This module only dispatches: it names the kinds and reads IDX itself; the other formats
have their readers, which build :class:`~moco.data.splits.ImageSplits` (the type, the
held-out rules and the constants live in that leaf, re-exported here).
"""

from __future__ import annotations

import dataclasses
import re
import tarfile
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from moco.data import stl10
from moco.data.cifar import LAYOUTS, load_cifar
from moco.data.folder import load_files
from moco.data.idx import read_idx
from moco.data.listing import IMAGE_EXTENSIONS, detect_layout
from moco.data.splits import (
    BUNDLED,
    FASHION_MNIST_CLASSES,
    FILE_KINDS,
    KINDS,
    ImageSplits,
    hold_out,
    stratified_split,
)
from moco.data.stl10 import load_stl10
from moco.errors import DataSourceError

__all__ = [  # ImageSplits, stratified_split and the constants are re-exported from splits
    "BUNDLED",
    "FASHION_MNIST_CLASSES",
    "KINDS",
    "DataSourceError",
    "ImageSplits",
    "Source",
    "detect_source",
    "load_source",
    "parse_source",
    "resolve_source",
    "stratified_split",
]

# How to name each kind, for the message that refuses a path of no recognisable kind.
KIND_HELP = (
    ("folder:DIR", "one sub-folder of images per class, e.g. DIR/cat/1.jpg"),
    ("images:DIR", "image files anywhere below DIR, unlabelled"),
    ("filelist:FILE", "a text file, one image path per line, optionally a label"),
    ("idx:DIR", "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]"),
    ("cifar10:PATH", "cifar-10-batches-py/, the folder holding it, or the .tar.gz"),
    ("cifar100:PATH", "cifar-100-python/, the folder holding it, or the .tar.gz"),
    ("stl10:DIR", "the extracted stl10_binary/ folder or the folder holding it"),
)
_TAR_PEEK = 16  # members of an archive looked at to recognise it


@dataclass(frozen=True)
class Source:
    """A parsed ``data.source``: its kind, its path and, for a bare path, why it was read
    as that kind ("" when ``KIND:`` named it)."""

    kind: str
    path: Path
    detected: str = ""

    def label(self, spec: str, name: str, extra: str = "") -> str:
        """The data set's name: ``name`` (the reader's) when the kind was named, else
        ``spec`` with the detected kind and why, e.g. ``photos/ (detected: folder, 3 class
        sub-folders)``; ``extra`` (e.g. the unreadable files skipped) joins the reason.

        A bare path read as IDX keeps its reader's name, the path itself: a bare path has
        meant an IDX directory since the first version, so there is nothing new to say,
        and result records (which keep the name) stay loadable with ``--data``."""
        if not self.detected or self.kind == "idx":
            return name
        why = f"{self.detected}; {extra}" if extra else self.detected
        return f"{spec} (detected: {self.kind}, {why})"


def load_source(
    spec: str, holdout_fraction: float = 0.1, seed: int = 0, load_size: int | None = None
) -> ImageSplits:
    """The images named by ``spec`` (module docstring: ``bundled``, ``PATH``, ``KIND:PATH``).

    An IDX directory holds ``train-images*``, ``train-labels*`` and optionally
    ``t10k-images*`` / ``t10k-labels*``; without a test pair, a stratified
    ``holdout_fraction`` of the training images (drawn with ``seed``) is held out. CIFAR
    and STL-10 always hold out their official test split. A missing path, or one without
    the files of its kind, fails at once with the files that were expected.

    Image-file sources (``folder``, ``images``, ``filelist``) need ``load_size``: the side
    their images are stored at (the files have any size; the others' is fixed). Their
    unreadable files are skipped, one warning each, and counted in the name.
    """
    if spec == BUNDLED:
        root = resources.files("moco.data") / "bundled"
        with resources.as_file(root) as path:
            data = _load_idx_dir(Path(path), "bundled Fashion-MNIST subset", holdout_fraction, seed)
        return dataclasses.replace(data, classes=FASHION_MNIST_CLASSES)
    source = resolve_source(spec)
    kind, path = source.kind, source.path
    if kind in FILE_KINDS:
        data, report = load_files(kind, path, load_size, holdout_fraction, seed)
        return dataclasses.replace(data, name=source.label(spec, data.name, report.skipped))
    if not path.exists():
        what = "data directory" if kind == "idx" else f"{kind} data source"
        raise DataSourceError(f"{what} {str(path)!r} does not exist")
    if kind == "idx":
        if not path.is_dir():
            raise DataSourceError(f"data source {str(path)!r} is not a directory of IDX files")
        data = _load_idx_dir(path, str(path), holdout_fraction, seed)
    elif kind in ("cifar10", "cifar100"):
        data = load_cifar(path, kind)
    else:
        data = load_stl10(path)
    return dataclasses.replace(data, name=source.label(spec, data.name))


def parse_source(spec: str) -> tuple[str, Path]:
    """``"KIND:PATH"`` -> (KIND, PATH); a bare path -> its detected kind
    (:func:`resolve_source`).

    A bare path that does not exist is ``("idx", PATH)``, the kind a bare path had before
    paths were recognised: a name for data that is not here (results name the data they
    were measured on), which fails when it is loaded.
    """
    if _bare(spec) and not Path(spec).expanduser().exists():
        return "idx", Path(spec).expanduser()
    source = resolve_source(spec)
    return source.kind, source.path


def resolve_source(spec: str) -> Source:
    """The :class:`Source` ``spec`` names: ``KIND:PATH`` as written, a bare path as what it
    holds (:func:`detect_source`).

    A ``word:`` prefix that is not one of ``KINDS`` is an error (a typo such as
    ``cifar:`` must not be read as a directory name), unless the whole string is an
    existing path.
    """
    kind, sep, rest = spec.partition(":")
    if sep and kind in KINDS:
        if not rest:
            raise DataSourceError(f"data source {spec!r} names no path after {kind + ':'!r}")
        return Source(kind, Path(rest).expanduser())
    path = Path(spec).expanduser()
    if not _bare(spec):
        raise DataSourceError(
            f"unknown data source kind {kind!r} in {spec!r}; accepted: {BUNDLED!r}, a path "
            f"(its kind is recognised), or KIND:PATH with KIND one of {', '.join(KINDS)}"
        )
    if not path.exists():
        raise DataSourceError(
            f"data source {str(path)!r} does not exist (a path, or KIND:PATH with KIND one "
            f"of {', '.join(KINDS)})"
        )
    return detect_source(path)


def _bare(spec: str) -> bool:
    """Whether ``spec`` is a path without a ``KIND:`` prefix: no ``word:`` prefix, or
    one that is part of an existing path (``runs/v2:final``)."""
    kind, sep, _ = spec.partition(":")
    if not sep:
        return True
    if kind in KINDS:
        return False
    return not re.fullmatch(r"[A-Za-z][\w-]+", kind) or Path(spec).expanduser().exists()


# ----------------------------------------------------------------------------- detection


def detect_source(path: Path) -> Source:
    """What the existing ``path`` holds, as a :class:`Source` with the reason (module
    docstring). Data-set releases are looked for first (IDX, CIFAR, STL-10), then the
    image-file layouts. A path holding two releases, or nothing recognisable, is refused
    with what was found and how to name a kind."""
    found = _detect_releases(path)
    if len(found) > 1:
        what = "; ".join(f"{s.kind} ({s.detected})" for s in found)
        name = ", ".join(f"{s.kind}:{s.path}" for s in found)
        raise DataSourceError(
            f"{path}: holds more than one data set: {what}; name the one to read: {name}"
        )
    if found:
        return found[0]
    layout = detect_layout(path)
    if layout is not None:
        return Source(layout[0], path, layout[1])
    kinds = "; ".join(f"{k} ({what})" for k, what in KIND_HELP)
    raise DataSourceError(
        f"{path}: cannot tell what data this is ({_what_is(path)}); name its kind as "
        f"KIND:PATH, one of: {kinds}; or {BUNDLED!r} for the bundled Fashion-MNIST subset"
    )


def _detect_releases(path: Path) -> list[Source]:
    """The data-set releases ``path`` holds (one, normally), each with its reason."""
    if path.is_file():
        kind = _archive_kind(path)
        return [] if kind is None else [Source(kind, path, f"a tar archive of {kind}")]
    found = []
    idx = [p.name for p in path.glob("*ubyte*") if p.name.startswith(("train-", "t10k-"))]
    if any(n.startswith("train-") for n in idx):
        test = "a t10k test pair" if any(n.startswith("t10k-") for n in idx) else "no test pair"
        found.append(Source("idx", path, f"IDX training files, {test}"))
    for kind, layout in LAYOUTS.items():
        files = (layout.meta,) if kind == "cifar100" else layout.files  # "train" is too common
        if (path / layout.folder).is_dir():
            found.append(Source(kind, path, f"holds {layout.folder}/"))
        elif any((path / f).is_file() for f in files):
            found.append(Source(kind, path, f"{layout.title} python files"))
        elif (path / layout.archive).is_file():
            found.append(Source(kind, path / layout.archive, f"holds {layout.archive}"))
    if (path / stl10.FOLDER).is_dir():
        found.append(Source("stl10", path, f"holds {stl10.FOLDER}/"))
    elif any((path / f).is_file() for f in stl10.FILES):
        found.append(Source("stl10", path, "STL-10 binary files"))
    return found


def _archive_kind(path: Path) -> str | None:
    """The release (cifar10, cifar100 or stl10) when ``path`` is a tar archive whose first
    members are of that release, else None (not a tar archive, or another one)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for i, member in enumerate(tar):
                kind = _member_kind(PurePosixPath(member.name.removeprefix("./")))
                if kind is not None or i + 1 == _TAR_PEEK:
                    return kind
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return None
    return None


def _member_kind(p: PurePosixPath) -> str | None:
    top = p.parts[0] if p.parts else ""
    for kind, layout in LAYOUTS.items():
        if top == layout.folder or (kind == "cifar10" and p.name in layout.files):
            return kind
    if top == stl10.FOLDER or p.name in stl10.FILES:
        return "stl10"
    return None


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _what_is(path: Path) -> str:
    """A few words on what an unrecognised ``path`` is, for the refusal."""
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return "one image file; pass the folder that holds the images"
        if "ubyte" in path.name:
            return "one IDX file; pass the folder that holds the IDX files"
        if _is_tar(path):
            return "a tar archive of neither CIFAR release; extract it and pass the folder"
        return "a file that is neither a CIFAR archive nor a text file listing image paths"
    entries = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
    if not entries:
        return "an empty folder"
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    n = len(entries)
    return f"a folder of {n} entr{'y' if n == 1 else 'ies'} and no image files: {shown}"


def _find(root: Path, prefix: str) -> Path | None:
    hits = sorted(p for p in root.iterdir() if p.name.startswith(prefix) and "ubyte" in p.name)
    if len(hits) > 1:
        raise DataSourceError(f"{root}: several files match {prefix}*: {[p.name for p in hits]}")
    return hits[0] if hits else None


def _images(path: Path) -> torch.Tensor:
    arr = read_idx(path)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4):
        raise DataSourceError(
            f"{path}: expected uint8 images (N, H, W[, C]), got {arr.dtype} {arr.shape}"
        )
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(1) if arr.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


def _labels(path: Path, n: int) -> torch.Tensor:
    arr = read_idx(path)
    if arr.ndim != 1 or len(arr) != n:
        raise DataSourceError(f"{path}: expected {n} labels, got shape {arr.shape}")
    return torch.from_numpy(arr.astype(np.int64))


def _load_idx_dir(root: Path, name: str, holdout_fraction: float, seed: int) -> ImageSplits:
    tr_x, tr_y = _find(root, "train-images"), _find(root, "train-labels")
    if tr_x is None or tr_y is None:
        raise DataSourceError(
            f"{root}: no IDX training pair found; expected files named "
            "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]"
        )
    train_images = _images(tr_x)
    train_labels = _labels(tr_y, len(train_images))
    if len(train_images) == 0:
        raise DataSourceError(f"{tr_x}: holds no images")
    te_x, te_y = _find(root, "t10k-images"), _find(root, "t10k-labels")
    if te_x is not None and te_y is not None:
        test_images = _images(te_x)
        test_labels = _labels(te_y, len(test_images))
        return ImageSplits(name, train_images, train_labels, test_images, test_labels, "test split")
    keep, held, how = hold_out(train_labels, holdout_fraction, seed)
    return ImageSplits(
        name, train_images[keep], train_labels[keep], train_images[held], train_labels[held], how
    )
