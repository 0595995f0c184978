"""Reader for CIFAR-10 and CIFAR-100 in the official python-pickle release.

Format (https://www.cs.toronto.edu/~kriz/cifar.html, "Dataset layout"): the archives
``cifar-10-python.tar.gz`` and ``cifar-100-python.tar.gz`` hold one folder each,

- ``cifar-10-batches-py/``: ``data_batch_1`` ... ``data_batch_5`` (10,000 training
  images each), ``test_batch`` (10,000) and ``batches.meta``;
- ``cifar-100-python/``: ``train`` (50,000), ``test`` (10,000) and ``meta``.

Each file is a pickled dict, written by Python 2, so it is read with
``encoding="bytes"`` and its keys are byte strings. ``b"data"`` is a uint8 numpy array
(N, 3072): each row one 32x32 image as three planes, red then green then blue, each
plane row-major, so a row reshapes to (3, 32, 32) as it is. The labels are a list of N
ints, ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (the 100 classes of CIFAR-100; we
do not use its 20 ``b"coarse_labels"``). The meta file names the classes,
``b"label_names"`` / ``b"fine_label_names"``.

We read the folder, the folder that contains it, or the archive itself (members are read
straight from the tarfile, nothing is extracted to disk). The official test split is the
held-out split. Pickle can run code while it loads, so the files are unpickled with a
loader that accepts only what these files contain (dicts, lists, numpy arrays): a file
that asks for anything else fails instead of running it.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from moco.data.splits import ImageSplits
from moco.errors import DataSourceError

SIDE = 32
ROW = 3 * SIDE * SIDE  # 3072 bytes: the R, G and B planes of one image


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its files and labels (names as in the release)."""

    title: str
    folder: str  # the folder inside the archive
    archive: str  # the official archive's file name (for messages)
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: bytes
    names_key: bytes

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, self.test, self.meta)


LAYOUTS = {
    "cifar10": CifarLayout(
        "CIFAR-10",
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        b"labels",
        b"label_names",
    ),
    "cifar100": CifarLayout(
        "CIFAR-100",
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        ("train",),
        "test",
        "meta",
        b"fine_labels",
        b"fine_label_names",
    ),
}

# The globals a CIFAR pickle may name: numpy's array / dtype reconstruction (the module is
# numpy.core in the official files, numpy._core when numpy 2 wrote them) and the
# function through which Python 3 stores bytes in a protocol-2 pickle.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR file holds only dicts, lists "
                "and numpy arrays"
            )
        return super().find_class(module, name)


def load_cifar(path: Path, kind: str) -> ImageSplits:
    """CIFAR-10 (``kind="cifar10"``) or CIFAR-100 (``"cifar100"``) from ``path``: the
    extracted folder, its parent, or the ``.tar.gz`` archive.

    Train: all training batches, uint8 (N, 3, 32, 32) in file order; held out: the
    official test split. ``classes`` are the names from the meta file.
    """
    layout = LAYOUTS[kind]
    raw = _read_archive(path, layout) if path.is_file() else _read_folder(path, layout)
    meta = _unpickle(*raw[layout.meta])
    classes = _class_names(meta, layout.names_key, raw[layout.meta][1])
    parts = [_batch(*raw[f], layout.label_key, len(classes)) for f in layout.train]
    train_images = torch.cat([x for x, _ in parts])
    train_labels = torch.cat([y for _, y in parts])
    test_images, test_labels = _batch(*raw[layout.test], layout.label_key, len(classes))
    if len(train_images) == 0 or len(test_images) == 0:
        raise DataSourceError(f"{layout.title} at {path}: the training or test split is empty")
    return ImageSplits(
        f"{layout.title} at {path}",
        train_images,
        train_labels,
        test_images,
        test_labels,
        "test split",
        classes=classes,
    )


def _expected(layout: CifarLayout) -> str:
    return (
        f"expected {', '.join(layout.files)} (the {layout.folder}/ folder of the official "
        f"python release), the folder that contains it, or {layout.archive}"
    )


