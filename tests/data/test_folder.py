"""folder:, images: and filelist: sources built in tmp_path (Pillow + numpy, a few real
photos from skimage.data), and one end-to-end pre-training run on an image folder."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from moco import pretrain
from moco.data.center_crop import resize_center_crop
from moco.data.decode import UnreadableImageWarning
from moco.data.sources import DataSourceError, load_source
from moco.engine import checkpoint as ckpt_io


def _img(path, colour, size=(20, 12), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)
    return path


def _classes(root, counts, depth=False):
    """root/<class>/[sub/]i.png, each image filled with its class's grey value 40 * (c+1)."""
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            sub = f"d{i % 2}/" if depth else ""
            _img(root / name / f"{sub}{i}.png", (40 * (c + 1),) * 3)


def test_labelled_folder_nested_labels_and_stratified_split(tmp_path):
    _classes(tmp_path, {"cat": 10, "dog": 20}, depth=True)
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    _img(tmp_path / "dog" / ".hidden.png", (0, 0, 0))
    d = load_source(f"folder:{tmp_path}", 0.2, 0, load_size=8)
    assert d.classes == ("cat", "dog") and d.train_images.shape[1:] == (3, 8, 8)
    assert len(d.train_images) + len(d.test_images) == 30
    assert torch.bincount(d.test_labels).tolist() == [2, 4]  # 20 % of each class
    for x, y in ((d.train_images, d.train_labels), (d.test_images, d.test_labels)):
        assert torch.equal(x[:, 0, 0, 0].long(), 40 * (y + 1))  # each image under its label
    assert d.held_out == "20% of train, stratified, seed 0" and "skipped" not in d.name


def test_train_val_layout_and_greyscale_channels(tmp_path):
    for split, n in (("train", 4), ("val", 2)):
        for c in ("a", "b"):
            for i in range(n):
                _img(tmp_path / split / c / f"{i}.png", 100 if c == "a" else 200, mode="L")
    d = load_source(f"folder:{tmp_path}", load_size=6)
    assert d.held_out == "val/ folder" and d.channels == 1  # every image greyscale
    assert d.train_labels.tolist() == [0] * 4 + [1] * 4 and d.test_labels.tolist() == [0, 0, 1, 1]
    _img(tmp_path / "val" / "a" / "rgb.png", (1, 2, 3))  # one colour image: all RGB
    d = load_source(f"folder:{tmp_path}", load_size=6)
    assert d.channels == 3 and d.train_images[0, :, 0, 0].tolist() == [100, 100, 100]


