"""Contrastive losses as pure functions of tensors.

- :func:`info_nce`: one positive and a bank of negatives (MoCo paper, Sec. 3.1, Eq. 1);
  MoCo's queue and the memory bank.
- :func:`batch_contrastive`: in-batch negatives (MoCo Fig. 2a end-to-end, MoCo v3 ``ctr``).
- :func:`nt_xent`: SimCLR's loss over the 2N views of a batch (SimCLR Sec. 2.1).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class InfoNCE(NamedTuple):
    loss: torch.Tensor  # scalar, mean over the batch
    # (N,) bool, the pretext top-1: the positive's logit is strictly above every negative's.
    # A tie is wrong: a collapsed encoder (every logit equal) must not score 100 %.
    correct: torch.Tensor


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

    ``correct`` is the pretext top-1, strict: ``l_pos`` above every negative. A tie
    counts as wrong (argmax would give it to the positive at index 0), so a collapsed
    or saturated run (every logit equal, e.g. at a tiny tau) scores 0, not 100 %. Near
    100 % while kNN stalls is the signature of BN cheating.
    """
    _check_shapes(q, k, negatives)
    l_pos = (q * k).sum(dim=1) / temperature  # (N,)
    l_neg = (q @ negatives.to(q.dtype)) / temperature  # (N, K)
    lse_neg = torch.logsumexp(l_neg, dim=1)
    loss = (torch.logaddexp(l_pos, lse_neg) - l_pos).mean()
    correct = l_pos.detach() > l_neg.detach().amax(dim=1)
    return InfoNCE(loss, correct)


def batch_contrastive(
    q: torch.Tensor, k_all: torch.Tensor, temperature: float, offset: int = 0
) -> InfoNCE:
    """Cross-entropy of ``q @ k_all.T / tau`` with target column ``offset + i`` for row i.

    q: (N, C) queries (this process's slice), k_all: (M, C) keys of the whole (gathered)
    batch in rank order, ``offset``: where this slice's keys start in ``k_all`` (rank *
    N). Each query's positive is its own image's key, the other M - 1 keys are its
    negatives: MoCo Fig. 2a (end-to-end) and MoCo v3's ``ctr`` (Sec. 3, Algorithm 1),
    which scales this by 2 tau itself. Inputs expected L2-normalised. Loss: mean over N.

    ``correct`` (N,) is the pretext top-1: the positive's logit strictly above every
    other key's (a tie is wrong, as in :func:`info_nce`).
    """
    if q.dim() != 2 or k_all.dim() != 2 or q.shape[1] != k_all.shape[1]:
        raise ValueError(
            f"q must be (N, C) and k_all (M, C); got {tuple(q.shape)} and {tuple(k_all.shape)}"
        )
    n, m = q.shape[0], k_all.shape[0]
    if not 0 <= offset <= m - n:
        raise ValueError(f"offset {offset} puts the {n} positives outside the {m} keys")
    logits = (q @ k_all.to(q.dtype).t()) / temperature  # (N, M)
    target = torch.arange(offset, offset + n, device=q.device)
    loss = F.cross_entropy(logits, target)
    return InfoNCE(loss, _strictly_top(logits.detach(), target))


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float,
    z1_all: torch.Tensor | None = None,
    z2_all: torch.Tensor | None = None,
    offset: int = 0,
) -> InfoNCE:
    """SimCLR's NT-Xent (SimCLR Sec. 2.1, Eq. 1) over this process's 2N anchors.

    z1, z2: (N, C) the two views' embeddings of this process's N images, L2-normalised;
    z1_all, z2_all: (M, C) the same for the global batch (gathered with gradient, rank
    order; default z1, z2), this slice starting at row ``offset``. Anchors are the rows
    of z1 then z2 (2N); candidates are the 2M rows of [z1_all; z2_all] except the anchor
    itself, so each anchor has one positive (its twin: z2_all[offset + i] for z1[i], and
    vice versa) and 2M - 2 negatives. The self-similarity is masked with -inf (no Python
    loop). Loss: mean over the 2N anchors; ``correct`` (2N,): the positive strictly
    above every other candidate (a tie is wrong, as in :func:`info_nce`).
    """
    z1_all = z1 if z1_all is None else z1_all
    z2_all = z2 if z2_all is None else z2_all
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be (N, C); got {tuple(z1.shape)}, {tuple(z2.shape)}")
    if z1_all.shape != z2_all.shape or z1_all.dim() != 2 or z1_all.shape[1] != z1.shape[1]:
        raise ValueError(
            f"z1_all and z2_all must both be (M, C) with C = {z1.shape[1]}; "
            f"got {tuple(z1_all.shape)}, {tuple(z2_all.shape)}"
        )
    n, m = z1.shape[0], z1_all.shape[0]
    if not 0 <= offset <= m - n:
        raise ValueError(f"offset {offset} puts the {n} anchors outside the {m} gathered rows")
    anchors = torch.cat([z1, z2])  # (2N, C)
    candidates = torch.cat([z1_all, z2_all]).to(anchors.dtype)  # (2M, C)
    logits = (anchors @ candidates.t()) / temperature  # (2N, 2M)
    rows = torch.arange(n, device=z1.device) + offset
    self_col = torch.cat([rows, rows + m])  # where each anchor sits among the candidates
    target = torch.cat([rows + m, rows])  # its twin in the other view
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(2 * n, device=z1.device), self_col] = True
    logits = logits.masked_fill(is_self, float("-inf"))
    loss = F.cross_entropy(logits, target)
    return InfoNCE(loss, _strictly_top(logits.detach(), target))


def _strictly_top(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(R,) bool: row r's logit at column ``target[r]`` is strictly above every other
    column of the row. logits: (R, M), target: (R,). The target column is masked out
    before the max (a row whose only finite logit is its target is correct)."""
    rows = torch.arange(len(target), device=logits.device)
    positive = logits[rows, target]
    others = logits.index_put((rows, target), logits.new_tensor(float("-inf")))
    return positive > others.amax(dim=1)


def _check_shapes(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> None:
    if q.dim() != 2 or q.shape != k.shape:
        raise ValueError(f"q and k must both be (N, C); got {tuple(q.shape)} and {tuple(k.shape)}")
    if negatives.dim() != 2 or negatives.shape[0] != q.shape[1]:
        raise ValueError(
            f"negatives must be (C, K) with C = {q.shape[1]}; got {tuple(negatives.shape)}"
        )
