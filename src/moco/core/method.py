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
  ``online={name: wrapper}``; ``key_names`` are the momentum copies (outside DDP).
- **Both views in one call.** A DDP module may run only once before backward, so a
  method that sends both views through the same trained network concatenates them
  (``cat([x_q, x_k])``) and says so with :meth:`ContrastiveMethod.views_in_one_call`.
  The engine then gives that network's BN twice the groups of one view, so each view
  is normalised in its own groups exactly as two separate calls would normalise it.
  (This is said here once; the methods refer to it.)
- Nothing else is trainable: the optimiser takes the parameters with ``requires_grad``.

Each method also describes itself to the engine and the sweeps through class
attributes (``name``, ``negatives``, ``key_names``, ``reads_shuffle``, ``head``) and
builds itself from a config's model section with :meth:`ContrastiveMethod.from_options`
(:class:`MethodOptions` names the fields it may read; ``core`` never imports the config).
:mod:`moco.core.registry` maps names to methods.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar, Literal, NamedTuple, Protocol

import torch
from torch import nn

from moco.errors import ConfigError


class StepOutput(NamedTuple):
    loss: torch.Tensor  # scalar, what is back-propagated
    correct: torch.Tensor  # (A,) bool: pretext top-1 of each anchor (A = N, or 2N symmetric)
    q: torch.Tensor  # (N, C) normalised embeddings of the first view (with gradient)
    k: torch.Tensor  # (M, C) normalised keys without gradient (MoCo enqueues them)
    # (N, C) the positive of each row of q, detached, for the run-health diagnostics
    # (:meth:`ContrastiveMethod.diagnostic_logits`); None: the first N rows of k
    pos: torch.Tensor | None = None


class MethodOptions(Protocol):
    """The fields of a config's ``model`` section a method may read when it builds
    itself (``moco.config.ModelConfig`` has them all)."""

    dim: int
    queue_size: int
    momentum: float
    temperature: float
    shuffle_keys: bool
    symmetric: bool
    bank_momentum: float
    hidden_dim: int


Negatives = Literal["queue", "batch", "bank"]


class ContrastiveMethod(nn.Module):
    """Defaults for methods without a key encoder or stored state."""

    name: ClassVar[str]  # the model.method value that selects it
    negatives: ClassVar[Negatives]  # where K comes from: a queue, the batch, a bank
    key_names: ClassVar[tuple[str, ...]] = ()  # momentum encoders (no gradient, no DDP)
    reads_shuffle: ClassVar[bool] = False  # whether model.shuffle_keys changes anything
    head: ClassVar[Literal["projection", "bn_mlp"]] = "projection"  # layers.heads builder
    online_names: tuple[str, ...] = ("encoder_q",)
    encoder_q: nn.Module

    @classmethod
    def from_options(
        cls, encoder: nn.Module, opts: MethodOptions, num_images: int, bn_splits: int
    ) -> ContrastiveMethod:
        """The method around ``encoder`` (its head already in place as ``fc``).
        ``num_images`` sizes per-image state (the memory bank); ``bn_splits`` is the BN
        groups of heads the method adds itself (MoCo v3's predictor)."""
        raise NotImplementedError

    @staticmethod
    def views_in_one_call(opts: MethodOptions) -> bool:
        """Whether both views go through the trained network in one call (contract above)."""
        return False

    def online(self, name: str, online: Mapping[str, nn.Module] | None) -> nn.Module:
        """Sub-module ``name``, or its DDP wrapper when the engine passed one."""
        if online is not None and name in online:
            return online[name]
        module = getattr(self, name)
        assert isinstance(module, nn.Module)
        return module

    def chance_loss(self, batch: int) -> float:
        """The loss when every logit is equal (nothing learnt): ln of the candidates
        each anchor is scored against, for a global batch of ``batch`` images. Here:
        in-batch negatives, ln(batch)."""
        return math.log(batch)

    @torch.no_grad()
    def diagnostic_logits(self, out: StepOutput) -> torch.Tensor:
        """(N, 1 + K') cosine similarities of the step's queries, each row's positive at
        column 0 and then negatives, detached, for the run-health diagnostics (not the
        loss: no temperature). Called on logged steps only, after the optimiser step and
        before :meth:`after_step`, so a queue or bank is as the forward pass saw it.
        Here: this process's in-batch negatives (the other rows' positives)."""
        q = out.q.detach()
        p = (out.k[: len(q)] if out.pos is None else out.pos).to(q.dtype)
        sim = q @ p.t()
        n = len(q)
        off = ~torch.eye(n, dtype=torch.bool, device=q.device)
        return torch.cat([sim.diagonal()[:, None], sim[off].view(n, n - 1)], dim=1)

    @torch.no_grad()
    def momentum_update(self, m: float | None = None) -> None:
        """Key encoder <- m key + (1 - m) query; ``m`` None: the method's own. No-op here."""

    @torch.no_grad()
    def after_step(self, out: StepOutput, index: torch.Tensor | None = None) -> None:
        """State that changes once the step is taken (queue, bank). No-op here."""


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")


def check_unit(name: str, value: float) -> None:
    """A momentum-like coefficient: ``value`` in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value}")
