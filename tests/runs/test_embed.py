"""embed_checkpoint: the features .npy files hold what the encoder computes, row for row."""

import json

import numpy as np
import pytest
import torch

from moco.errors import MocoError, OutputExistsError
from moco.runs.embed import embed_checkpoint
from moco.runs.load import load_for_eval


def test_embed_writes_the_encoders_features_of_both_splits(untrained_checkpoint, tmp_path):
    out = tmp_path / "emb"
    e = embed_checkpoint(untrained_checkpoint, out, device="cpu")
    assert e.out_dir == out and e.rows == {"train": 256, "test": 64}
    meta = json.loads((out / "embed.json").read_text())
    assert meta == e.meta and meta["epoch"] == 3 and meta["features"] == "backbone"
    assert meta["checkpoint"] == str(untrained_checkpoint) and meta["dim"] == 64
    train = np.load(out / "train_features.npy")
    assert train.shape == (256, 64) and train.dtype == np.float32
    assert np.array_equal(
        np.load(out / "test_labels.npy"),
        load_for_eval(untrained_checkpoint).data.test_labels.numpy(),
    )
    sources = (out / "test_sources.txt").read_text().splitlines()
    assert len(sources) == 64 and sources[5] == f"{meta['data']}:test:5"
    # the same rows as the encoder applied by hand (eval mode, no augmentation)
    s = load_for_eval(untrained_checkpoint)
    from moco.augment.views import build_eval_transform

    tf = build_eval_transform(s.size, s.mean, s.std, s.data.image_size)
    with torch.no_grad():
        ref = s.encoder.eval().forward_features(tf(s.data.test_images[:8]))
    assert np.allclose(np.load(out / "test_features.npy")[:8], ref.numpy(), atol=1e-5)


def test_head_features_have_the_heads_width(untrained_checkpoint, tmp_path):
    e = embed_checkpoint(untrained_checkpoint, tmp_path / "h", features="head", device="cpu")
    assert e.meta["dim"] == 128 and np.load(tmp_path / "h" / "train_features.npy").shape[1] == 128


def test_a_non_empty_output_directory_is_refused_and_left_alone(untrained_checkpoint, tmp_path):
    out = tmp_path / "emb"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="exists and is not empty") as exc:
        embed_checkpoint(untrained_checkpoint, out, device="cpu")
    assert isinstance(exc.value, MocoError) and isinstance(exc.value, FileExistsError)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
