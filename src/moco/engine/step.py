"""One training step in Algorithm 1's order: the only place a method's state moves."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import torch
from torch import nn

from moco.core.method import ContrastiveMethod, StepOutput


def train_step(
    model: ContrastiveMethod,
    optimizer: torch.optim.Optimizer,
    x_q: torch.Tensor,
    x_k: torch.Tensor,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    online: Mapping[str, nn.Module] | None = None,
    index: torch.Tensor | None = None,
    momentum: float | None = None,
    inspect: Callable[[StepOutput], None] | None = None,
) -> StepOutput:
    """momentum update (m = ``momentum``, or the model's own) -> loss (MoCo: keys on the
    shuffled batch without grad) -> backward -> optimiser step -> ``after_step`` (MoCo:
    enqueue this batch's keys; memory bank: update the entries of ``index``).

    ``amp_dtype`` runs the forward pass under autocast (bf16 or fp16); ``scaler`` scales
    the fp16 loss. ``online`` maps the model's ``online_names`` to their DDP wrappers when
    distributed (see :mod:`moco.core.method`). ``index`` holds the dataset indices of the
    batch (the memory bank needs them). ``inspect`` (the run-health diagnostics, on
    logged steps) sees the output after the optimiser step and before ``after_step``,
    while a queue or bank is still as the loss saw it and the gradients are in place.
    Nothing here reads a value back to the host.
    """
    model.momentum_update(momentum)
    autocast = (
        torch.autocast(device_type=x_q.device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        out = model(x_q, x_k, index=index, generator=generator, online=online)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(out.loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        out.loss.backward()
        optimizer.step()
    if inspect is not None:
        inspect(out)
    model.after_step(out, index)
    return out
