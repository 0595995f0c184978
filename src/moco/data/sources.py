"""Where images come from: the bundled Fashion-MNIST subset, or a directory of IDX files.

Every source gives an :class:`ImageSplits`: uint8 (N, C, H, W) train and held-out images
with integer labels, kept in memory (these datasets are small; the augmentations then
run batched on the device).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from moco.data.idx import read_idx

BUNDLED = "bundled"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


class DataSourceError(ValueError):
    """The data source is missing, empty or not in a format we read."""


@dataclass
class ImageSplits:
    name: str
    train_images: torch.Tensor  # uint8 (N, C, H, W)
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor  # uint8 (M, C, H, W), held out from pre-training
    test_labels: torch.Tensor  # int64 (M,)
    held_out: str  # how the held-out split was made: "test split" or "10% of train, seed 0"

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    @property
    def num_classes(self) -> int:
        return int(self.train_labels.max().item()) + 1

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training images in [0, 1], for normalisation."""
        x = self.train_images.float().div(255.0)
        return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).tolist())


def load_source(spec: str, holdout_fraction: float = 0.1, seed: int = 0) -> ImageSplits:
    """``"bundled"`` or a directory holding IDX files (``train-images*``, ``train-labels*``,
    and optionally ``t10k-images*`` / ``t10k-labels*``). Without a test pair, a stratified
    ``holdout_fraction`` of the training images (drawn with ``seed``) is held out."""
    if spec == BUNDLED:
        root = resources.files("moco.data") / "bundled"
        with resources.as_file(root) as path:
            return _load_idx_dir(Path(path), "bundled Fashion-MNIST subset", holdout_fraction, seed)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataSourceError(f"data directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise DataSourceError(f"data source {str(path)!r} is not a directory of IDX files")
    return _load_idx_dir(path, str(path), holdout_fraction, seed)


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


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held) with ``fraction`` of every class held out, drawn with ``seed``."""
    if not 0.0 < fraction < 1.0:
        raise DataSourceError(f"holdout fraction must be in (0, 1), got {fraction}")
    g = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_held = max(1, round(fraction * len(idx)))
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return torch.sort(torch.cat(keep)).values, torch.sort(torch.cat(held)).values
