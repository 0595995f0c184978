"""Quantities that explain a contrastive run's health, as pure functions of tensors.

The building blocks of the run-health diagnostics (docs/run-health.md): the engine
(:mod:`moco.engine.health`) logs them every ``run.log_every`` steps. Each takes the
step's tensors and returns a 0-d tensor on their device, so a caller can accumulate
them without a host sync.

- :func:`alignment` and :func:`uniformity` (Wang & Isola, ICML 2020, Sec. 4.1): how close
  positives sit, and how evenly the embeddings cover the sphere.
- :func:`effective_rank` (Roy & Vetterli, EUSIPCO 2007) and :func:`dimension_std`:
  whether the embeddings collapsed onto few directions.
- :func:`logit_stats`: the positive and negative logits and their gap.
- :func:`pretext_topk`: whether the positive is among the k highest logits.
- :func:`encoder_drift`: how far the momentum encoder trails the query encoder.
- :func:`grad_norm`: the L2 norm of all gradients together.
- :func:`queue_age` / :func:`queue_fill`: how old the oldest key of a FIFO queue is and
  how much of it holds real keys, from the step count alone (no state, no sync).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def pretext_topk(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of rows of (N, 1 + K) logits (positive at column 0) whose positive is
    strictly above all but at most k - 1 negatives: the pretext top-k. A tie counts
    against the positive, as in :func:`moco.core.losses.info_nce`'s top-1."""
    pos = logits[:, :1]
    above = (logits[:, 1:] >= pos).sum(dim=1)
    return (above < k).float().mean()


@torch.no_grad()
def grad_norm(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """sqrt(sum ||g||^2) over the gradients of ``params`` (those without one skipped);
    0 when none has a gradient."""
    norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    if not norms:
        return torch.zeros(())
    return torch.stack(norms).norm()


def queue_age(steps: int, queue_size: int, per_step: int) -> int:
    """Age in steps of the oldest entry of a FIFO queue of ``queue_size`` that received
    ``per_step`` keys at each of ``steps`` steps (age 0: written by the last step).
    Until the queue has filled, its oldest entries are the initial ones (age ``steps``);
    then the keys of the last ceil(K / per_step) steps are in it."""
    if steps * per_step < queue_size:
        return steps
    return math.ceil(queue_size / per_step) - 1


def queue_fill(steps: int, queue_size: int, per_step: int) -> float:
    """Fraction of the queue holding keys written by the run (1 once it has filled)."""
    return min(1.0, steps * per_step / queue_size)


@torch.no_grad()
def feature_health(features: torch.Tensor) -> dict[str, float]:
    """Effective rank, its ratio to min(N, D), and dimension std x sqrt(D) of features
    (N, D), e.g. the kNN monitor's pooled backbone features (one host read each)."""
    x = features.float()
    rank = float(effective_rank(x))
    return {
        "feat_eff_rank": rank,
        "feat_eff_rank_ratio": rank / min(x.shape),
        "feat_dim_std_ratio": float(dimension_std(x)) * math.sqrt(x.shape[1]),
    }
