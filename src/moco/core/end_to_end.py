"""End-to-end (MoCo Fig. 2a): keys from the query encoder itself, with gradient; the
negatives are the other keys of the current (global) batch, so K = batch size."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from moco import dist
from moco.core.losses import batch_contrastive
from moco.core.method import ContrastiveMethod, MethodOptions, StepOutput, check_temperature
from moco.core.shuffle_bn import batch_shuffle

__all__ = ["EndToEnd"]


class EndToEnd(ContrastiveMethod):
    """The end-to-end mechanism MoCo compares against (Sec. 3.2, Fig. 2a and 3).

    One encoder, ``encoder_q``, encodes queries and keys, and both receive gradients.
    Both views go through one call on ``cat([x_q, x_k])`` (:mod:`moco.core.method`).

    Args:
        encoder: the encoder (backbone with its head as ``fc``).
        temperature: tau of the softmax.
        shuffle_keys: shuffle the key batch (across processes when distributed) before
            the encoder, as MoCo's shuffling BN (Sec. 3.3) does for its key encoder, so
            a key's BN group is not made of its query's images.
    """

    name = "end_to_end"
    negatives = "batch"
    reads_shuffle = True

    @classmethod
    def from_options(
        cls, encoder: nn.Module, opts: MethodOptions, num_images: int, bn_splits: int
    ) -> EndToEnd:
        return cls(encoder, opts.temperature, opts.shuffle_keys)

    @staticmethod
    def views_in_one_call(opts: MethodOptions) -> bool:
        return True

    def __init__(self, encoder: nn.Module, temperature: float, shuffle_keys: bool = True) -> None:
        super().__init__()
        check_temperature(temperature)
        self.temperature = temperature
        self.shuffle_keys = shuffle_keys
        self.encoder_q = encoder

    def forward(
        self,
        x_q: torch.Tensor,
        x_k: torch.Tensor,
        index: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        online: Mapping[str, nn.Module] | None = None,
    ) -> StepOutput:
        """Queries (N, C) against the W * N keys of the global batch, all with gradient.

        With ``shuffle_keys``, x_k is shuffled by :func:`batch_shuffle` (its permutation
        spans processes; ``generator`` draws it) before the encoder. Un-shuffling with
        :func:`batch_unshuffle` would cut the gradient, so instead the shuffled keys are
        gathered with gradient and put back in the global batch's order by indexing
        with the inverse permutation (a differentiable gather): the same logits as
        locating each query's positive in the shuffled order, with the positives at
        columns rank * N + i. ``index`` is not used. ``k`` is this process's keys in
        the order of x_k, detached.
        """
        encoder = self.online("encoder_q", online)
        n = len(x_q)
        inverse: torch.Tensor | None = None
        if self.shuffle_keys:
            x_k, inverse = batch_shuffle(x_k, generator)
        q, k = F.normalize(encoder(torch.cat([x_q, x_k])), dim=1).split(n)
        k_all = dist.all_gather_grad(k)  # (W * N, C), in shuffled order if shuffled
        if inverse is not None:
            k_all = k_all[inverse]  # row j: the key of global image j
        offset = dist.rank() * n
        out = batch_contrastive(q, k_all, self.temperature, offset)
        return StepOutput(out.loss, out.correct, q, k_all[offset : offset + n].detach())
