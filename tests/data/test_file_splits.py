"""The listing of streamed sources (moco.data.file_splits): the same files and held-out
split as the in-memory path, the mode, and failures at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from moco.data.file_splits import list_source
from moco.data.folder import load_files
from moco.errors import DataSourceError

from .image_files import broken_files, pixel_ids, rgb, unique_images


def test_list_source_holds_out_the_files_load_files_holds_out(tmp_path):
    unique_images(tmp_path / "lab", {"a": 7, "b": 12, "c": 5})
    for spec, kind in (
        (f"folder:{tmp_path / 'lab'}", "folder"),
        (f"images:{tmp_path / 'lab'}", "images"),
    ):
        ref, _ = load_files(kind, Path(spec.split(":", 1)[1]), 6, 0.25, 4)
        got = list_source(spec, 0.25, 4)
        assert got.held_out == ref.held_out and got.mode == "RGB"
        for files, images in ((got.train, ref.train_images), (got.test, ref.test_images)):
            ids = sorted(int(Image.open(p).getpixel((0, 0))[0]) for p, _ in files)
            assert ids == pixel_ids(images)
    lab = list_source(f"folder:{tmp_path / 'lab'}", 0.25, 4)
    assert lab.classes == ("a", "b", "c") and lab.num_classes == 3 and lab.labelled
    assert not list_source(f"images:{tmp_path / 'lab'}", 0.25, 4).labelled


def test_list_source_mode_and_train_val_layout(tmp_path):
    for split in ("train", "val"):
        unique_images(tmp_path / split, {"x": 3, "y": 2}, mode="L")
    got = list_source(f"folder:{tmp_path}")
    assert got.mode == "L" and got.channels == 1 and got.held_out == "val/ folder"
    assert [y for _, y in got.train] == [0, 0, 0, 1, 1] and len(got.test) == 5
    rgb(tmp_path / "val" / "y" / "colour.png", 0)
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
    broken_files(tmp_path / "bad")
    with pytest.raises(DataSourceError, match="none of 3 files sampled.*could be read"):
        list_source(f"images:{tmp_path / 'bad'}")
