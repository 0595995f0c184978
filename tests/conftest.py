"""Shared fixtures: tiny IDX datasets cut from the bundled subset, small encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from moco.data.idx import write_idx
from moco.data.sources import load_source


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make_idx_dir(root: Path, n_train: int, n_test: int) -> Path:
    """A directory of gzipped IDX files with the first images of the bundled subset."""
    data = load_source("bundled")
    root.mkdir(parents=True, exist_ok=True)
    for prefix, x, y, n in (
        ("train", data.train_images, data.train_labels, n_train),
        ("t10k", data.test_images, data.test_labels, n_test),
    ):
        if n == 0:
            continue
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x[:n, 0].numpy())
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y[:n].numpy().astype(np.uint8))
    return root


@pytest.fixture
def tiny_idx(tmp_path: Path) -> Path:
    return make_idx_dir(tmp_path / "tiny", 256, 64)
