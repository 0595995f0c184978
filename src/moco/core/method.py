"""What every contrastive method in core/ offers the engine (MoCo Fig. 2's three
mechanisms and the relatives): one forward that returns a loss, and two explicit state
updates around the optimiser step.

The engine's step (``engine/step.py``) is the same for every method::

    model.momentum_update(m)          # key encoder <- EMA of the query encoder (if any)
    out = model(x1, x2, index, ...)   # loss; changes no state but BN running stats
    out.loss.backward(); optimizer.step()
    model.after_step(out, index)      # enqueue keys / update bank entries (if any)

Conventions every method keeps, so that evaluation, export and checkpoints need no
per-method code:

- ``encoder_q`` is the trained backbone with its head as ``fc`` (``forward_features``
  gives the representation before the head, which kNN and the linear probe use); its
  checkpoint keys are ``encoder_q.*`` as in the official MoCo code.
- ``online_names`` are the sub-modules that receive gradients. When distributed the
  engine wraps each in its own DDP (disjoint parameters) and passes the wrappers as
  ``online={name: wrapper}``; a method calls each of them at most once per forward (a
  DDP module may not run twice before backward), so methods with several views through
  the same network concatenate them.
- Nothing else is trainable: the optimiser takes the parameters with ``requires_grad``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn


class StepOutput(NamedTuple):
    loss: torch.Tensor  # scalar, what is back-propagated
    correct: torch.Tensor  # (A,) bool: pretext top-1 of each anchor (A = N, or 2N symmetric)
    q: torch.Tensor  # (N, C) normalised embeddings of the first view (with gradient)
    k: torch.Tensor  # (M, C) normalised keys without gradient (MoCo enqueues them)


class ContrastiveMethod(nn.Module):
    """Defaults for methods without a key encoder or stored state."""

    online_names: tuple[str, ...] = ("encoder_q",)
    encoder_q: nn.Module

    def online(self, name: str, online: Mapping[str, nn.Module] | None) -> nn.Module:
        """Sub-module ``name``, or its DDP wrapper when the engine passed one."""
        if online is not None and name in online:
            return online[name]
        module = getattr(self, name)
        assert isinstance(module, nn.Module)
        return module

    @torch.no_grad()
    def momentum_update(self, m: float | None = None) -> None:
        """Key encoder <- m key + (1 - m) query; ``m`` None: the method's own. No-op here."""

    @torch.no_grad()
    def after_step(self, out: StepOutput, index: torch.Tensor | None = None) -> None:
        """State that changes once the step is taken (queue, bank). No-op here."""
