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
from moco.engine import checkpoint as ckpt_io
from moco.engine.train import pretrain


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
def test_streamed_v2_pretraining_on_a_folder_of_colour_photos(tmp_path, capsys):
    _folder(tmp_path / "data")
    cfg = load_config(
        "default",
        [
            "model.width=0.125", "model.queue_size=64", "model.bn_splits=2",
            "optim.batch_size=16", "optim.epochs=2", "augment.preset=v2", "augment.size=32",
            "eval.knn_k=5", "eval.knn_every=1", "run.progress=false", "data.stream=true",
            "data.workers=2", f"run.out_dir={tmp_path / 'runs'}", "run.name=s",
            f"data.source=folder:{tmp_path / 'data'}",
        ],
    )  # fmt: skip
    result = pretrain(cfg)
    ck = ckpt_io.load(result.checkpoint)
    assert ck["epoch"] == 2 and ck["derived"]["in_chans"] == 3
    n_files = 40 + 4 * 4 + 2 + 2  # generated, photos (x2 modes) + palette, broken
    assert ck["derived"]["train_images"] + ck["derived"]["held_out_images"] == n_files
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    data = [r for r in records if r["kind"] == "data"]
    assert [r["epoch"] for r in data] == [1, 2]
    assert all(r["unreadable"] == data[0]["unreadable"] for r in data)  # the same files
    assert result.knn_top1 is not None and 0.0 <= result.knn_top1 <= 1.0
    assert sorted(int(k) for k in ck["history"]["knn"]) == [0, 1, 2]
    out = capsys.readouterr()
    assert "unreadable" in out.out + out.err  # warned about and / or counted


def test_streaming_needs_a_file_source(tmp_path):
    cfg = load_config("default", ["data.stream=true", f"run.out_dir={tmp_path}"])
    with pytest.raises(DataSourceError, match="only image files can be streamed"):
        pretrain(cfg)
    with pytest.raises(ConfigError, match="data.workers"):
        load_config("default", ["data.workers=-1"])
