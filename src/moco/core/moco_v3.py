"""MoCo v3 (Chen, Xie, He, ICCV 2021): no queue, a predictor on the query side, and the
symmetric in-batch loss ctr(q1, k2) + ctr(q2, k1) against a momentum encoder."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from moco import dist
from moco.core.losses import batch_contrastive
from moco.core.method import (
    ContrastiveMethod,
    MethodOptions,
    StepOutput,
    check_temperature,
    check_unit,
)
from moco.core.momentum import momentum_copy, momentum_update
from moco.encoders.base import as_encoder
from moco.layers.heads import build_mlp
from moco.layers.split_bn import interleave_groups

__all__ = ["MoCoV3"]


class MoCoV3(ContrastiveMethod):
    """MoCo v3 with the official attribute names (``base_encoder`` is our ``encoder_q``,
    ``momentum_encoder`` our ``encoder_k``, so checkpoints keep the v1 key schema).

    Args:
        encoder: backbone whose ``fc`` is the projector (:func:`moco.layers.heads.build_mlp`,
            2 layers with BN for ResNet); ``encoder_k`` is a deep copy of it, projector
            included, never back-propagated.
        predictor: the query-side MLP (2 layers, last without BN for ResNet); the key
            side has none (Sec. 3).
        momentum: m of the key-encoder update (0.99, raised to 1 by a cosine schedule in
            the paper; the schedule is the engine's).
        temperature: tau (1.0 R50, 0.2 ViT).

    Both views go through each network in one call on ``cat([x_q, x_k])``
    (:mod:`moco.core.method`; the MLPs' BN1d included), as the official code's two calls.
    """

    online_names = ("encoder_q", "predictor")
    name = "moco_v3"
    negatives = "batch"
    key_names = ("encoder_k",)
    head = "bn_mlp"

    @classmethod
    def from_options(
        cls, encoder: nn.Module, opts: MethodOptions, num_images: int, bn_splits: int
    ) -> MoCoV3:
        """The predictor: 2 layers, the last without BN (MoCo v3 Sec. 4, ``_build_mlp``);
        the projector is ``encoder.fc``, built by the caller (its depth depends on the
        backbone)."""
        hidden = opts.hidden_dim or as_encoder(encoder).feature_dim
        predictor = build_mlp(opts.dim, hidden, opts.dim, 2, last_bn=False, bn_splits=bn_splits)
        interleave_groups(predictor)  # groups: contiguous chunks, read through views
        return cls(encoder, predictor, opts.momentum, opts.temperature)

    @staticmethod
    def views_in_one_call(opts: MethodOptions) -> bool:
        return True

    def __init__(
        self, encoder: nn.Module, predictor: nn.Module, momentum: float, temperature: float
    ) -> None:
        super().__init__()
        check_temperature(temperature)
        check_unit("momentum", momentum)
        self.momentum = momentum
        self.temperature = temperature
        self.encoder_q = encoder
        self.predictor = predictor
        self.encoder_k = momentum_copy(encoder)

    def forward(
        self,
        x_q: torch.Tensor,
        x_k: torch.Tensor,
        index: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        online: Mapping[str, nn.Module] | None = None,
    ) -> StepOutput:
        """(ctr(q1, k2) + ctr(q2, k1)) with ctr = 2 tau x cross-entropy (Algorithm 1).

        Keys of the global batch (gathered without gradient) are every query's
        negatives but its own image's. ``correct`` has 2N entries (q1's, then q2's);
        ``k`` is this process's keys cat([k2, k1]) (the positives of q1, then q2), as
        symmetric MoCo returns them. ``index`` and ``generator`` are not used.
        """
        encoder, predictor = self.online("encoder_q", online), self.online("predictor", online)
        n = len(x_q)
        x = torch.cat([x_q, x_k])
        q1, q2 = F.normalize(predictor(encoder(x)), dim=1).split(n)
        with torch.no_grad():
            k1, k2 = F.normalize(self.encoder_k(x), dim=1).split(n)
            k1_all, k2_all = dist.all_gather_nograd(k1), dist.all_gather_nograd(k2)
        t, offset = self.temperature, dist.rank() * n
        a = batch_contrastive(q1, k2_all, t, offset)
        b = batch_contrastive(q2, k1_all, t, offset)
        loss = (a.loss + b.loss) * (2 * t)
        return StepOutput(loss, torch.cat([a.correct, b.correct]), q1, torch.cat([k2, k1]))

    def chance_loss(self, batch: int) -> float:
        """2 tau (ln B + ln B): the two ctr terms, each scaled by 2 tau."""
        return 4 * self.temperature * math.log(batch)

    @torch.no_grad()
    def momentum_update(self, m: float | None = None) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q over backbone and projector (the
        predictor has no momentum twin), run before the key forward."""
        momentum_update(self.encoder_k, self.encoder_q, self.momentum if m is None else m)
