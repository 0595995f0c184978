"""SimCLR (Chen et al., ICML 2020): 2N views, each view's twin is its positive and the
other 2N - 2 views of the global batch are its negatives (NT-Xent)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from moco import dist
from moco.core.losses import nt_xent
from moco.core.method import ContrastiveMethod, MethodOptions, StepOutput, check_temperature

__all__ = ["SimCLR"]


class SimCLR(ContrastiveMethod):
    """SimCLR's objective around ``encoder_q`` (its ``fc`` is the projection head g).

    Both views go through one call on ``cat([x_q, x_k])``, as in SimCLR's own code
    (:mod:`moco.core.method`; SimCLR itself uses global BN over the concatenated views;
    a single group per view is the closest split form).

    Args:
        encoder: backbone with its projection head as ``fc``.
        temperature: tau of NT-Xent (0.1 ImageNet, 0.5 CIFAR in the paper).
    """

    name = "simclr"
    negatives = "batch"

    @classmethod
    def from_options(
        cls, encoder: nn.Module, opts: MethodOptions, num_images: int, bn_splits: int
    ) -> SimCLR:
        return cls(encoder, opts.temperature)

    @staticmethod
    def views_in_one_call(opts: MethodOptions) -> bool:
        return True

    def __init__(self, encoder: nn.Module, temperature: float) -> None:
        super().__init__()
        check_temperature(temperature)
        self.temperature = temperature
        self.encoder_q = encoder

    def forward(
        self,
        x_q: torch.Tensor,
        x_k: torch.Tensor,
        index: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        online: Mapping[str, nn.Module] | None = None,
    ) -> StepOutput:
        """NT-Xent of this process's 2N views against the 2 W N views of the global batch.

        Both views are gathered with gradient (the negatives of other processes' anchors
        come from here); the loss is this slice's mean, and DDP's average over ranks
        makes its gradient the global batch's. ``correct`` has 2N entries (z1 anchors,
        then z2). No keys without gradient: ``k`` is empty (0, C). ``index`` and
        ``generator`` are not used.
        """
        encoder = self.online("encoder_q", online)
        n = len(x_q)
        z1, z2 = F.normalize(encoder(torch.cat([x_q, x_k])), dim=1).split(n)
        out = nt_xent(
            z1,
            z2,
            self.temperature,
            dist.all_gather_grad(z1),
            dist.all_gather_grad(z2),
            offset=dist.rank() * n,
        )
        empty = z1.detach().new_empty((0, z1.shape[1]))
        return StepOutput(out.loss, out.correct, z1, empty, z2.detach())

    def chance_loss(self, batch: int) -> float:
        """ln(2B - 1): each anchor against the other 2B - 1 views."""
        return math.log(2 * batch - 1)
