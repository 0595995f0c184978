"""The one kNN monitor (moco.eval.monitor.knn_monitor): exactly the numbers of the two
functions it replaces, each written out here as it was, on both data paths; and the
same accuracy from 2 processes (sharded extraction) as from one."""

from __future__ import annotations

import inspect
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from moco.augment.views import build_eval_transform
from moco.data import eval_batches, in_memory
from moco.data.decode import UnreadableImageWarning
from moco.data.eval_batches import FileEvalSplit, iter_center_crops
from moco.data.file_splits import FileSplits, list_source
from moco.data.in_memory import InMemoryData, TensorEvalSplit
from moco.data.interface import open_data
from moco.data.sources import load_source
from moco.data.streamed import StreamedData
from moco.encoders.base import as_encoder
from moco.encoders.resnet import build_encoder
from moco.errors import DataSourceError
from moco.eval.features import extract_features
from moco.eval.knn import knn_top1
from moco.eval.monitor import knn_accuracy, knn_monitor, split_features

from ..conftest import free_port, rank_env

CPU = torch.device("cpu")
MEAN, STD = (0.3,), (0.3,)


def _encoder(in_chans: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_encoder("resnet18", 8, cifar_stem=True, in_chans=in_chans, width=0.125)


def _forward(enc: torch.nn.Module, features: str):
    return as_encoder(enc).forward_features if features == "backbone" else enc


def _folder(root: Path, broken: bool) -> Path:
    """2 classes of coloured noise (red, blue), 30 images of varied sizes; 3 broken files."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("red", "blue")):
        (root / name).mkdir(parents=True)
        for i in range(15):
            a = rng.integers(0, 80, (20 + i, 24, 3), dtype=np.uint8)
            a[..., 0 if c == 0 else 2] += 150
            Image.fromarray(a).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    if broken:
        (root / "red" / "zero.png").write_bytes(b"")
        (root / "blue" / "text.jpg").write_text("not an image")
        (root / "blue" / "zero.jpg").write_bytes(b"")
    return root


# ------------------------------------------------------------------ today's two monitors


@torch.no_grad()
def _in_memory_reference(enc, data, size, features, k, t, batch_size=512):
    """knn_accuracy as it was: extract_features over both splits, then knn_top1."""
    transform = build_eval_transform(size, MEAN, STD, data.image_size)
    enc.eval()
    fwd = _forward(enc, features)
    train = extract_features(fwd, data.train_images, transform, batch_size, CPU)
    test = extract_features(fwd, data.test_images, transform, batch_size, CPU)
    enc.train()
    return train, test, knn_top1(train, data.train_labels, test, data.test_labels, k, t)


@torch.no_grad()
def _streamed_reference(enc, files: FileSplits, size, mean, std, k, t, batch_size=256):
    """knn_accuracy_files as it was: centre crops in batches, unreadable files left out."""
    transform = build_eval_transform(size, mean, std, size)
    enc.eval()
    fwd = as_encoder(enc).forward_features

    def encode(split):
        feats, labels = [], []
        for x, y in iter_center_crops(split, size, batch_size, 0, files.mode):
            feats.append(fwd(transform(x)).float())
            labels.append(y)
        return torch.cat(feats), torch.cat(labels)

    (train, train_y), (test, test_y) = encode(files.train), encode(files.test)
    enc.train()
    return train, train_y, test, test_y, knn_top1(train, train_y, test, test_y, k, t)


@pytest.mark.parametrize("features", ["backbone", "head"])
def test_in_memory_equals_knn_accuracy_as_it_was_bit_for_bit(tiny_idx, features):
    data = load_source(str(tiny_idx))
    enc = _encoder(1)
    enc.train()
    ref_train, ref_test, ref = _in_memory_reference(enc, data, 32, features, 20, 0.1)
    assert enc.training  # reference leaves it as it found it, so must the monitor
    top1 = knn_monitor(enc, InMemoryData(data), 32, MEAN, STD, 20, 0.1, features, CPU, 0)
    assert top1 == ref and enc.training
    assert knn_accuracy(enc, data, 32, MEAN, STD, 20, 0.1, features) == ref
    enc.eval()
    transform = build_eval_transform(32, MEAN, STD, data.image_size)
    train, labels = split_features(
        _forward(enc, features),
        TensorEvalSplit(data.train_images, data.train_labels),
        transform,
        CPU,
    )
    assert torch.equal(train, ref_train) and labels is data.train_labels
    test, _ = InMemoryData(data).eval_splits(32)[1], None
    assert torch.equal(split_features(_forward(enc, features), test, transform, CPU)[0], ref_test)


def test_in_memory_batches_are_extract_features_batches(tiny_idx, monkeypatch):
    default = inspect.signature(extract_features).parameters["batch_size"].default
    assert in_memory.EVAL_BATCH == default  # the same batches, so the same bits
    monkeypatch.setattr(in_memory, "EVAL_BATCH", 100)  # 256 images: 3 batches, the last short
    data = load_source(str(tiny_idx))
    enc = _encoder(1)
    ref_train, ref_test, ref = _in_memory_reference(enc, data, 28, "backbone", 5, 0.07, 100)
    assert knn_monitor(enc, InMemoryData(data), 28, MEAN, STD, 5, 0.07, "backbone", CPU, 0) == ref
    enc.eval()
    memory, _ = InMemoryData(data).eval_splits(28)
    transform = build_eval_transform(28, MEAN, STD, 28)
    got, _ = split_features(as_encoder(enc).forward_features, memory, transform, CPU)
    assert torch.equal(got, ref_train)


@pytest.mark.parametrize("batch_size", [256, 4])
def test_streamed_equals_knn_accuracy_files_as_it_was_bit_for_bit(
    tmp_path, monkeypatch, batch_size
):
    monkeypatch.setattr(eval_batches, "EVAL_BATCH", batch_size)  # 4: broken files mid-split
    files = list_source(f"folder:{_folder(tmp_path, broken=True)}", 0.3, 0)
    mean, std = (0.4, 0.3, 0.3), (0.2, 0.2, 0.25)
    enc = _encoder(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImageWarning)
        ref_train, ref_y, ref_test, ref_test_y, ref = _streamed_reference(
            enc, files, 16, mean, std, 5, 0.1, batch_size
        )
        assert len(ref_y) + len(ref_test_y) == 30  # the 3 broken files left out
        top1 = knn_monitor(enc, StreamedData(files), 16, mean, std, 5, 0.1, "backbone", CPU, 0)
        assert top1 == ref
        enc.eval()
        transform = build_eval_transform(16, mean, std, 16)
        fwd = as_encoder(enc).forward_features
        train, train_y = split_features(fwd, FileEvalSplit(files.train, 16, "RGB"), transform, CPU)
        test, test_y = split_features(fwd, FileEvalSplit(files.test, 16, "RGB"), transform, CPU)
    assert torch.equal(train, ref_train) and torch.equal(train_y, ref_y)
    assert torch.equal(test, ref_test) and torch.equal(test_y, ref_test_y)


def test_both_paths_score_the_same_images_alike(tmp_path):
    root = _folder(tmp_path, broken=False)
    mean, std = (0.4, 0.3, 0.3), (0.2, 0.2, 0.25)
    enc = _encoder(3)
    scores = [
        knn_monitor(enc, open_data(f"folder:{root}", 0.3, 0, 16, s), 16, mean, std, 5, 0.1,
                    "backbone", CPU, 0)
        for s in (False, True)
    ]  # fmt: skip
    # red against blue noise: even this random encoder is far above chance (1/2)
    assert scores[0] == scores[1] and scores[0] > 0.8


def test_a_split_with_no_readable_image_fails_clearly(tmp_path):
    (tmp_path / "a").mkdir()
    for i in range(3):
        (tmp_path / "a" / f"{i}.png").write_bytes(b"")
    split = FileEvalSplit([(p, 0) for p in sorted((tmp_path / "a").iterdir())], 8, "RGB")
    enc = _encoder(3).eval()
    transform = build_eval_transform(8, (0.5,) * 3, (0.5,) * 3, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImageWarning)
        with pytest.raises(DataSourceError, match="none of the 3 images"):
            split_features(as_encoder(enc).forward_features, split, transform, CPU)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    from .monitor_worker import measure

    data = _folder(tmp_path / "data", broken=True)
    out = tmp_path / "out"
    out.mkdir()
    script = Path(__file__).with_name("monitor_worker.py")
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(out), str(data)],
            env=rank_env(r, 2, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    try:
        logs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for r, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"rank {r} failed:\n{log}"
    one = measure(data)
    ranks = [torch.load(out / f"rank{r}.pt") for r in range(2)]
    for path in ("in_memory", "streamed"):
        for got in ranks:
            for (f, y), (f1, y1) in zip(got[path]["features"], one[path]["features"], strict=True):
                assert torch.equal(y, y1)  # the same images, unreadable ones left out alike
                assert torch.allclose(f, f1, atol=1e-5)  # other batches: not the same bits
            assert got[path]["top1"] == one[path]["top1"]
