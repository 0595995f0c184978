"""The report's run-health section and warnings box, from metric records (no checkpoint)."""

from __future__ import annotations

import math

from PIL import Image

from moco.report import figures
from moco.report.page import _health


def _records() -> list[dict]:
    rows: list[dict] = [{"kind": "knn", "step": 0, "epoch": 0, "top1": 0.6,
                         "feat_eff_rank_ratio": 0.2, "feat_dim_std_ratio": 0.3}]  # fmt: skip
    for step in range(10, 200, 10):
        rows.append({"kind": "health", "step": step, "epoch": 1 + step // 100,
                     "loss_ratio": 1 - step / 1000, "step_loss_ratio": 1 - step / 900,
                     "top1": step / 400, "top5": step / 250, "logit_pos_mean": 0.9,
                     "logit_neg_mean": 0.1, "logit_neg_max": 0.6, "logit_gap": 0.3,
                     "alignment": 0.3, "uniformity": -3.0, "eff_rank_ratio": 0.5,
                     "dim_std_ratio": 0.7, "drift": 0.01, "queue_age": min(step, 15),
                     "queue_fill": min(1.0, step / 16), "queue_of_data": 0.2,
                     "grad_norm": 2.0 + math.sin(step), "lr": 0.01, "momentum": 0.99})  # fmt: skip
    rows.append({"kind": "warning", "step": 120, "epoch": 1, "detector": "collapse",
                 "message": "the embeddings collapsed <here>", "advice": "raise tau",
                 "evidence": {"eff_rank_ratio": 0.02, "rank_threshold": 0.1}})  # fmt: skip
    return rows


def test_health_figure_and_section_with_a_warning_at_the_top(tmp_path):
    records = _records()
    figures.health(records, tmp_path / "health.png")
    img = Image.open(tmp_path / "health.png")
    assert img.size[0] > 800 and img.size[1] > 600
    h = _health(records, tmp_path)
    assert "collapse" in h.warnings and "&lt;here&gt;" in h.warnings  # escaped
    assert "eff_rank_ratio 0.02" in h.warnings and "try: raise tau" in h.warnings
    assert "data:image/png;base64" in h.section


def test_a_run_without_diagnostics_says_so_and_has_no_warning_box(tmp_path):
    h = _health([{"kind": "train", "step": 1, "loss": 1.0}], tmp_path)
    assert h.warnings == "" and "run.diagnostics=false" in h.section
