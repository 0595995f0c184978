import pytest
import torch

from moco.data.sources import (
    FASHION_MNIST_CLASSES,
    DataSourceError,
    load_source,
    stratified_split,
)

from ..conftest import make_idx_dir


def test_bundled_subset_is_stratified_fashion_mnist():
    data = load_source("bundled")
    assert data.train_images.shape == (5000, 1, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (1000, 1, 28, 28)
    assert data.train_labels.bincount().tolist() == [500] * 10
    assert data.test_labels.bincount().tolist() == [100] * 10
    assert data.held_out == "test split"


def test_idx_directory_with_and_without_test_split(tiny_idx):
    data = load_source(str(tiny_idx))
    assert len(data.train_images) == 256 and len(data.test_images) == 64
    for f in tiny_idx.glob("t10k-*"):
        f.unlink()
    held = load_source(str(tiny_idx), holdout_fraction=0.25, seed=3)
    assert len(held.train_images) + len(held.test_images) == 256
    assert "25%" in held.held_out
    # no image both in the training and in the held-out part
    tr = {bytes(x.numpy()) for x in held.train_images}
    assert not any(bytes(x.numpy()) in tr for x in held.test_images)


def test_stratified_split_holds_out_each_class():
    labels = torch.arange(10).repeat_interleave(20)
    keep, held = stratified_split(labels, 0.1, seed=0)
    assert labels[held].bincount().tolist() == [2] * 10
    assert len(set(keep.tolist()) & set(held.tolist())) == 0


def test_missing_or_empty_sources_fail_clearly(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist"):
        load_source(str(tmp_path / "nope"))
    with pytest.raises(DataSourceError, match="train-images-idx3-ubyte"):
        load_source(str(tmp_path))


def test_source_strings_name_their_kind(tiny_idx, tmp_path):
    bare, tagged = load_source(str(tiny_idx)), load_source(f"idx:{tiny_idx}")
    assert torch.equal(bare.train_images, tagged.train_images)
    assert torch.equal(bare.test_labels, tagged.test_labels)
    assert bare.unlabelled_images is None and bare.pretrain_images is bare.train_images
    assert load_source("bundled").classes == FASHION_MNIST_CLASSES
    with pytest.raises(DataSourceError, match="unknown data source kind 'imagenet'.*cifar10"):
        load_source(f"imagenet:{tiny_idx}")
    with pytest.raises(DataSourceError, match="names no path"):
        load_source("cifar10:")
    with pytest.raises(DataSourceError, match="nope.*does not exist"):
        load_source(f"idx:{tmp_path / 'nope'}")
    # a directory whose name merely looks like KIND:PATH is still an IDX directory
    odd = make_idx_dir(tmp_path / "v2:final", 32, 8)
    assert len(load_source(str(odd)).train_images) == 32
