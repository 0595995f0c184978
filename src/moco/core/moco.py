"""MoCo: a query encoder, its momentum copy, and a queue of keys (Algorithm 1 of the paper)."""

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
from moco.core.momentum import momentum_copy, momentum_update
from moco.core.queue import enqueue_, init_queue
from moco.core.shuffle_bn import batch_shuffle, batch_unshuffle

__all__ = ["MoCo", "StepOutput"]


class MoCo(ContrastiveMethod):
    """Momentum Contrast with the official attribute names.

    ``encoder_q`` is any module mapping images to (N, dim) embeddings (a backbone with
    its head as ``fc``); ``encoder_k`` starts as an exact copy and never receives
    gradients; ``queue`` (dim, K) and ``queue_ptr`` (1,) are buffers, so they are in
    ``state_dict`` with the keys the official checkpoints use.

    Args:
        encoder: the query encoder (copied to make the key encoder).
        dim: embedding width C (128 in the paper).
        queue_size: K, the number of negatives (65536 for ImageNet, 4096 for CIFAR).
        momentum: m of the key-encoder update (0.999 in the paper, 0.99 in the CIFAR demo).
        temperature: tau (0.07 v1, 0.2 v2, 0.1 CIFAR demo).
        shuffle_keys: shuffle the key batch before the key encoder (Sec. 3.3). It only
            breaks the BN leak when the key encoder's BN sees groups (bn_splits > 1 on one
            device, or one group per process when distributed).
        symmetric: the official CIFAR demo's symmetric loss, ctr(q1, k2) + ctr(q2, k1)
            against the same queue, both views' keys enqueued (2N per step); both views
            then go through the query encoder in one call (:mod:`moco.core.method`).
    """

    name = "moco"
    negatives = "queue"
    key_names = ("encoder_k",)
    reads_shuffle = True

    queue: torch.Tensor
    queue_ptr: torch.Tensor

    def __init__(
        self,
        encoder: nn.Module,
        dim: int = 128,
        queue_size: int = 65536,
        momentum: float = 0.999,
        temperature: float = 0.07,
        shuffle_keys: bool = True,
        symmetric: bool = False,
    ) -> None:
        super().__init__()
        check_temperature(temperature)
        check_unit("momentum", momentum)
        self.momentum = momentum
        self.temperature = temperature
        self.shuffle_keys = shuffle_keys
        self.symmetric = symmetric
        self.encoder_q = encoder
        self.encoder_k = momentum_copy(encoder)
        self.register_buffer("queue", init_queue(dim, queue_size))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @classmethod
    def from_options(
        cls, encoder: nn.Module, opts: MethodOptions, num_images: int, bn_splits: int
    ) -> MoCo:
        return cls(
            encoder,
            opts.dim,
            opts.queue_size,
            opts.momentum,
            opts.temperature,
            opts.shuffle_keys,
            opts.symmetric,
        )

    @staticmethod
    def views_in_one_call(opts: MethodOptions) -> bool:
        return opts.symmetric

    @property
    def queue_size(self) -> int:
        return int(self.queue.shape[1])

    def forward(
        self,
        x_q: torch.Tensor,
        x_k: torch.Tensor,
        index: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        online: Mapping[str, nn.Module] | None = None,
    ) -> StepOutput:
        """Queries, keys and the InfoNCE loss against the current queue.

        x_q, x_k: (N, ...) two augmented views of the same N images. Keys come from
        encoder_k on the shuffled x_k, without gradient, and are un-shuffled before the
        loss; ``generator`` draws that shuffle (for reproducible tests). The forward pass
        changes no state but BN running statistics: the momentum update and the enqueue
        are explicit calls, made in Algorithm 1's order by
        :func:`moco.engine.step.train_step`: ``momentum_update()``, ``forward``, backward
        and SGD step, ``enqueue(out.k)``. Enqueueing after the backward pass keeps the
        queue that the loss saved for backward intact without a per-step copy of it.

        ``online["encoder_q"]`` runs the queries instead of ``encoder_q`` itself: the
        DDP wrapper of ``encoder_q`` when distributed (only the trainable encoder is
        wrapped; the key encoder and the queue stay outside DDP). When distributed,
        x_q and x_k are this process's slice of the global batch, the key shuffle
        spans all processes, and the loss is this slice's mean (DDP's gradient average
        makes it the global batch's). ``index`` is not used.
        """
        encoder = self.online("encoder_q", online)
        if not self.symmetric:
            q = F.normalize(encoder(x_q), dim=1)
            with torch.no_grad():
                k = self._keys(x_k, generator)
            out = info_nce(q, k, self.queue, self.temperature)
            return StepOutput(out.loss, out.correct, q, k)
        n = len(x_q)
        q1, q2 = F.normalize(encoder(torch.cat([x_q, x_k])), dim=1).split(n)
        with torch.no_grad():
            k2, k1 = self._keys(x_k, generator), self._keys(x_q, generator)
        a, b = (
            info_nce(q1, k2, self.queue, self.temperature),
            info_nce(q2, k1, self.queue, self.temperature),
        )
        return StepOutput(
            a.loss + b.loss, torch.cat([a.correct, b.correct]), q1, torch.cat([k2, k1])
        )

    def chance_loss(self, batch: int) -> float:
        """ln(K + 1) (twice that for the symmetric loss)."""
        return (2 if self.symmetric else 1) * math.log(self.queue_size + 1)

    @torch.no_grad()
    def diagnostic_logits(self, out: StepOutput) -> torch.Tensor:
        """The first view's queries against their keys and the queue (as the loss saw it)."""
        q = out.q.detach()
        pos = (q * out.k[: len(q)].to(q.dtype)).sum(dim=1, keepdim=True)
        return torch.cat([pos, q @ self.queue.to(q.dtype)], dim=1)

    @torch.no_grad()
    def momentum_update(self, m: float | None = None) -> None:
        """theta_k <- m theta_k + (1 - m) theta_q (Eq. 2), run before the key forward."""
        momentum_update(self.encoder_k, self.encoder_q, self.momentum if m is None else m)

    @torch.no_grad()
    def after_step(self, out: StepOutput, index: torch.Tensor | None = None) -> None:
        """Enqueue the step's keys (Algorithm 1's last line)."""
        self.enqueue(out.k)

    @torch.no_grad()
    def enqueue(self, k: torch.Tensor) -> None:
        """Enqueue this batch's keys (N, C), dequeuing the N oldest.

        When distributed, every rank's keys are gathered first (rank order), so the
        queue receives the global batch and stays identical on every rank without ever
        being broadcast.
        """
        enqueue_(self.queue, self.queue_ptr, dist.all_gather_nograd(k))

    def _keys(self, x_k: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not self.shuffle_keys:
            return F.normalize(self.encoder_k(x_k), dim=1)
        x_shuf, inverse = batch_shuffle(x_k, generator)
        return batch_unshuffle(F.normalize(self.encoder_k(x_shuf), dim=1), inverse)