def test_unlabelled_tree_and_broken_files_are_counted(tmp_path):
    for i in range(9):
        _img(tmp_path / f"x{i % 3}" / f"y{i}" / f"{i}.JPG", (i, i, i))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "x0" / "text.jpg").write_text("not an image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = load_source(f"images:{tmp_path}", 0.2, 1, load_size=4)
    assert [w.category for w in caught] == [UnreadableImageWarning] * 2
    assert "skipped 2 unreadable files of 11" in d.name
    assert (d.train_labels == -1).all() and (d.test_labels == -1).all() and d.classes is None
    assert len(d.train_images) == 7 and len(d.test_images) == 2
    assert d.held_out == "20% of the images, random, seed 1"


def test_filelist_with_and_without_labels(tmp_path):
    for i in range(6):
        _img(tmp_path / "imgs" / f"{i}.png", (10 * i, 0, 0))
    lists = tmp_path / "lists"
    lists.mkdir()
    lines = [f"../imgs/{i}.png {i % 2}" for i in range(5)] + [f"{tmp_path}/imgs/5.png 1"]
    (lists / "l.txt").write_text("# path label\n\n" + "\n".join(lines) + "\n")
    d = load_source(f"filelist:{lists / 'l.txt'}", 0.4, 0, load_size=4)
    labels = torch.cat([d.train_labels, d.test_labels])
    red = torch.cat([d.train_images, d.test_images])[:, 0, 0, 0].long()
    pairs = sorted(zip(red.tolist(), labels.tolist(), strict=True))
    assert pairs == [(10 * i, i % 2) for i in range(6)]
    assert d.classes is None and "stratified" in d.held_out
    (lists / "u.txt").write_text("\n".join(f"../imgs/{i}.png" for i in range(6)))
    d = load_source(f"filelist:{lists / 'u.txt'}", load_size=4)
    assert (d.train_labels == -1).all() and len(d.train_images) + len(d.test_images) == 6
    (lists / "m.txt").write_text("../imgs/0.png 0\n# c\n../imgs/1.png\n")
    with pytest.raises(DataSourceError, match=r"m.txt:3: no label, but line 1 has one"):
        load_source(f"filelist:{lists / 'm.txt'}", load_size=4)


def test_clear_errors_for_missing_empty_and_flat_folders(tmp_path):
    with pytest.raises(DataSourceError, match="nope.*does not exist.*one sub-folder per class"):
        load_source(f"folder:{tmp_path / 'nope'}", load_size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="empty: holds no image files"):
        load_source(f"images:{tmp_path / 'empty'}", load_size=8)
    with pytest.raises(DataSourceError, match="empty: no class sub-folders"):
        load_source(f"folder:{tmp_path / 'empty'}", load_size=8)
    _img(tmp_path / "flat" / "a.png", (1, 1, 1))
    with pytest.raises(DataSourceError, match="flat: no class sub-folders .1 images.*images:"):
        load_source(f"folder:{tmp_path / 'flat'}", load_size=8)
    _img(tmp_path / "flat" / "c" / "b.png", (1, 1, 1))
    with pytest.raises(DataSourceError, match="1 image.*a.png.*outside every class folder"):
        load_source(f"folder:{tmp_path / 'flat'}", load_size=8)
    with pytest.raises(DataSourceError, match="need a positive load_size"):
        load_source(f"images:{tmp_path / 'flat'}")


def test_resize_shorter_side_then_centre_crop_and_upscale():
    a = np.zeros((10, 30), np.uint8)
    a[:, 10:20] = 255  # the centre square is white, the sides black
    out = np.asarray(resize_center_crop(Image.fromarray(a), 5))
    # antialiased: the filter reaches a little past the square at its edges
    assert out.shape == (5, 5) and (out[:, 1:4] == 255).all() and (out > 200).all()
    big = np.asarray(resize_center_crop(Image.fromarray(a), 40))  # upscaled, not padded
    assert big.shape == (40, 40) and (big[:, 2:-2] == 255).all()


def test_real_photos_from_skimage(tmp_path):
    data = pytest.importorskip("skimage.data")
    (tmp_path / "a").mkdir()
    Image.fromarray(data.astronaut()).save(tmp_path / "a" / "astronaut.jpg")
    Image.fromarray(data.chelsea()).save(tmp_path / "a" / "chelsea.png")
    (tmp_path / "b").mkdir()
    Image.fromarray(data.coffee()).save(tmp_path / "b" / "coffee.jpg")
    Image.fromarray(data.camera()).save(tmp_path / "b" / "camera.png")  # greyscale
    d = load_source(f"folder:{tmp_path}", 0.5, 0, load_size=16)
    x = torch.cat([d.train_images, d.test_images])
    assert x.shape == (4, 3, 16, 16) and d.classes == ("a", "b")
    assert torch.bincount(d.test_labels).tolist() == [1, 1]
    # the greyscale photo repeats its channel; the colour ones do not
    cam = x[(x[:, 0] == x[:, 1]).flatten(1).all(1) & (x[:, 1] == x[:, 2]).flatten(1).all(1)]
    assert len(cam) == 1


def test_pretrain_end_to_end_on_an_image_folder(tmp_path, tiny_config):
    rng = np.random.default_rng(0)
    for c, name in enumerate(("red", "blue")):
        for i in range(36):
            a = rng.integers(0, 80, (40, 48, 3), dtype=np.uint8)
            a[..., 0 if c == 0 else 2] += 150
            (tmp_path / "data" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(tmp_path / "data" / name / f"{i}.jpg")
    # 72 photos: batch 32, K no more than the 64 training images, 32 px views, k 5
    cfg = tiny_config(
        "model.queue_size=64", "optim.batch_size=32", "augment.size=32", "eval.knn_k=5",
        data=f"folder:{tmp_path / 'data'}",
    )  # fmt: skip
    result = pretrain(cfg)
    ck = ckpt_io.load(result.checkpoint)
    assert ck["epoch"] == 1 and ck["derived"]["in_chans"] == 3
    assert ck["derived"]["train_images"] == 64 and ck["derived"]["held_out_images"] == 8
    # red against blue (+150 in one channel over noise of 0..80): every held-out image
    # is classed right, at random init too (observed 1.0 and 1.0); chance is 0.5
    assert result.knn_top1 == 1.0 and result.knn_top1_init == 1.0


def test_unlabelled_pretrain_turns_the_knn_monitor_off_and_knn_refuses(
    tmp_path, capsys, tiny_config
):
    from moco.cli import main

    rng = np.random.default_rng(1)
    (tmp_path / "data").mkdir()
    for i in range(40):
        a = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(a).save(tmp_path / "data" / f"{i}.png")
    # 40 images of 24 px: batch 32, 16 px views
    cfg = tiny_config("optim.batch_size=32", "augment.size=16", data=f"images:{tmp_path / 'data'}")
    result = pretrain(cfg)
    assert result.knn_top1 is None and result.knn_top1_init is None
    assert capsys.readouterr().out.count("no labels: kNN monitor off") == 1
    assert main(["knn", str(result.checkpoint), "--device", "cpu"]) == 1
    assert "has no labels" in capsys.readouterr().err
