"""A bare --data PATH is read as what it holds, and says so; KIND:PATH still forces a kind.

Each kind is built small in tmp_path: IDX files cut from the bundled subset, CIFAR and
STL-10 in their release layouts (the writers of their own tests), image trees with Pillow.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moco.data.file_splits import list_source
from moco.data.sources import DataSourceError, load_source, parse_source, resolve_source
from moco.runs.records import data_tag

from ..conftest import make_idx_dir
from .image_files import rgb, unique_images
from .test_cifar import write_cifar10, write_tar_gz
from .test_stl10 import write_stl10


def _detected(spec: str | Path) -> tuple[str, str]:
    s = resolve_source(str(spec))
    return s.kind, s.detected


def test_idx_directory_is_detected_and_named(tmp_path):
    idx = make_idx_dir(tmp_path / "fm", 32, 8)
    assert _detected(idx) == ("idx", "IDX training files, a t10k test pair")
    data = load_source(str(idx))
    # a bare path has always meant IDX: its name stays the path, which loads again
    assert data.name == str(idx) == load_source(f"idx:{idx}").name
    assert len(data.train_images) == 32 and len(data.test_images) == 8


def test_cifar10_folder_its_parent_and_archive_are_detected(tmp_path):
    folder = write_cifar10(tmp_path / "dl", n_train=20, n_test=10)
    archive = write_tar_gz(folder, tmp_path / "cifar-10-python.tar.gz")
    assert _detected(folder) == ("cifar10", "CIFAR-10 python files")
    assert _detected(tmp_path / "dl") == ("cifar10", "holds cifar-10-batches-py/")
    assert _detected(archive) == ("cifar10", "a tar archive of cifar10")
    ref = load_source(f"cifar10:{folder}")
    for spec in (folder, tmp_path / "dl", archive):
        data = load_source(str(spec))
        assert torch.equal(data.train_images, ref.train_images) and data.classes == ref.classes
        assert data.name.startswith(f"{spec} (detected: cifar10, ")
    # a folder holding only the archive reads the archive
    alone = tmp_path / "only"
    alone.mkdir()
    (alone / archive.name).write_bytes(archive.read_bytes())
    s = resolve_source(str(alone))
    assert (s.kind, s.path, s.detected) == (
        "cifar10",
        alone / archive.name,
        f"holds {archive.name}",
    )


def test_stl10_folder_and_its_parent_are_detected(tmp_path):
    folder = write_stl10(tmp_path, n_train=10, n_test=4, n_unlabelled=3)
    assert _detected(tmp_path) == ("stl10", "holds stl10_binary/")
    assert _detected(folder) == ("stl10", "STL-10 binary files")
    data = load_source(str(tmp_path))
    assert data.unlabelled_images is not None and len(data.unlabelled_images) == 3
    assert data.name == f"{tmp_path} (detected: stl10, holds stl10_binary/)"


def test_class_sub_folders_are_a_labelled_folder(tmp_path):
    unique_images(tmp_path / "photos", {"cat": 6, "dog": 5, "owl": 4})
    (tmp_path / "photos" / "README.txt").write_text("not an image: ignored")
    spec = f"{tmp_path / 'photos'}/"
    assert _detected(spec) == ("folder", "3 class sub-folders")
    data = load_source(spec, load_size=8)
    assert data.name == f"{spec} (detected: folder, 3 class sub-folders)"
    assert data.classes == ("cat", "dog", "owl") and bool((data.train_labels >= 0).all())
    # the train/ + val/ layout, and a lone train/ holding the classes
    for split in ("train", "val"):
        unique_images(tmp_path / "tv" / split, {"a": 3, "b": 2})
    assert _detected(tmp_path / "tv") == ("folder", "train/ and val/ with 2 class sub-folders")
    unique_images(tmp_path / "t" / "train", {"a": 3, "b": 2})
    assert _detected(tmp_path / "t") == ("folder", "train/ with 2 class sub-folders")


def test_trees_without_class_folders_are_unlabelled_images(tmp_path):
    flat = tmp_path / "flat"
    for i in range(5):
        rgb(flat / f"{i}.jpg", i)
    assert _detected(flat) == ("images", "5 image files, no sub-folders: unlabelled")
    data = load_source(str(flat), load_size=8)
    assert bool((data.train_labels == -1).all()) and data.classes is None
    assert "(detected: images, 5 image files" in data.name

    mixed = tmp_path / "mixed"  # loose images beside sub-folders: folder: would refuse it
    unique_images(mixed, {"a": 2, "b": 2})
    rgb(mixed / "loose.png", 0)
    assert _detected(mixed) == (
        "images",
        "1 image beside 2 sub-folders, not one folder per class: unlabelled",
    )
    one = tmp_path / "one"
    unique_images(one, {"2024": 4})
    assert _detected(one) == (
        "images",
        "one sub-folder (2024/), no classes to tell apart: unlabelled",
    )
    gap = tmp_path / "gap"  # a sub-folder without images is not a class
    unique_images(gap, {"a": 2, "b": 2})
    (gap / "notes").mkdir()
    (gap / "notes" / "x.txt").write_text("")
    assert (
        _detected(gap)[1]
        == "sub-folder notes/ holds no image, not one folder per class: unlabelled"
    )


def test_a_text_file_of_image_paths_is_a_filelist(tmp_path):
    for i in range(4):
        rgb(tmp_path / "img" / f"{i}.png", i)
    plain = tmp_path / "list.txt"
    plain.write_text("# my images\n" + "".join(f"img/{i}.png\n" for i in range(4)))
    assert _detected(plain) == ("filelist", "a text file of image paths, without labels")
    labelled = tmp_path / "labelled"  # no extension: recognised by its content
    labelled.write_text("".join(f"img/{i}.png {i % 2}\n" for i in range(4)))
    assert _detected(labelled) == ("filelist", "a text file of image paths, with labels")
    data = load_source(str(labelled), 0.5, load_size=8)
    assert sorted(torch.cat([data.train_labels, data.test_labels]).tolist()) == [0, 0, 1, 1]
    assert data.name.startswith(f"{labelled} (detected: filelist, ")


def test_a_named_kind_is_never_second_guessed(tmp_path):
    unique_images(tmp_path / "p", {"a": 3, "b": 3})
    data = load_source(f"images:{tmp_path / 'p'}", load_size=8)
    assert bool((data.train_labels == -1).all()) and "detected" not in data.name
    with pytest.raises(DataSourceError, match="train-images-idx3-ubyte"):
        load_source(f"idx:{tmp_path / 'p'}")


def test_unrecognised_paths_list_the_kinds_and_how_to_name_one(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("hello")
    (docs / "b.csv").write_text("1,2")
    with pytest.raises(DataSourceError) as err:
        load_source(str(docs))
    msg = str(err.value)
    assert "\n" not in msg  # the CLI prints it on one line
    assert msg.startswith(f"{docs}: cannot tell what data this is (a folder of 2 entries")
    for how in ("folder:DIR", "images:DIR", "filelist:FILE", "idx:DIR", "cifar10:PATH",
                "cifar100:PATH", "stl10:DIR", "'bundled'"):  # fmt: skip
        assert how in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match=r"\(an empty folder\).*folder:DIR"):
        load_source(str(tmp_path / "empty"))
    photo = rgb(tmp_path / "one.jpg", 0)
    with pytest.raises(DataSourceError, match="one image file; pass the folder"):
        load_source(str(photo))
    (tmp_path / "notes.txt").write_text("shopping list\nmilk\n")
    with pytest.raises(DataSourceError, match="neither a CIFAR archive nor a text file"):
        load_source(str(tmp_path / "notes.txt"))
    with pytest.raises(DataSourceError, match="nope' does not exist"):
        load_source(str(tmp_path / "nope"))


def test_a_folder_of_two_releases_asks_which(tmp_path):
    write_cifar10(tmp_path, n_train=10, n_test=10)
    make_idx_dir(tmp_path, 8, 0)
    with pytest.raises(DataSourceError, match=r"more than one data set: idx .*cifar10 .*idx:"):
        load_source(str(tmp_path))
    idx = load_source(f"idx:{tmp_path}")  # 1 of the 8 held out
    assert len(idx.train_images) + len(idx.test_images) == 8 and idx.classes is None


def test_streamed_listing_detects_the_same_way(tmp_path):
    unique_images(tmp_path / "photos", {"cat": 4, "dog": 4})
    files = list_source(str(tmp_path / "photos"), 0.25)
    assert files.name == f"{tmp_path / 'photos'} (detected: folder, 2 class sub-folders)"
    assert files.classes == ("cat", "dog") and len(files.test) == 2
    write_cifar10(tmp_path / "c", n_train=10, n_test=10)
    with pytest.raises(DataSourceError, match=r"detected: cifar10.*only image files can be"):
        list_source(str(tmp_path / "c"))


def test_names_of_sources_that_are_not_here_stay_as_they_were(tmp_path):
    # results name the data they were measured on, also where it is not on this machine
    assert parse_source(str(tmp_path / "gone")) == ("idx", tmp_path / "gone")
    unique_images(tmp_path / "photos", {"a": 2, "b": 2})
    assert parse_source(str(tmp_path / "photos")) == ("folder", tmp_path / "photos")
    assert data_tag(str(tmp_path / "photos")) == data_tag(f"folder:{tmp_path / 'photos'}")
