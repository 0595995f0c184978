"""Pretext top-1 is strict: a tie between the positive and a negative is wrong.

A collapsed encoder (every embedding equal) or a saturated temperature gives every
logit the same value; counting ties as correct made such a run report 100 % pretext
accuracy. Every loss that reports ``correct`` is checked on all-equal logits (0 correct),
on a strict winner (correct) and on a single tie among otherwise lower negatives.
"""

import torch

from moco.core.losses import batch_contrastive, info_nce, nt_xent


def _same(n: int, dim: int = 8) -> torch.Tensor:
    """(n, dim): one unit vector repeated, so every pairwise logit is 1 / tau. A basis
    vector: every dot product is exactly 1 whichever way it is summed (a random vector
    could make the matmul and the row sum differ in the last bit)."""
    return torch.eye(dim)[:1].repeat(n, 1)


def test_info_nce_all_equal_logits_are_never_correct():
    z = _same(4)
    out = info_nce(z, z, z[:1].t().repeat(1, 16), 0.07)
    assert out.correct.shape == (4,) and not out.correct.any()


def test_info_nce_strict_winner_is_correct_and_a_single_tie_is_not():
    e = torch.eye(4)
    q = k = e[:2]  # positive logit 1 for both rows
    negatives = torch.stack([e[2], e[3]], dim=1)  # (C, K): logit 0 for both rows
    assert info_nce(q, k, negatives, 0.1).correct.tolist() == [True, True]
    # row 1's first negative equals its positive: a tie, so wrong; row 0 still wins
    tied = torch.stack([e[1], e[3]], dim=1)
    assert info_nce(q, k, tied, 0.1).correct.tolist() == [True, False]


def test_info_nce_at_a_tiny_temperature_a_tie_stays_a_tie():
    # 1 / 1e-9: huge but finite logits; equal inputs still give equal logits
    z = _same(3)
    assert not info_nce(z, z, z[:1].t().repeat(1, 8), 1e-9).correct.any()


def test_batch_contrastive_all_equal_logits_are_never_correct():
    z = _same(6)
    assert not batch_contrastive(z, z, 0.2).correct.any()
    assert not batch_contrastive(z[:2], z, 0.2, offset=2).correct.any()


def test_batch_contrastive_strict_winner_and_tie():
    e = torch.eye(4)
    assert batch_contrastive(e, e, 0.5).correct.all()  # positive 1, others 0
    keys = torch.stack([e[0], e[0], e[2], e[3]])  # query 0's positive ties key 1
    assert batch_contrastive(e, keys, 0.5).correct.tolist() == [False, False, True, True]
    # query 1 (e1) sees logit 0 everywhere: its positive ties every negative


def test_batch_contrastive_without_negatives_is_correct():
    # one key, the positive: nothing to beat (the masked max is -inf)
    z = _same(1)
    assert batch_contrastive(z, z, 0.1).correct.tolist() == [True]


def test_nt_xent_all_equal_logits_are_never_correct():
    z = _same(5)
    out = nt_xent(z, z, 0.1)
    assert out.correct.shape == (10,) and not out.correct.any()


def test_nt_xent_strict_winner_and_tie():
    e = torch.eye(6)
    assert nt_xent(e[:3], e[:3], 0.1).correct.all()  # twin 1, every other candidate 0
    z1 = torch.stack([e[0], e[1], e[2]])
    z2 = torch.stack([e[0], e[3], e[4]])  # images 1 and 2: the twin is orthogonal (0)
    # anchors z1[1], z1[2], z2[1], z2[2]: the twin's 0 ties every other candidate's 0
    assert nt_xent(z1, z2, 0.1).correct.tolist() == [True, False, False, True, False, False]


def test_nt_xent_of_one_image_has_only_its_twin_and_is_correct():
    z = _same(1)  # 2 anchors, each with one candidate left after masking itself
    assert nt_xent(z, z, 0.1).correct.tolist() == [True, True]
