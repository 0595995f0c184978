"""Rebuild src/moco/data/bundled/ from the Debian package dataset-fashion-mnist.

A stratified subset: 500 training and 100 test images per class (5000 / 1000), drawn
with a fixed seed, written as gzipped IDX files so the package's IDX reader loads them.
Usage: python scripts/make_bundled_data.py [/usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from moco.data.idx import read_idx, write_idx

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist")
DST = Path(__file__).resolve().parents[1] / "src" / "moco" / "data" / "bundled"


def subset(prefix: str, per_class: int, rng: np.random.Generator) -> None:
    x = read_idx(SRC / f"{prefix}-images-idx3-ubyte.gz")
    y = read_idx(SRC / f"{prefix}-labels-idx1-ubyte.gz")
    idx = np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(10)]
        )
    )
    write_idx(DST / f"{prefix}-images-idx3-ubyte.gz", x[idx])
    write_idx(DST / f"{prefix}-labels-idx1-ubyte.gz", y[idx])


if __name__ == "__main__":
    rng = np.random.default_rng(20200313)
    subset("train", 500, rng)
    subset("t10k", 100, rng)
