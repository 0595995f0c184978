"""Streamed data read for evaluation (moco.data.eval_batches) and its statistics: the
pixels and numbers of the in-memory path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from moco.data.decode import UnreadableImageWarning
from moco.data.eval_batches import EVAL_BATCH, FileEvalSplit, iter_center_crops
from moco.data.file_splits import list_source
from moco.data.folder import load_files

from .image_files import broken_files, rgb


def test_center_crops_and_mean_std_match_the_in_memory_path(tmp_path):
    data = pytest.importorskip("skimage.data")
    root = tmp_path / "mix"
    for i in range(7):
        rgb(root / "a" / f"{i}.jpg", i, (30 + 5 * i, 50 - 3 * i))
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
    files = photos[:3] + [(p, 5) for p in broken_files(tmp_path)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(iter_center_crops(files, 8, 2, workers=0))
    assert [len(y) for _, y in batches] == [2, 1]  # the all-broken last batch is skipped
    assert sum(issubclass(w.category, UnreadableImageWarning) for w in caught) == 3


def test_file_eval_split_reads_any_positions_and_says_which_were_readable(photos, tmp_path):
    bad = broken_files(tmp_path)
    files = photos[:2] + [(bad[0], 1)] + photos[2:4] + [(p, 0) for p in bad[1:]]
    split = FileEvalSplit(files, 8, "RGB")
    assert len(split) == 7 and split.labels.tolist() == [y for _, y in files]
    assert split.labels.dtype == torch.int64
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = list(split.batches(torch.tensor([0, 2, 1, 6, 5, 5]), workers=0))
    assert len(got) == 1 and sum(issubclass(w.category, UnreadableImageWarning) for w in caught)
    x, ok = got[0]
    assert ok.tolist() == [True, False, True, False, False, False]
    ref = list(iter_center_crops([files[0], files[1]], 8, 2, workers=0))[0][0]
    assert torch.equal(x, ref)  # the readable ones, in the order asked
    big = FileEvalSplit(files[2:3] * 300, 8, "L")  # more than one batch, none readable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImageWarning)
        batches = list(big.batches(torch.arange(300), workers=0))
    assert [len(ok) for _, ok in batches] == [EVAL_BATCH, 300 - EVAL_BATCH]
    assert all(x.shape == (0, 1, 8, 8) and not ok.any() for x, ok in batches)
