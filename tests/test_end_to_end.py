"""The default preset on the bundled data learns: kNN clearly above random init."""

import pytest

from moco import load_config, pretrain


@pytest.mark.slow
def test_default_preset_beats_random_init(tmp_path):
    # run.device=cpu: the figure below is the CPU one, also on a machine with a GPU
    cfg = load_config(
        "default", [f"run.out_dir={tmp_path}", "run.progress=false", "run.device=cpu"]
    )
    result = pretrain(cfg)
    assert result.knn_top1_init is not None and result.knn_top1 is not None
    print(f"default preset: kNN {result.knn_top1:.4f} vs random init {result.knn_top1_init:.4f}")
    assert result.knn_top1 > result.knn_top1_init + 0.05
