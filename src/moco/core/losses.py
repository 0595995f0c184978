"""InfoNCE over one positive and a bank of negatives (MoCo paper, Sec. 3.1, Eq. 1)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class InfoNCE(NamedTuple):
    loss: torch.Tensor  # scalar, mean over the batch
    correct: torch.Tensor  # (N,) bool: the positive has the largest logit (pretext top-1)


def info_nce_logits(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """(K+1)-way logits before the temperature, the positive at column 0.

    q: (N, C) queries, k: (N, C) positive keys, negatives: (C, K) the queue.
    Returns (N, 1 + K): column 0 holds q_i . k_i, columns 1.. hold q_i . negatives[:, j].
    This is the literal form of Algorithm 1; :func:`info_nce` computes the same loss
    without materialising the concatenation.
    """
    _check_shapes(q, k, negatives)
    l_pos = (q * k).sum(dim=1, keepdim=True)
    return torch.cat([l_pos, q @ negatives], dim=1)


def info_nce(
    q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> InfoNCE:
    """L = -log exp(q.k+/tau) / sum_{i=0..K} exp(q.k_i/tau), averaged over the batch.

    q: (N, C), k: (N, C), negatives: (C, K); all expected L2-normalised (Sec. 3.1).
    Equal to cross-entropy over :func:`info_nce_logits` / tau with label 0, written as
    ``logaddexp(l_pos, logsumexp(l_neg)) - l_pos`` so that the (N, K) block of negative
    logits is never copied into a concatenated (N, 1 + K) tensor.

    ``correct`` is the pretext top-1 (argmax == 0, ties go to the positive as argmax
    picks the first index): near 100 % while kNN stalls is the signature of BN cheating.
    """
    _check_shapes(q, k, negatives)
    l_pos = (q * k).sum(dim=1) / temperature  # (N,)
    l_neg = (q @ negatives.to(q.dtype)) / temperature  # (N, K)
    lse_neg = torch.logsumexp(l_neg, dim=1)
    loss = (torch.logaddexp(l_pos, lse_neg) - l_pos).mean()
    correct = l_pos.detach() >= l_neg.detach().amax(dim=1)
    return InfoNCE(loss, correct)


def _check_shapes(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> None:
    if q.dim() != 2 or q.shape != k.shape:
        raise ValueError(f"q and k must both be (N, C); got {tuple(q.shape)} and {tuple(k.shape)}")
    if negatives.dim() != 2 or negatives.shape[0] != q.shape[1]:
        raise ValueError(
            f"negatives must be (C, K) with C = {q.shape[1]}; got {tuple(negatives.shape)}"
        )
