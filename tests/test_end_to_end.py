"""The default preset on the bundled data learns: kNN clearly above random init."""

import pytest

from moco import load_config, pretrain


@pytest.mark.slow
def test_default_preset_beats_random_init(tmp_path):
    cfg = load_config("default", [f"run.out_dir={tmp_path}", "run.progress=false"])
    result = pretrain(cfg)
    assert result.knn_top1_init is not None and result.knn_top1 is not None
    print(f"default preset: kNN {result.knn_top1:.4f} vs random init {result.knn_top1_init:.4f}")
    assert result.knn_top1 > result.knn_top1_init + 0.05
