"""The streaming path for file datasets (moco.data.stream), on images built here with
Pillow (every odd mode, broken files) and real photos from skimage.data."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from moco.augment.two_stage import CropFlip
from moco.augment.views import PRESETS
from moco.data.decode import UnreadableImageWarning
from moco.data.folder import load_files
from moco.data.loader import InMemoryLoader
from moco.data.sources import DataSourceError
from moco.data.stream import (
    CropFlipDataset,
    GlobalBatchSampler,
    StreamingLoader,
    crop_flip_file,
    iter_center_crops,
    list_source,
)

SPEC = PRESETS["v2"]


def _rgb(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> Path:
    """A random colour image (w, h) = ``size``; JPEG or PNG by the suffix."""
    a = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def _broken(root: Path) -> list[Path]:
    """A zero-byte file, a truncated JPEG and a text file named .jpg."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty.png").write_bytes(b"")
    whole = _rgb(root / "whole.jpg", 99, (64, 48)).read_bytes()
    (root / "whole.jpg").unlink()
    (root / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "text.jpg").write_text("not an image")
    return [root / "empty.png", root / "truncated.jpg", root / "text.jpg"]


def _stream(loader: StreamingLoader, epoch: int) -> list[tuple[torch.Tensor, ...]]:
    loader.set_epoch(epoch)
    return [(*views, labels, idx) for views, labels, idx in loader]


