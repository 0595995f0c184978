"""Reader for STL-10 in the official binary release.

Format (https://cs.stanford.edu/~acoates/stl10/, "Binary files"): ``stl10_binary/``
holds ``train_X.bin`` (5,000 images), ``train_y.bin``, ``test_X.bin`` (8,000),
``test_y.bin``, ``unlabeled_X.bin`` (100,000) and ``class_names.txt``. An X file is raw
uint8 with no header: each 96x96 image is three channels, red then green then blue, and
each channel is stored column-major (Fortran order, the release was written from
MATLAB). So (N, 3, 96, 96) read row-major is indexed [n, c, column, row], and swapping
the last two axes makes the images upright, as the official reader does
(``np.transpose(np.reshape(x, (-1, 3, 96, 96)), (0, 3, 2, 1))`` to (N, H, W, C)). A y
file is one uint8 label per image, 1..10; we shift them to 0..9.

STL-10 was made for learning from unlabelled images (Coates et al., AISTATS 2011): the
100k unlabelled images are for pre-training only (``ImageSplits.unlabelled_images``);
the kNN memory and the linear probe use the 5k labelled training images; the official
test split is the held-out split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from moco.data.splits import ImageSplits
from moco.errors import DataSourceError

FOLDER = "stl10_binary"
SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE  # 27,648 bytes per image
NUM_CLASSES = 10
FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin")


def load_stl10(path: Path) -> ImageSplits:
    """STL-10 from ``path``: the extracted ``stl10_binary/`` folder or the folder that
    contains it. Images uint8 (N, 3, 96, 96), upright; labels 0..9."""
    if not path.is_dir():
        raise DataSourceError(
            f"{path}: STL-10 is read from the extracted {FOLDER}/ folder (or the folder "
            f"that contains it), not from a file; extract the archive with tar xzf"
        )
    root = path / FOLDER if (path / FOLDER).is_dir() else path
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        found = sorted(p.name for p in root.iterdir())[:12]
        raise DataSourceError(
            f"{root}: not an STL-10 folder, missing {', '.join(missing)}; expected "
            f"{', '.join(FILES)} (the {FOLDER}/ folder of the official binary release) "
            f"or the folder that contains it (found: {', '.join(found) or 'nothing'})"
        )
    train_images = read_images(root / "train_X.bin")
    train_labels = read_labels(root / "train_y.bin", len(train_images))
    test_images = read_images(root / "test_X.bin")
    test_labels = read_labels(root / "test_y.bin", len(test_images))
    names = root / "class_names.txt"
    classes = None
    if names.is_file():  # one name per line
        classes = tuple(line.strip() for line in names.read_text().splitlines() if line.strip())
    if classes is not None and len(classes) != NUM_CLASSES:
        raise DataSourceError(f"{names}: expected {NUM_CLASSES} class names, got {len(classes)}")
    return ImageSplits(
        f"STL-10 at {root}",
        train_images,
        train_labels,
        test_images,
        test_labels,
        "test split",
        classes=classes,
        unlabelled_images=read_images(root / "unlabeled_X.bin"),
    )


def read_images(path: Path) -> torch.Tensor:
    """An STL-10 X file -> uint8 (N, 3, 96, 96), upright (rows, then columns)."""
    size = path.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise DataSourceError(
            f"{path}: {size} bytes is not a whole number of 3x96x96 images "
            f"({IMAGE_BYTES} bytes each): the file is truncated or not an STL-10 X file"
        )
    # Mapped, not read: the one copy made is the upright, contiguous one (2.8 GB for
    # the unlabelled file).
    columns = np.memmap(path, dtype=np.uint8, mode="r", shape=(size // IMAGE_BYTES, 3, SIDE, SIDE))
    return torch.from_numpy(np.ascontiguousarray(columns.transpose(0, 1, 3, 2)))


def read_labels(path: Path, n: int) -> torch.Tensor:
    """An STL-10 y file of ``n`` labels 1..10 -> int64 (n,) labels 0..9."""
    y = np.fromfile(path, dtype=np.uint8)
    if len(y) != n:
        raise DataSourceError(f"{path}: {len(y)} labels for {n} images")
    if y.min() < 1 or y.max() > NUM_CLASSES:
        raise DataSourceError(f"{path}: labels must be 1..{NUM_CLASSES}, got {y.min()}..{y.max()}")
    return torch.from_numpy(y.astype(np.int64) - 1)
