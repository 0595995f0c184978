"""Memory bank (Wu et al. 2018, as compared in MoCo Fig. 2b): one stored feature per
training image; negatives are sampled from the bank and no key encoder exists."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from moco import dist
from moco.core.losses import info_nce
from moco.core.method import (
    ContrastiveMethod,
    MethodOptions,
    StepOutput,
    check_temperature,
    check_unit,
)

__all__ = ["MemoryBank"]


class MemoryBank(ContrastiveMethod):
    """``encoder_q`` and a buffer ``bank`` (num_images, dim) of unit vectors.

    The bank starts as random unit vectors (drawn from torch's default RNG, so seed it
    identically on every process) and is a buffer: it is in ``state_dict`` and in every
    checkpoint. Entry i is updated whenever image i is in a batch (MoCo Sec. 3.2, the
    momentum update of the memory bank, m = 0.5 as in the paper's comparison).

    Args:
        encoder: the encoder (backbone with its head as ``fc``).
        dim: embedding width C.
        num_images: training images, one bank entry each.
        num_negatives: K, entries drawn per step as negatives (MoCo Fig. 3: up to 65536).
        temperature: tau of InfoNCE.
        bank_momentum: entry <- normalize(m entry + (1 - m) q).
    """

    bank: torch.Tensor
    name = "memory_bank"
    negatives = "bank"

    @classmethod
    def from_options(
        cls, encoder: nn.Module, opts: MethodOptions, num_images: int, bn_splits: int
    ) -> MemoryBank:
        return cls(
            encoder, opts.dim, num_images, opts.queue_size, opts.temperature, opts.bank_momentum
        )

    def __init__(
        self,
        encoder: nn.Module,
        dim: int,
        num_images: int,
        num_negatives: int,
        temperature: float,
        bank_momentum: float = 0.5,
    ) -> None:
        super().__init__()
        check_temperature(temperature)
        check_unit("bank_momentum", bank_momentum)
        if dim <= 0 or num_images <= 0 or num_negatives <= 0:
            raise ValueError(
                "memory bank needs dim, num_images and num_negatives > 0; got "
                f"{dim}, {num_images}, {num_negatives}"
            )
        self.temperature = temperature
        self.bank_momentum = bank_momentum
        self.num_negatives = num_negatives
        self.encoder_q = encoder
        self.register_buffer("bank", F.normalize(torch.randn(num_images, dim), dim=1))

    @property
    def queue_size(self) -> int:
        """K, the negatives per step (the name MoCo uses for its dictionary size)."""
        return self.num_negatives

    def draw_negatives(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """(K,) bank indices, uniform with replacement, one draw for the whole batch.

        Drawn from ``generator`` (on its device) when given, else torch's default RNG.
        When distributed, rank 0's draw is broadcast, so every rank contrasts against
        the same entries. The own entry may be drawn, as in a uniform sampler.
        """
        device = generator.device if generator is not None else self.bank.device
        idx = torch.randint(
            self.bank.shape[0], (self.num_negatives,), generator=generator, device=device
        ).to(self.bank.device)
        return dist.broadcast_(idx)

    def forward(
        self,
        x_q: torch.Tensor,
        x_k: torch.Tensor,
        index: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        online: Mapping[str, nn.Module] | None = None,
    ) -> StepOutput:
        """InfoNCE of q = normalize(encoder_q(x_q)) with positive bank[index] and K sampled
        negatives.

        ``index`` (N,): dataset indices of this process's images (required). Only x_q is
        encoded: the positive is the image's stored feature, i.e. a view of it from an
        earlier visit, so x_k is not needed (Wu et al. 2018). ``k`` is the positives
        bank[index] (N, C), no gradient. Changes no state but BN running stats: the bank
        is updated in :meth:`after_step`.
        """
        if index is None:
            raise ValueError("MemoryBank needs the dataset indices of the batch (index=...)")
        index = index.to(self.bank.device)
        if index.shape != (len(x_q),):
            raise ValueError(f"index must be ({len(x_q)},), got {tuple(index.shape)}")
        q = F.normalize(self.online("encoder_q", online)(x_q), dim=1)
        positives = self.bank[index]
        negatives = self.bank[self.draw_negatives(generator)]  # (K, C)
        out = info_nce(q, positives.to(q.dtype), negatives.t(), self.temperature)
        return StepOutput(out.loss, out.correct, q, positives)

    def chance_loss(self, batch: int) -> float:
        """ln(K + 1)."""
        return math.log(self.num_negatives + 1)

    @torch.no_grad()
    def diagnostic_logits(self, out: StepOutput) -> torch.Tensor:
        """The queries against their bank entries and the first K entries of the bank (a
        fixed stand-in for the step's uniform draw, which would consume random numbers)."""
        q = out.q.detach()
        pos = (q * out.k.to(q.dtype)).sum(dim=1, keepdim=True)
        return torch.cat([pos, q @ self.bank[: self.num_negatives].to(q.dtype).t()], dim=1)

    @torch.no_grad()
    def after_step(self, out: StepOutput, index: torch.Tensor | None = None) -> None:
        """bank[i] <- normalize(m bank[i] + (1 - m) q_i) for the global batch's images.

        q and index are gathered from every process (rank order), so the bank stays
        identical on every rank without being broadcast. Indices are expected distinct
        within a global batch (a sampler without replacement guarantees it).
        """
        if index is None:
            raise ValueError("MemoryBank needs the dataset indices of the batch (index=...)")
        q = dist.all_gather_nograd(out.q.detach()).to(self.bank.dtype)
        idx = dist.all_gather_nograd(index.to(self.bank.device))
        m = self.bank_momentum
        updated = F.normalize(m * self.bank[idx] + (1.0 - m) * q, dim=1)
        self.bank.index_copy_(0, idx, updated)
