"""Where images come from: the bundled Fashion-MNIST subset, IDX, CIFAR-10/100 or STL-10.

Every source gives an :class:`ImageSplits`: uint8 (N, C, H, W) train and held-out images
with integer labels, kept in memory (these datasets are small; the augmentations then
run batched on the device). A source is named by a string (``data.source``):

- ``bundled``: the Fashion-MNIST subset shipped with the package;
- ``PATH`` or ``idx:PATH``: a directory of IDX files (MNIST / Fashion-MNIST layout);
- ``cifar10:PATH`` / ``cifar100:PATH``: the official python-pickle release
  (:mod:`moco.data.cifar`), as the extracted folder, its parent or the ``.tar.gz``;
- ``stl10:PATH``: the official binary release (:mod:`moco.data.stl10`), whose 100k
  unlabelled images join the pre-training set only (``ImageSplits.pretrain_images``);
- ``folder:PATH`` (one sub-folder per class, or ``train/`` + ``val/``), ``images:PATH``
  (any tree of images, unlabelled: labels -1) and ``filelist:FILE`` (one path and
  optional label per line): image files (:mod:`moco.data.folder`), decoded and resized
  to ``load_size`` x ``load_size`` when loaded.

This module only dispatches: it names the kinds and reads IDX itself; the other formats
have their readers, which build :class:`~moco.data.splits.ImageSplits` (the type, the
held-out rules and the constants live in that leaf, re-exported here).
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from moco.data.cifar import load_cifar
from moco.data.folder import load_files
from moco.data.idx import read_idx
from moco.data.splits import (
    BUNDLED,
    FASHION_MNIST_CLASSES,
    FILE_KINDS,
    KINDS,
    ImageSplits,
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
    "load_source",
    "parse_source",
    "stratified_split",
]


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
    kind, path = parse_source(spec)
    if kind in FILE_KINDS:
        return load_files(kind, path, load_size, holdout_fraction, seed)[0]
    if not path.exists():
        what = "data directory" if kind == "idx" else f"{kind} data source"
        raise DataSourceError(f"{what} {str(path)!r} does not exist")
    if kind == "idx":
        if not path.is_dir():
            raise DataSourceError(f"data source {str(path)!r} is not a directory of IDX files")
        return _load_idx_dir(path, str(path), holdout_fraction, seed)
    if kind in ("cifar10", "cifar100"):
        return load_cifar(path, kind)
    return load_stl10(path)


def parse_source(spec: str) -> tuple[str, Path]:
    """``"KIND:PATH"`` -> (KIND, PATH); a bare path is ``("idx", PATH)``.

    A ``word:`` prefix that is not one of ``KINDS`` is an error (a typo such as
    ``cifar:`` must not be read as a directory name), unless the whole string is an
    existing path.
    """
    kind, sep, rest = spec.partition(":")
    if sep and kind in KINDS:
        if not rest:
            raise DataSourceError(f"data source {spec!r} names no path after {kind + ':'!r}")
        return kind, Path(rest).expanduser()
    if sep and re.fullmatch(r"[A-Za-z][\w-]+", kind) and not Path(spec).expanduser().exists():
        raise DataSourceError(
            f"unknown data source kind {kind!r} in {spec!r}; accepted: {BUNDLED!r}, a directory "
            f"of IDX files, or KIND:PATH with KIND one of {', '.join(KINDS)}"
        )
    return "idx", Path(spec).expanduser()


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
    keep, held = stratified_split(train_labels, holdout_fraction, seed)
    return ImageSplits(
        name,
        train_images[keep],
        train_labels[keep],
        train_images[held],
        train_labels[held],
        f"{holdout_fraction:.0%} of train, stratified, seed {seed}",
    )
