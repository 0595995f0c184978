"""The one batching rule (moco.data.sampling) and the two loaders that follow it."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from moco.augment.two_stage import CropFlip
from moco.augment.views import PRESETS
from moco.data.loader import InMemoryLoader
from moco.data.sampling import GlobalBatches, GlobalBatchSampler, epoch_order
from moco.data.stream import StreamingLoader


def test_epoch_order_is_a_seeded_randperm_per_epoch():
    g = torch.Generator().manual_seed(3 * 100_003 + 2)
    assert torch.equal(epoch_order(50, seed=3, epoch=2), torch.randperm(50, generator=g))
    assert torch.equal(epoch_order(50, 3, 2), epoch_order(50, 3, 2))
    assert not torch.equal(epoch_order(50, 3, 2), epoch_order(50, 3, 1))
    assert sorted(epoch_order(50, 0, 0).tolist()) == list(range(50))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sampler_is_the_in_memory_rule_split_across_ranks(world):
    n, batch = 50, 12
    dummy = torch.zeros(n, 1, 1, 1, dtype=torch.uint8)
    for epoch in (0, 1):
        one = GlobalBatchSampler(n, batch, seed=3, num_replicas=1, rank=0)
        one.set_epoch(epoch)
        whole = list(one)
        ranks = []
        for r in range(world):
            s = GlobalBatchSampler(n, batch, seed=3, num_replicas=world, rank=r)
            s.set_epoch(epoch)
            ranks.append(list(s))
            ref = InMemoryLoader(dummy, torch.zeros(n), batch, seed=3, num_replicas=world, rank=r)
            ref.set_epoch(epoch)
            assert ranks[r] == [idx.tolist() for _, _, idx in ref]  # InMemoryLoader's order
            assert len(s) == len(ranks[r]) == n // batch
            assert all(len(b) == batch // world for b in ranks[r])  # equal slices
        # the ranks' slices of batch k, in rank order, are the one-process batch k
        for k, b in enumerate(whole):
            assert [i for r in range(world) for i in ranks[r][k]] == b
        # ... which are the epoch's order cut into global batches (drop_last)
        order = epoch_order(n, 3, epoch).tolist()
        assert whole == [order[k * batch : (k + 1) * batch] for k in range(n // batch)]
        seen = [i for r in ranks for b in r for i in b]
        assert len(seen) == len(set(seen)) == (n // batch) * batch  # each index at most once
    again = GlobalBatchSampler(n, batch, seed=3, num_replicas=1, rank=0)
    assert list(again) == list(GlobalBatchSampler(n, batch, seed=3, num_replicas=1, rank=0))
    e0 = list(again)
    again.set_epoch(1)
    assert list(again) != e0  # each epoch reshuffles


@pytest.mark.parametrize("world", [1, 2, 3])
def test_both_loaders_give_identical_index_orders(world, tmp_path):
    """The real loaders, not only their samplers: streamed files and in-memory tensors."""
    n, batch = 14, 6
    files = []
    for i in range(n):
        Image.new("L", (9, 9), i).save(tmp_path / f"{i}.png")
        files.append((tmp_path / f"{i}.png", i % 3))
    images = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    labels = torch.tensor([y for _, y in files])
    crop = CropFlip(PRESETS["v2"], 4, mode="L")
    for r in range(world):
        mem = InMemoryLoader(images, labels, batch, seed=5, num_replicas=world, rank=r)
        stream = StreamingLoader(files, crop, batch, seed=5, workers=0, num_replicas=world, rank=r)
        assert len(mem) == len(stream) == n // batch
        for epoch in (0, 3):
            mem.set_epoch(epoch)
            stream.set_epoch(epoch)
            got = [(idx.tolist(), y.tolist()) for _, y, idx in stream]
            assert got == [(idx.tolist(), y.tolist()) for _, y, idx in mem]
            assert all(len(i) == batch // world for i, _ in got)


def test_sampler_rejects_bad_sizes_and_ranks():
    with pytest.raises(ValueError, match="not divisible by 3"):
        GlobalBatchSampler(20, 8, num_replicas=3, rank=0)
    with pytest.raises(ValueError, match="larger than the dataset"):
        GlobalBatchSampler(4, 8, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="rank 2 is not in"):
        GlobalBatchSampler(20, 8, num_replicas=2, rank=2)
    assert GlobalBatchSampler(20, 8).num_replicas == 1  # one process: no group
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        GlobalBatches(20, 0)
    with pytest.raises(ValueError, match="needs drop_last=True"):
        GlobalBatches(20, 4, num_replicas=2, rank=0, drop_last=False)


def test_loader_epochs_are_seeded_and_drop_last():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    loader = InMemoryLoader(x, torch.arange(10), batch_size=4, seed=1)
    assert len(loader) == 2
    loader.set_epoch(0)
    a = [idx.tolist() for _, _, idx in loader]
    b = [idx.tolist() for _, _, idx in loader]
    loader.set_epoch(1)
    c = [idx.tolist() for _, _, idx in loader]
    assert a == b and a != c
    assert all(len(set(batch)) == 4 for batch in a)
    for images, labels, idx in loader:  # images and labels are those of the indices
        assert torch.equal(images.flatten(), x[idx].flatten()) and torch.equal(labels, idx)


def test_in_order_batches_keep_the_last_short_batch():
    loader = InMemoryLoader(
        torch.zeros(10, 1, 1, 1), torch.zeros(10), 4, shuffle=False, drop_last=False
    )
    assert len(loader) == 3
    assert [idx.tolist() for _, _, idx in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
