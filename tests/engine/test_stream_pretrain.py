"""Pre-training streamed from a folder of colour photos (issue 3): v2 views made in two
stages (crop + flip in DataLoader workers, photometric ops batched), broken files
replaced and counted each epoch, the kNN monitor on centre crops decoded per batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from moco.config.schema import ConfigError, load_config
from moco.data.sources import DataSourceError
from moco.data.stream import list_source
from moco.engine import checkpoint as ckpt_io
from moco.runs.train import pretrain


def _folder(root):
    skimage_data = pytest.importorskip("skimage.data")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("red", "blue")):
        (root / name).mkdir(parents=True)
        for i in range(20):
            a = rng.integers(0, 80, (90 + 4 * i, 120, 3), dtype=np.uint8)
            a[..., 0 if c == 0 else 2] += 150
            Image.fromarray(a).save(root / name / f"{i}.jpg", quality=90)
    (root / "photo").mkdir()
    for i, name in enumerate(("astronaut", "coffee", "chelsea", "rocket")):
        photo = Image.fromarray(getattr(skimage_data, name)())
        for j, box in enumerate(((0, 0, 300, 300), (100, 50, 400, 300))):
            photo.crop(box).save(root / "photo" / f"{name}-{j}.jpg")
            photo.crop(box).convert("CMYK").save(root / "photo" / f"{name}-{j}-cmyk.jpg")
            if i == 0:
                photo.crop(box).convert("P").save(root / "photo" / f"{name}-{j}-p.png")
    (root / "red" / "empty.jpg").write_bytes(b"")
    (root / "blue" / "text.jpg").write_text("not an image")


@pytest.mark.slow
def test_streamed_v2_pretraining_on_a_folder_of_colour_photos(tmp_path, tiny_config, capsys):
    _folder(tmp_path / "data")
    # batch 18: the 54 training files make 3 whole batches, so each epoch reads every one
    cfg = tiny_config(
        "model.queue_size=64", "optim.batch_size=18", "optim.epochs=2", "augment.preset=v2",
        "augment.size=32", "eval.knn_k=5", "data.stream=true", "data.workers=2", "run.name=s",
        data=f"folder:{tmp_path / 'data'}",
    )  # fmt: skip
    result = pretrain(cfg)
    ck = ckpt_io.load(result.checkpoint)
    assert ck["epoch"] == 2 and ck["derived"]["in_chans"] == 3
    n_files = 40 + 4 * 4 + 2 + 2  # generated, photos (x2 modes) + palette, broken
    assert ck["derived"]["train_images"] + ck["derived"]["held_out_images"] == n_files
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    data = [r for r in records if r["kind"] == "data"]
    assert [r["epoch"] for r in data] == [1, 2]
    # of the 2 broken files, the stratified 10 % hold-out (seed 0) keeps text.jpg out of
    # training: empty.jpg is the one replaced, once in each epoch that reads every file
    train = list_source(f"folder:{tmp_path / 'data'}").train
    assert ck["derived"]["train_images"] == len(train) == 3 * 18
    assert sorted(p.name for p, _ in train if p.name in ("empty.jpg", "text.jpg")) == ["empty.jpg"]
    assert all(r["unreadable"] == data[0]["unreadable"] for r in data)  # the same files
    assert [r["unreadable"] for r in data] == [1, 1]
    # the monitor's values as recorded; 3 classes (red, blue, photos) told apart by colour
    # and content, so even the random encoder is far above chance (1/3) on the 5 readable
    # held-out images, and a broken encoder / label pairing would not be
    knn = [r["top1"] for r in records if r["kind"] == "knn"]
    assert result.knn_top1 is not None and len(knn) == 3 and result.knn_top1 == knn[-1]
    assert result.knn_top1_init == knn[0] and min(knn) >= 0.6
    assert sorted(int(k) for k in ck["history"]["knn"]) == [0, 1, 2]
    out = capsys.readouterr()
    assert "unreadable" in out.out + out.err  # warned about and / or counted


def test_streaming_needs_a_file_source(tiny_config):
    cfg = tiny_config("data.stream=true", data="bundled")
    with pytest.raises(DataSourceError, match="only image files can be streamed"):
        pretrain(cfg)
    with pytest.raises(ConfigError, match="data.workers"):
        load_config("default", ["data.workers=-1"])
