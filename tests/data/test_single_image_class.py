"""A class of one image when a held-out split is drawn: it stays in training, and the
split's description says so; a source whose every class has one image is refused."""

import pytest
import torch

from moco.data.file_splits import list_source
from moco.data.sources import load_source
from moco.data.splits import hold_out, single_image_classes, stratified_split
from moco.errors import DataSourceError

from .image_files import pixel_ids, unique_images


def test_a_class_of_one_image_stays_in_training():
    labels = torch.tensor([0] * 20 + [1] * 20 + [2] + [3] * 10)
    keep, held = stratified_split(labels, 0.1, seed=0)
    assert labels[keep].bincount().tolist() == [18, 18, 1, 9]
    assert labels[held].bincount(minlength=4).tolist() == [2, 2, 0, 1]
    assert sorted(keep.tolist() + held.tolist()) == list(range(len(labels)))


def test_every_class_of_two_or_more_keeps_one_and_holds_one_out():
    labels = torch.tensor([0, 0, 1, 1, 1])
    keep, held = stratified_split(labels, 0.9, seed=0)  # 0.9 x 2 rounds to 2: clamped
    assert labels[keep].bincount().tolist() == [1, 1]
    assert labels[held].bincount().tolist() == [1, 2]


def test_hold_out_names_the_classes_kept_whole():
    labels = torch.tensor([0] * 10 + [1] + [2] * 10 + [3])
    keep, held, how = hold_out(labels, 0.1, seed=0)
    assert how == (
        "10% of train, stratified, seed 0; classes 1, 3 have 1 image: kept in training, "
        "none held out"
    )
    assert {1, 3} <= set(labels[keep].tolist()) and not {1, 3} & set(labels[held].tolist())
    assert single_image_classes(labels) == [1, 3]
    _, _, plain = hold_out(torch.tensor([0, 0, 1, 1]), 0.5, seed=0)
    assert plain == "50% of train, stratified, seed 0"
    _, _, one = hold_out(torch.tensor([0, 0, 1]), 0.5, seed=0)
    assert one.endswith("; class 1 has 1 image: kept in training, none held out")


def test_every_class_of_one_image_is_refused_with_the_numbers():
    with pytest.raises(DataSourceError, match=r"every class has 1 image \(3 classes, 3 images\)"):
        stratified_split(torch.tensor([0, 1, 2]), 0.1, seed=0)
    with pytest.raises(DataSourceError, match="holding out 10%"):
        hold_out(torch.tensor([4]), 0.1, seed=0)


def test_folder_source_with_a_class_of_one_image(tmp_path):
    unique_images(tmp_path / "d", {"cat": 10, "dog": 10, "eel": 1})
    data = load_source(f"folder:{tmp_path / 'd'}", 0.2, seed=0, load_size=8)
    assert data.train_labels.bincount().tolist() == [8, 8, 1]
    assert data.test_labels.bincount(minlength=3).tolist() == [2, 2, 0]
    assert pixel_ids(data.train_images)[-1] == 20  # the eel, image number 20, trains
    assert "class 2 has 1 image: kept in training" in data.held_out
    streamed = list_source(f"folder:{tmp_path / 'd'}", 0.2, seed=0)
    assert "class 2 has 1 image" in streamed.held_out
