"""The momentum update of the key encoder (MoCo Sec. 3.2, Eq. 2)."""

from __future__ import annotations

from copy import deepcopy

import torch
from torch import nn


@torch.no_grad()
def momentum_update(key_encoder: nn.Module, query_encoder: nn.Module, m: float) -> None:
    """theta_k <- m * theta_k + (1 - m) * theta_q, over parameters only.

    BN running statistics are buffers and are not averaged: each encoder keeps the
    statistics of the batches it normalised (as in the official code). The update is
    one multi-tensor ``_foreach_lerp_`` (lerp(k, q, w) = k + w (q - k) with w = 1 - m),
    a single fused kernel launch per dtype/device group rather than a Python loop.
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum m must be in [0, 1], got {m}")
    k_params: list[torch.Tensor] = list(key_encoder.parameters())
    q_params: list[torch.Tensor] = list(query_encoder.parameters())
    if len(k_params) != len(q_params):
        raise ValueError("key and query encoders have different parameter lists")
    torch._foreach_lerp_(k_params, q_params, 1.0 - m)


def momentum_copy(encoder: nn.Module) -> nn.Module:
    """The key encoder at the start: an exact copy of the query encoder that never
    receives gradients (it moves only by :func:`momentum_update`)."""
    copy = deepcopy(encoder)
    for p in copy.parameters():
        p.requires_grad_(False)
    return copy
