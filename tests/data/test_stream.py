"""The streamed pre-training loader (moco.data.stream) on image files built here with
Pillow, broken ones included."""

from __future__ import annotations

import warnings

import pytest
import torch

from moco.augment.two_stage import CropFlip
from moco.augment.views import PRESETS
from moco.data.decode import UnreadableImageWarning
from moco.data.sampling import GlobalBatchSampler
from moco.data.stream import StreamingLoader
from moco.errors import DataSourceError

from .image_files import broken_files

SPEC = PRESETS["v2"]


def _stream(loader: StreamingLoader, epoch: int) -> list[tuple[torch.Tensor, ...]]:
    loader.set_epoch(epoch)
    return [(*views, labels, idx) for views, labels, idx in loader]


def test_loader_is_deterministic_across_workers_and_reshuffles_per_epoch(photos):
    crop = CropFlip(SPEC, 24, seed=1)
    by_workers = {}
    for workers in (0, 2):
        loader = StreamingLoader(photos, crop, 4, seed=2, workers=workers)
        assert len(loader) == 3 and loader._loader.persistent_workers == (workers > 0)
        by_workers[workers] = [_stream(loader, 0), _stream(loader, 1), _stream(loader, 0)]
    for e in range(3):
        for a, b in zip(by_workers[0][e], by_workers[2][e], strict=True):
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    e0, e1, e0_again = by_workers[2]
    for a, b in zip(e0, e0_again, strict=True):  # the same epoch again: the same batches
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(e0[0][0], e1[0][0])  # new epoch: new order and new crops
    q, k, labels, idx = e0[0]
    assert q.shape == k.shape == (4, 3, 24, 24) and q.dtype == torch.uint8
    assert not torch.equal(q, k)  # two different views
    sampler = GlobalBatchSampler(len(photos), 4, seed=2)
    assert [b[3].tolist() for b in e0] == list(sampler)  # the sampler's order
    assert labels.tolist() == [photos[i][1] for i in idx.tolist()]


def test_unreadable_files_are_replaced_counted_per_epoch_and_warned_once(photos, tmp_path):
    broken = broken_files(tmp_path)
    files = photos[:9] + [(p, 0) for p in broken]  # 12 files, 4 batches of 3 use them all
    loader = StreamingLoader(files, CropFlip(SPEC, 16), 3, workers=2)
    bad = set(range(9, 12))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            for (q, k), labels, idx in loader:
                assert q.shape == k.shape == (3, 3, 16, 16) and len(labels) == len(idx) == 3
                assert not bad & set(idx.tolist())  # replaced by readable samples
                # a replacement is a copy (views and label) of a sample of its own batch
                for a in range(3):
                    for b in range(a):
                        if idx[a] == idx[b]:
                            assert torch.equal(q[a], q[b]) and torch.equal(k[a], k[b])
                            assert labels[a] == labels[b]
            assert loader.unreadable_in_epoch == 3
    ours = [w for w in caught if issubclass(w.category, UnreadableImageWarning)]
    assert len(ours) == 3  # once per file over the two epochs
    assert {str(p) for p in broken} == {str(w.message).split(": unreadable")[0] for w in ours}
    assert set(loader.unreadable) == set(broken)
    assert "0 bytes" in loader.unreadable[broken[0]]


def test_a_batch_with_no_readable_file_raises_naming_the_files(tmp_path):
    broken = broken_files(tmp_path)
    loader = StreamingLoader([(p, -1) for p in broken], CropFlip(SPEC, 8), 3, workers=0)
    with pytest.raises(DataSourceError, match=r"no file of a batch of 3.*empty.png.*0 bytes"):
        list(loader)
