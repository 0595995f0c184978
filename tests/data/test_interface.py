"""The one data interface (moco.data.interface): both paths answer the same questions the
same way, and open_data picks the path the config asks for."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from moco.augment.views import PRESETS, build_photometric_transform, build_view_transform
from moco.data.contract import TrainBatch
from moco.data.decode import UnreadableImageWarning
from moco.data.in_memory import InMemoryData
from moco.data.interface import PretrainData, open_data
from moco.data.sources import load_source
from moco.data.streamed import StreamedData
from moco.errors import DataSourceError

from .image_files import broken_files, rgb

SPEC = PRESETS["v2"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """20 colour images in 2 classes, 40 x 30 and larger."""
    root = tmp_path_factory.mktemp("folder")
    for i in range(20):
        rgb(root / f"c{i % 2}" / f"{i}.png", i, (40 + i, 30 + i))
    return root


def _both(folder, seed=0) -> tuple[PretrainData, PretrainData]:
    spec = f"folder:{folder}"
    return open_data(spec, 0.25, seed, 12, stream=False), open_data(spec, 0.25, seed, 12, True)


def test_open_data_picks_the_path(folder):
    mem, streamed = _both(folder)
    assert isinstance(mem, InMemoryData) and isinstance(streamed, StreamedData)
    assert isinstance(open_data("bundled", 0.1, 0, None, stream=False), InMemoryData)
    with pytest.raises(DataSourceError, match="only image files can be streamed"):
        open_data("bundled", 0.1, 0, None, stream=True)


def test_both_paths_describe_the_same_source_alike(folder):
    mem, streamed = _both(folder, seed=3)
    for a in ("name", "held_out", "classes", "channels", "labelled", "num_pretrain"):
        assert getattr(mem, a) == getattr(streamed, a), a
    assert mem.num_held_out == streamed.num_held_out == 4  # 25% of each class of 10: 2
    assert mem.num_pretrain == 16 and mem.channels == 3 and mem.classes == ("c0", "c1")
    assert (
        mem.describe()
        == streamed.describe()
        == (f"folder {folder} (16 train / 4 held-out images, 25% of train, stratified, seed 3)")
    )
    splits = load_source(f"folder:{folder}", 0.25, 3, 12)
    assert mem.mean_std(99, 7) == splits.mean_std()  # all training images; size, seed unused
    files = streamed.files  # type: ignore[attr-defined]
    assert streamed.mean_std(12, 7) == files.mean_std(12, seed=7)


@pytest.mark.parametrize("batch_size", [4, 7])
def test_both_paths_take_the_same_steps_over_the_same_samples(folder, batch_size):
    mem, streamed = _both(folder)
    steps = []
    for data in (mem, streamed):
        batches = data.batches(SPEC, 8, batch_size, CPU, seed=5, workers=0)
        assert len(batches) == 16 // batch_size
        batches.set_epoch(2)
        steps.append([(b.index.tolist(), b.labels.tolist()) for b in batches])
        assert batches.unreadable_in_epoch == 0
    assert steps[0] == steps[1] and len(steps[0]) == 16 // batch_size


def test_train_batches_in_memory_repeat_the_batch_streamed_hold_two_crops(folder):
    mem, streamed = _both(folder)
    b, _ = list(mem.batches(SPEC, 8, 8, CPU, seed=1, workers=0))
    assert isinstance(b, TrainBatch) and b.crops[0] is b.crops[1]  # the same tensor
    assert b.crops[0].shape == (8, 3, 12, 12) and b.crops[0].dtype == torch.uint8
    assert b.labels.dtype == b.index.dtype == torch.int64 and b.labels.shape == b.index.shape == (
        8,
    )
    s, _ = list(streamed.batches(SPEC, 8, 8, CPU, seed=1, workers=0))
    q, k = s.crops
    assert q.shape == k.shape == (8, 3, 8, 8) and q.dtype == torch.uint8
    assert not torch.equal(q, k)  # two different crops of each file
    assert s.labels.dtype == s.index.dtype == torch.int64 and s.index.shape == (8,)


def test_transforms_are_those_of_each_path(folder):
    mem, streamed = _both(folder)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)
    assert repr(mem.view_transform(SPEC, 8, mean, std)) == repr(
        build_view_transform(SPEC, 8, 3, mean, std)
    )
    stage2 = streamed.view_transform(SPEC, 8, mean, std)
    assert repr(stage2.photometric) == repr(build_photometric_transform(SPEC, 8, 3, mean, std))
    # on a CPU the workers ran the photometric ops (Pillow): the device only normalises
    batches = streamed.batches(SPEC, 8, 2, torch.device("cpu"), seed=0, workers=0)
    assert batches.loader.dataset.crop.photometric is not None
    crops = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    expected = (crops.float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[
        :, None, None
    ]
    torch.testing.assert_close(stage2(crops), expected)
    x = torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8)
    assert mem.eval_transform(8, mean, std)(x).shape == (2, 3, 8, 8)  # stored at 12: resized
    crops = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert streamed.eval_transform(8, mean, std)(crops).shape == (2, 3, 8, 8)  # read at 8


def test_eval_splits_hold_the_same_images_on_both_paths(folder):
    mem, streamed = _both(folder)
    for a, b in zip(mem.eval_splits(12), streamed.eval_splits(12), strict=True):
        assert len(a) == len(b) and torch.equal(a.labels, b.labels)
        pos = torch.tensor([3, 0, 1, len(a) - 1, len(a) - 1])  # any positions, repeats too
        xa = torch.cat([x for x, ok in a.batches(pos, 0) if ok.all()])
        xb = torch.cat([x for x, ok in b.batches(pos, 0) if ok.all()])
        assert torch.equal(xa, xb) and len(xa) == 5


def test_unreadable_files_are_counted_streamed_and_labels_are_asked_on_both(tmp_path):
    for p in broken_files(tmp_path / "c0"):
        p.rename(tmp_path / "c0" / f"bad-{p.name}")
    for i in range(9):
        rgb(tmp_path / f"c{i % 2}" / f"{i}.png", i)
    data = open_data(f"folder:{tmp_path}", 0.25, 0, None, stream=True)
    batches = data.batches(SPEC, 8, 3, CPU, seed=0, workers=0)
    total = 0
    with pytest.warns(UnreadableImageWarning):
        for epoch in (0, 1):
            batches.set_epoch(epoch)
            assert sum(len(b.index) for b in batches) == 3 * len(batches)  # full batches
            total += batches.unreadable_in_epoch
    assert total > 0  # some broken file was drawn (and replaced) in the two epochs
    images = tmp_path / "unlabelled"
    images.mkdir()
    for i in range(6):
        Image.new("RGB", (9, 9), (i, i, i)).save(images / f"{i}.png")
    for stream in (False, True):
        assert not open_data(f"images:{images}", 0.5, 0, 8, stream).labelled
    assert data.labelled
    with pytest.warns(UnreadableImageWarning):  # skipped when loaded into memory
        assert open_data(f"folder:{tmp_path}", 0.25, 0, 8, stream=False).labelled
