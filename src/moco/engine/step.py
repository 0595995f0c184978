"""One MoCo training step in Algorithm 1's order: the only place the model's state moves."""

from __future__ import annotations

import contextlib

import torch

from moco.core.model import MoCo, StepOutput


def train_step(
    model: MoCo,
    optimizer: torch.optim.Optimizer,
    x_q: torch.Tensor,
    x_k: torch.Tensor,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    query_encoder: torch.nn.Module | None = None,
) -> StepOutput:
    """momentum update -> keys on the shuffled batch (no grad) -> loss -> backward ->
    SGD step of encoder_q -> enqueue this batch's keys (dequeuing the oldest).

    ``amp_dtype`` runs the forward pass under autocast (bf16 or fp16); ``scaler`` scales
    the fp16 loss. ``query_encoder`` is the DDP wrapper of ``model.encoder_q`` when
    distributed (see :meth:`MoCo.forward`). Nothing here reads a value back to the host.
    """
    model.momentum_update()
    autocast = (
        torch.autocast(device_type=x_q.device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        out = model(x_q, x_k, generator, query_encoder)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(out.loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        out.loss.backward()
        optimizer.step()
    model.enqueue(out.k)
    return out