# ----------------------------------------------------------------------------- sampler


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
        seen = [i for r in ranks for b in r for i in b]
        assert len(seen) == len(set(seen)) == (n // batch) * batch  # each index at most once
    again = GlobalBatchSampler(n, batch, seed=3, num_replicas=1, rank=0)
    assert list(again) == list(GlobalBatchSampler(n, batch, seed=3, num_replicas=1, rank=0))
    e0 = list(again)
    again.set_epoch(1)
    assert list(again) != e0  # each epoch reshuffles


def test_sampler_rejects_bad_sizes_and_ranks():
    with pytest.raises(ValueError, match="not divisible by 3"):
        GlobalBatchSampler(20, 8, num_replicas=3, rank=0)
    with pytest.raises(ValueError, match="larger than the dataset"):
        GlobalBatchSampler(4, 8, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="rank 2 is not in"):
        GlobalBatchSampler(20, 8, num_replicas=2, rank=2)
    assert GlobalBatchSampler(20, 8).num_replicas == 1  # one process: no group


# ----------------------------------------------------------------------------- views


def test_views_equal_crop_flip_on_plain_files_and_use_reduced_decoding(tmp_path):
    data = pytest.importorskip("skimage.data")
    photo = tmp_path / "astronaut.jpg"  # 512 x 512: every DCT scale divides it
    Image.fromarray(data.astronaut()).save(photo, quality=90)
    files = [photo, _rgb(tmp_path / "a.png", 0, (40, 30)), _rgb(tmp_path / "b.jpg", 1, (400, 320))]
    crop = CropFlip(SPEC, 32, seed=5)
    reductions = set()
    for path in files:
        for index in range(6):
            views, error = crop_flip_file(crop, path, index, epoch=2)
            assert error == "" and views is not None
            ref = crop(path, index, 2)
            assert all(torch.equal(v, r) for v, r in zip(views, ref, strict=True))
            assert all(v.shape == (3, 32, 32) and v.dtype == torch.uint8 for v in views)
            with Image.open(path) as img:
                reductions.add(crop.plan(img.size[1], img.size[0], index, 2)[2])
    assert reductions > {1}  # some views were decoded at a reduced JPEG scale


def test_exif_orientation_is_applied_before_cropping(tmp_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50, 3), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # stored 50 x 30, displayed rotated: 30 x 50
    img.save(tmp_path / "phone.png", exif=exif)
    upright = ImageOps.exif_transpose(Image.open(tmp_path / "phone.png")).convert("RGB")
    crop = CropFlip(SPEC, 16)
    views, _ = crop_flip_file(crop, tmp_path / "phone.png", 3, 1)
    assert views is not None and upright.size == (30, 50)
    assert all(torch.equal(v, r) for v, r in zip(views, crop(upright, 3, 1), strict=True))


def test_odd_modes_are_converted_as_the_in_memory_path_does(tmp_path):
    Image.new("CMYK", (30, 20), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("P", (30, 20), 7).save(tmp_path / "p.png")
    Image.new("RGBA", (30, 20), (10, 20, 30, 0)).save(tmp_path / "rgba.png")  # transparent
    Image.fromarray(np.full((20, 30), 65535, np.uint16)).save(tmp_path / "deep.png")
    Image.new("L", (30, 20), 77).save(tmp_path / "grey.png")
    files = [(tmp_path / f, 0) for f in ("cmyk.jpg", "p.png", "rgba.png", "deep.png", "grey.png")]
    samples = [CropFlipDataset(files, CropFlip(SPEC, 8))[i] for i in range(len(files))]
    assert all(s.ok and s.views[0].shape == (3, 8, 8) for s in samples)
    cmyk, _, rgba, deep, grey = (s.views[0] for s in samples)
    assert cmyk[0].float().mean() > 200 and cmyk[1].float().mean() < 60  # cyan-free = red
    assert (rgba == 255).all()  # composited onto white, not black
    assert (deep == 255).all()  # 16 bit scaled by its depth
    assert (grey == 77).all()  # greyscale repeats its channel
    grey_only = CropFlipDataset(files[-1:], CropFlip(SPEC, 8, mode="L"))[0]
    assert grey_only.views[0].shape == (1, 8, 8)


# ----------------------------------------------------------------------------- loader


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[tuple[Path, int]]:
    root = tmp_path_factory.mktemp("photos")
    files = []
    for i in range(12):
        size = (40 + 8 * i, 30 + 4 * i)
        path = _rgb(root / f"c{i % 2}" / f"{i}.{'jpg' if i % 3 else 'png'}", i, size)
        files.append((path, i % 2))
    return files


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
    broken = _broken(tmp_path)
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
    broken = _broken(tmp_path)
    loader = StreamingLoader([(p, -1) for p in broken], CropFlip(SPEC, 8), 3, workers=0)
    with pytest.raises(DataSourceError, match=r"no file of a batch of 3.*empty.png.*0 bytes"):
        list(loader)


# ----------------------------------------------------------------------------- listing


def _unique_images(root: Path, counts: dict[str, int], mode: str = "RGB") -> None:
    """root/<class>/i.png; image number k is filled with the value k (to find it again)."""
    k = 0
    for name, n in counts.items():
        for i in range(n):
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.new(mode, (12 + i, 10), (k,) * 3 if mode == "RGB" else k).save(
                root / name / f"{i}.png"
            )
            k += 1


def _ids(x: torch.Tensor) -> list[int]:
    return sorted(x[:, 0, 0, 0].tolist())


def test_list_source_holds_out_the_files_load_files_holds_out(tmp_path):
    _unique_images(tmp_path / "lab", {"a": 7, "b": 12, "c": 5})
    for spec, kind in (
        (f"folder:{tmp_path / 'lab'}", "folder"),
        (f"images:{tmp_path / 'lab'}", "images"),
    ):
        ref, _ = load_files(kind, Path(spec.split(":", 1)[1]), 6, 0.25, 4)
        got = list_source(spec, 0.25, 4)
        assert got.held_out == ref.held_out and got.mode == "RGB"
        for files, images in ((got.train, ref.train_images), (got.test, ref.test_images)):
            ids = sorted(int(Image.open(p).getpixel((0, 0))[0]) for p, _ in files)
            assert ids == _ids(images)
    lab = list_source(f"folder:{tmp_path / 'lab'}", 0.25, 4)
    assert lab.classes == ("a", "b", "c") and lab.num_classes == 3 and lab.labelled
    assert not list_source(f"images:{tmp_path / 'lab'}", 0.25, 4).labelled


def test_list_source_mode_and_train_val_layout(tmp_path):
    for split in ("train", "val"):
        _unique_images(tmp_path / split, {"x": 3, "y": 2}, mode="L")
    got = list_source(f"folder:{tmp_path}")
    assert got.mode == "L" and got.channels == 1 and got.held_out == "val/ folder"
    assert [y for _, y in got.train] == [0, 0, 0, 1, 1] and len(got.test) == 5
    _rgb(tmp_path / "val" / "y" / "colour.png", 0)
    assert list_source(f"folder:{tmp_path}").mode == "RGB"


def test_list_source_fails_at_once_on_missing_empty_and_in_memory_sources(tmp_path):
    with pytest.raises(DataSourceError, match="nope.*does not exist.*one sub-folder per class"):
        list_source(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="empty: holds no image files"):
        list_source(f"images:{tmp_path / 'empty'}")
    with pytest.raises(DataSourceError, match="only image files can be streamed"):
        list_source(f"cifar10:{tmp_path}")
    with pytest.raises(DataSourceError, match="only image files can be streamed"):
        list_source("bundled")
    _broken(tmp_path / "bad")
    with pytest.raises(DataSourceError, match="none of 3 files sampled.*could be read"):
        list_source(f"images:{tmp_path / 'bad'}")


# ----------------------------------------------------------------------------- evaluation


def test_center_crops_and_mean_std_match_the_in_memory_path(tmp_path):
    data = pytest.importorskip("skimage.data")
    root = tmp_path / "mix"
    for i in range(7):
        _rgb(root / "a" / f"{i}.jpg", i, (30 + 5 * i, 50 - 3 * i))
    (root / "b").mkdir()
    Image.fromarray(data.camera()).save(root / "b" / "camera.png")  # greyscale
    Image.fromarray(data.coffee()).save(root / "b" / "coffee.jpg")
    Image.new("P", (9, 13), 3).save(root / "b" / "p.png")
    ref, _ = load_files("folder", root, 20, 0.3, 1)
    got = list_source(f"folder:{root}", 0.3, 1)
    for workers in (0, 2):
        batches = list(iter_center_crops(got.train, 20, 4, workers, mode=got.mode))
        x = torch.cat([b[0] for b in batches])
        assert [len(b[0]) for b in batches] == [4, 3]  # 7 of the 10 files are training files
        assert torch.equal(x, ref.train_images)
        assert torch.equal(torch.cat([b[1] for b in batches]), ref.train_labels)
    mean, std = got.mean_std(20, max_images=512)
    ref_mean, ref_std = ref.mean_std()
    assert np.allclose(mean, ref_mean, atol=1e-6) and np.allclose(std, ref_std, atol=1e-6)
    few = got.mean_std(20, max_images=3)  # a seeded sample: deterministic, and close
    assert few == got.mean_std(20, max_images=3) and len(few[0]) == 3


def test_center_crops_leave_out_unreadable_files_with_one_warning_each(photos, tmp_path):
    files = photos[:3] + [(p, 5) for p in _broken(tmp_path)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(iter_center_crops(files, 8, 2, workers=0))
    assert [len(y) for _, y in batches] == [2, 1]  # the all-broken last batch is skipped
    assert sum(issubclass(w.category, UnreadableImageWarning) for w in caught) == 3
