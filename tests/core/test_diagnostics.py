"""Run-health quantities against analytic values and loop references."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from moco.core.diagnostics import (
    alignment,
    dimension_std,
    effective_rank,
    encoder_drift,
    feature_health,
    grad_norm,
    logit_stats,
    pretext_topk,
    queue_age,
    queue_fill,
    uniformity,
)


def unit(n: int, c: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, c, generator=g, dtype=torch.float64), dim=1)


def test_alignment_is_zero_for_equal_pairs_four_for_antipodes_and_matches_a_loop():
    q = unit(16, 8)
    assert alignment(q, q).item() == 0.0
    assert alignment(q, -q).item() == pytest.approx(4.0)
    k = unit(16, 8, seed=1)
    loop = sum(float(((q[i] - k[i]) ** 2).sum()) for i in range(16)) / 16
    assert alignment(q, k).item() == pytest.approx(loop)


def test_uniformity_of_identical_rows_is_zero_and_matches_a_loop():
    same = unit(1, 8).expand(10, 8).contiguous()
    assert uniformity(same).item() == pytest.approx(0.0, abs=1e-7)
    x = unit(12, 5)
    pairs = [math.exp(-2 * float(((x[i] - x[j]) ** 2).sum()))
             for i, j in itertools.combinations(range(12), 2)]  # fmt: skip
    assert uniformity(x).item() == pytest.approx(math.log(sum(pairs) / len(pairs)), rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 rows"):
        uniformity(x[:1])


def test_uniformity_of_random_unit_vectors_approaches_its_limit():
    # x.y of two uniform unit vectors in C dims has variance 1/C, so
    # log E exp(-2 |x - y|^2) = -4 + log E exp(4 x.y) ~ -4 + 8 / C, and -4 as C grows
    c = 256
    assert uniformity(unit(1500, c)).item() == pytest.approx(-4 + 8 / c, abs=0.01)


def test_effective_rank_of_orthonormal_rows_is_their_number_and_of_rank_one_is_one():
    assert effective_rank(torch.eye(7)).item() == pytest.approx(7.0, rel=1e-5)
    u, v = torch.randn(9, 1), torch.randn(1, 6)
    assert effective_rank(u @ v).item() == pytest.approx(1.0, rel=1e-4)
    x = torch.randn(20, 6, dtype=torch.float64)
    s = np.linalg.svd(x.numpy(), compute_uv=False)
    p = s / s.sum()
    assert effective_rank(x).item() == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-5)


def test_dimension_std_is_zero_for_a_collapse_and_one_over_root_c_when_spread():
    assert dimension_std(torch.ones(32, 16)).item() == pytest.approx(0.0, abs=1e-7)
    c = 64
    spread = dimension_std(torch.randn(20000, c, generator=torch.Generator().manual_seed(0)))
    assert spread.item() == pytest.approx(1 / math.sqrt(c), abs=0.002)


def test_logit_stats_read_the_positive_at_column_zero():
    logits = torch.tensor([[5.0, 1.0, 3.0], [2.0, 4.0, 0.0]])
    s = logit_stats(logits)
    assert s["pos_mean"].item() == pytest.approx(3.5)
    assert s["neg_mean"].item() == pytest.approx(2.0)
    assert s["neg_max"].item() == pytest.approx(3.5)  # rows' maxima 3 and 4
    assert s["gap"].item() == pytest.approx(0.0)


def test_encoder_drift_is_zero_for_a_copy_and_the_relative_distance_otherwise():
    query = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    key = copy.deepcopy(query)
    assert encoder_drift(key, query).item() == 0.0
    with torch.no_grad():
        for p in key.parameters():
            p.mul_(0.5)  # theta_k = theta_q / 2: |theta_q - theta_k| = |theta_q| / 2
    assert encoder_drift(key, query).item() == pytest.approx(0.5, rel=1e-6)


def test_pretext_topk_counts_negatives_at_or_above_the_positive():
    logits = torch.tensor([[5.0, 1.0, 3.0, 4.0],  # first: top-1
                           [2.0, 4.0, 0.0, 3.0],  # two above: top-3
                           [1.0, 1.0, 0.0, 0.0]])  # a tie: top-2, not top-1  # fmt: skip
    assert pretext_topk(logits, 1).item() == pytest.approx(1 / 3)
    assert pretext_topk(logits, 2).item() == pytest.approx(2 / 3)
    assert pretext_topk(logits, 3).item() == 1.0


def test_grad_norm_is_the_norm_of_all_gradients_together():
    a, b, c = (torch.zeros(2, requires_grad=True) for _ in range(3))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])  # c has none
    assert grad_norm([a, b, c]).item() == pytest.approx(5.0)
    assert grad_norm([c]).item() == 0.0


def test_queue_age_and_fill_of_a_queue_of_whole_batches():
    # K = 4 batches of 8: after t < 4 steps the random start is the oldest (age t); from
    # then on the keys of the last 4 steps, the oldest written 3 steps ago
    assert [queue_age(t, 32, 8) for t in range(7)] == [0, 1, 2, 3, 3, 3, 3]
    assert [queue_fill(t, 32, 8) for t in range(6)] == [0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_feature_health_of_orthonormal_and_rank_one_features():
    eye = feature_health(torch.eye(8))
    assert eye["feat_eff_rank"] == pytest.approx(8.0, rel=1e-5)
    assert eye["feat_eff_rank_ratio"] == pytest.approx(1.0, rel=1e-5)
    one = feature_health(torch.ones(10, 4))
    assert one["feat_eff_rank"] == pytest.approx(1.0) and one["feat_dim_std_ratio"] == 0.0
