"""STL-10 in the official binary format, built here in tmp_path (no download).

Per https://cs.stanford.edu/~acoates/stl10/: X files raw uint8, each image 3 channels of
96x96 stored column-major; y files one uint8 label 1..10 per image.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from moco import load_config, pretrain
from moco.data.in_memory import InMemoryData
from moco.data.sources import DataSourceError, load_source
from moco.engine import checkpoint as ckpt_io
from moco.engine.plan import plan_run

NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def _column_major(images: np.ndarray) -> bytes:
    """uint8 (N, 3, 96, 96) upright [n, c, row, col] -> the X-file bytes: offset
    c * 96 * 96 + col * 96 + row within an image (Fortran order per channel)."""
    return np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes()


def write_stl10(root: Path, n_train: int, n_test: int, n_unlabelled: int, seed: int = 0) -> Path:
    """``root/stl10_binary`` with random images; labels 1..10 in turn."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabelled)):
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        (folder / f"{split}_X.bin").write_bytes(_column_major(images))
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes(bytes(1 + i % 10 for i in range(n)))
    (folder / "class_names.txt").write_text("\n".join(NAMES) + "\n")
    return folder


def test_stl10_images_are_upright_and_labels_zero_based(tmp_path):
    folder = write_stl10(tmp_path, n_train=12, n_test=5, n_unlabelled=7)
    # Image 0 written byte by byte from the format description: red at (row 0, col 5),
    # green at (row 90, col 3), blue at (row 95, col 95). Read row-major, without the
    # transpose, red would land at (row 5, col 0).
    raw = bytearray((folder / "train_X.bin").read_bytes())
    raw[: 3 * 96 * 96] = bytes(3 * 96 * 96)
    raw[0 * 9216 + 5 * 96 + 0] = 255
    raw[1 * 9216 + 3 * 96 + 90] = 200
    raw[2 * 9216 + 95 * 96 + 95] = 100
    (folder / "train_X.bin").write_bytes(bytes(raw))

    data = load_source(f"stl10:{folder}")
    img = data.train_images[0]
    assert img.shape == (3, 96, 96) and img.dtype == torch.uint8
    assert img[0, 0, 5] == 255 and img[1, 90, 3] == 200 and img[2, 95, 95] == 100
    assert img.sum() == 255 + 200 + 100
    assert data.train_labels.tolist() == [i % 10 for i in range(12)]
    assert data.test_labels.tolist() == [i % 10 for i in range(5)]
    assert data.classes == tuple(NAMES) and data.held_out == "test split"

    # the official reader (stl10_input.py): reshape, then transpose to (N, 96, 96, 3)
    x = np.fromfile(folder / "test_X.bin", dtype=np.uint8)
    official = np.transpose(np.reshape(x, (-1, 3, 96, 96)), (0, 3, 2, 1))
    assert torch.equal(data.test_images.permute(0, 2, 3, 1), torch.from_numpy(official))


def test_unlabelled_images_are_for_pretraining_only(tmp_path):
    write_stl10(tmp_path, n_train=12, n_test=5, n_unlabelled=7)
    data = load_source(f"stl10:{tmp_path}")  # the folder that holds stl10_binary/
    assert data.train_images.shape == (12, 3, 96, 96) and len(data.train_labels) == 12
    assert data.unlabelled_images is not None and data.unlabelled_images.shape == (7, 3, 96, 96)
    pre, labels = data.pretrain_images, data.pretrain_labels
    assert data.num_pretrain_images == len(pre) == len(labels) == 19
    assert torch.equal(pre[:12], data.train_images)
    assert torch.equal(pre[12:], data.unlabelled_images)
    assert torch.equal(labels[:12], data.train_labels) and (labels[12:] == -1).all()
    assert data.num_classes == 10  # the -1 of unlabelled images never counts as a class

    cfg = load_config("default", ["optim.batch_size=4", "model.bn_splits=2", "optim.epochs=2"])
    derived = plan_run(cfg, InMemoryData(data), torch.device("cpu"))
    assert derived.train_images == 19 and derived.steps_per_epoch == 4
    assert derived.total_steps == 8 and derived.held_out_images == 5


def test_stl10_errors_name_the_file(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist"):
        load_source(f"stl10:{tmp_path / 'nope'}")
    with pytest.raises(DataSourceError, match="missing train_X.bin.*unlabeled_X.bin"):
        load_source(f"stl10:{tmp_path}")
    folder = write_stl10(tmp_path, n_train=4, n_test=3, n_unlabelled=2)
    x = (folder / "unlabeled_X.bin").read_bytes()
    (folder / "unlabeled_X.bin").write_bytes(x[:-100])  # truncated
    with pytest.raises(DataSourceError, match="unlabeled_X.bin: 55196 bytes.*truncated"):
        load_source(f"stl10:{folder}")
    (folder / "unlabeled_X.bin").write_bytes(x)
    (folder / "test_y.bin").write_bytes(bytes([1, 2]))  # 3 test images
    with pytest.raises(DataSourceError, match="test_y.bin: 2 labels for 3 images"):
        load_source(f"stl10:{folder}")
    (folder / "test_y.bin").write_bytes(bytes([0, 1, 2]))  # 0-based: not the official 1..10
    with pytest.raises(DataSourceError, match="test_y.bin: labels must be 1..10"):
        load_source(f"stl10:{folder}")


def test_pretrain_end_to_end_on_stl10_uses_the_unlabelled_images(tmp_path, tiny_config):
    write_stl10(tmp_path / "data", n_train=32, n_test=16, n_unlabelled=32)
    # 64 training images: batch 32 (2 steps), K no more than them, 32 px views, k 5
    cfg = tiny_config(
        "model.queue_size=64", "optim.batch_size=32", "augment.size=32", "eval.knn_k=5",
        data=f"stl10:{tmp_path}/data",
    )  # fmt: skip
    result = pretrain(cfg)
    derived = json.loads((result.run_dir / "derived.json").read_text())
    assert derived["train_images"] == 64 and derived["steps_per_epoch"] == 2
    assert derived["held_out_images"] == 16
    assert ckpt_io.load(result.checkpoint)["step"] == 2  # the loader ran over all 64
    assert result.knn_top1 is not None and result.checkpoint.is_file()