def _read_folder(path: Path, layout: CifarLayout) -> dict[str, tuple[bytes, str]]:
    """File name -> (bytes, where) from the layout's folder: ``path`` or ``path/folder``."""
    root = path / layout.folder if (path / layout.folder).is_dir() else path
    missing = [f for f in layout.files if not (root / f).is_file()]
    if missing:
        found = sorted(p.name for p in root.iterdir())[:12]
        raise DataSourceError(
            f"{root}: not a {layout.title} folder, missing {', '.join(missing)}; "
            f"{_expected(layout)} (found: {', '.join(found) or 'nothing'})"
        )
    out = {}
    for f in layout.files:
        try:
            out[f] = ((root / f).read_bytes(), str(root / f))
        except OSError as err:
            raise DataSourceError(f"{root / f}: cannot read ({err})") from err
    return out


def _read_archive(path: Path, layout: CifarLayout) -> dict[str, tuple[bytes, str]]:
    """File name -> (bytes, where) for the layout's members ``folder/NAME`` (or a bare
    ``NAME``) of the tar archive ``path``, read in one pass over the stream."""
    wanted = set(layout.files)
    out: dict[str, tuple[bytes, str]] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                p = PurePosixPath(member.name.removeprefix("./"))
                if not member.isfile() or p.name not in wanted:
                    continue
                if p.parent not in (PurePosixPath("."), PurePosixPath(layout.folder)):
                    continue
                f = tar.extractfile(member)
                assert f is not None  # a regular file always has a stream
                out[p.name] = (f.read(), f"{path}:{member.name}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataSourceError(f"{path}: cannot read the tar archive ({err})") from err
    missing = [f for f in layout.files if f not in out]
    if missing:
        raise DataSourceError(
            f"{path}: not a {layout.title} archive, no member {layout.folder}/{missing[0]} "
            f"({len(missing)} of {len(layout.files)} files missing); {_expected(layout)}"
        )
    return out


def _unpickle(raw: bytes, where: str) -> dict[bytes, Any]:
    try:
        obj = _DataOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    # Any failure to unpickle means the file is not a valid CIFAR file: truncated pickles
    # raise EOFError or UnpicklingError, damaged numpy arrays ValueError or TypeError, ...
    except Exception as err:
        raise DataSourceError(f"{where}: corrupt or truncated CIFAR pickle ({err})") from err
    if not isinstance(obj, dict):
        raise DataSourceError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _get(d: dict[bytes, Any], key: bytes, where: str) -> Any:
    if key not in d:
        raise DataSourceError(f"{where}: no key {key!r} (keys: {sorted(map(repr, d))})")
    return d[key]


def _class_names(meta: dict[bytes, Any], key: bytes, where: str) -> tuple[str, ...]:
    names = _get(meta, key, where)
    if not isinstance(names, list) or not names or not all(isinstance(n, bytes) for n in names):
        raise DataSourceError(f"{where}: {key!r} is not a list of class names")
    return tuple(n.decode("utf-8") for n in names)


def _batch(
    raw: bytes, where: str, label_key: bytes, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled batch -> images uint8 (N, 3, 32, 32), labels int64 (N,)."""
    d = _unpickle(raw, where)
    data, labels = _get(d, b"data", where), _get(d, label_key, where)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataSourceError(f"{where}: b'data' must be a uint8 array (N, {ROW}), got {got}")
    if data.shape[1] != ROW:
        raise DataSourceError(
            f"{where}: b'data' has shape {data.shape}; each row must hold one 32x32 RGB "
            f"image ({ROW} values)"
        )
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise DataSourceError(f"{where}: {label_key!r} is not a list of ints ({err})") from err
    if y.shape != (len(data),):
        raise DataSourceError(f"{where}: {len(data)} images but {label_key!r} has shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataSourceError(
            f"{where}: labels must be in [0, {num_classes}), got [{y.min()}, {y.max()}]"
        )
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, SIDE, SIDE).copy())
    return images, torch.from_numpy(y)
