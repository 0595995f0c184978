"""Quantities that explain a contrastive run's health, as pure functions of tensors.

The building block of the run-health diagnostics (issue "Is my run learning?"): the
engine does not log them yet. Each takes the step's tensors and returns a 0-d tensor on
their device, so a caller can accumulate them without a host sync.

- :func:`alignment` and :func:`uniformity` (Wang & Isola, ICML 2020, Sec. 4.1): how close
  positives sit, and how evenly the embeddings cover the sphere.
- :func:`effective_rank` (Roy & Vetterli, EUSIPCO 2007) and :func:`dimension_std`:
  whether the embeddings collapsed onto few directions.
- :func:`logit_stats`: the positive and negative logits and their gap.
- :func:`encoder_drift`: how far the momentum encoder trails the query encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def alignment(q: torch.Tensor, k: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """E ||q_i - k_i||^alpha over the N positive pairs; q, k (N, C) unit rows. 0 when
    every query equals its key; 4 (alpha 2) when each is the other's antipode."""
    return (q - k).norm(dim=1).pow(alpha).mean()


def uniformity(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """log E exp(-t ||x_i - x_j||^2) over the N (N - 1) / 2 distinct pairs; x (N, C) unit
    rows, N >= 2. 0 when all rows are equal; for rows uniform on the sphere of a large C
    it approaches -2t (every pair nearly orthogonal: squared distance 2)."""
    if len(x) < 2:
        raise ValueError(f"uniformity needs at least 2 rows, got {len(x)}")
    return torch.pdist(x.float(), p=2).pow(2).mul(-t).exp().mean().log()


def effective_rank(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """exp of the entropy of the normalised singular values of x (N, C): C for C
    orthonormal rows (all singular values equal), 1 for a rank-one batch."""
    s = torch.linalg.svdvals(x.float())
    p = s / s.sum().clamp_min(eps)
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum())


def dimension_std(x: torch.Tensor) -> torch.Tensor:
    """Mean over the C dimensions of the std of the L2-normalised rows of x (N, C): about
    1 / sqrt(C) when the embeddings spread over the sphere, 0 when they collapsed to one
    point (Chen & He's SimSiam diagnostic)."""
    return F.normalize(x.float(), dim=1).std(dim=0).mean()


def logit_stats(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Of (N, 1 + K) logits with each row's positive at column 0 (InfoNCE's layout):
    the mean positive logit, the mean and the mean row-maximum of the negatives, and
    the gap between the mean positive and the mean negative maximum."""
    pos, neg = logits[:, 0].float(), logits[:, 1:].float()
    out = {
        "pos_mean": pos.mean(),
        "neg_mean": neg.mean(),
        "neg_max": neg.max(dim=1).values.mean(),
    }
    out["gap"] = out["pos_mean"] - out["neg_max"]
    return out


@torch.no_grad()
def encoder_drift(key_encoder: nn.Module, query_encoder: nn.Module) -> torch.Tensor:
    """||theta_q - theta_k|| / ||theta_q|| over the parameters the two share by name:
    0 for identical encoders; with momentum m it settles where the query encoder moves
    about as fast as the key encoder follows it."""
    q = dict(query_encoder.named_parameters())
    diff, norm = [], []
    for name, pk in key_encoder.named_parameters():
        pq = q[name]
        diff.append((pq.float() - pk.float()).pow(2).sum())
        norm.append(pq.float().pow(2).sum())
    return torch.stack(diff).sum().sqrt() / torch.stack(norm).sum().sqrt().clamp_min(1e-12)
