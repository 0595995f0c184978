"""Split BN: BatchNorm that normalises G contiguous groups of the batch apart.

The building block of shuffling BN on one device (MoCo Sec. 3.3; the key-batch shuffle
itself is :mod:`moco.core.shuffle_bn`). A split-BN layer keeps BatchNorm's parameter and
buffer names and shapes, so state dicts load into plain torchvision / timm models. The
encoders use it without knowing the method; the methods' heads use the 1-d variant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _split_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, g: int) -> torch.Tensor:
    """Training-mode BN of ``x`` (n, C, ...) with G contiguous chunks normalised apart."""
    n, c = x.shape[0], x.shape[1]
    rest = x.shape[2:]
    if n % g != 0:
        raise ValueError(f"batch of {n} is not divisible into {g} BN groups (bn_splits)")
    if bn.momentum is None:
        raise ValueError(f"{type(bn).__name__} needs a float momentum")
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    # (G, n/G, C, ...) -> (n/G, G*C, ...): each group's channels become separate
    # channels of one BN call, so one kernel normalises all groups.
    xs = x.reshape(g, n // g, c, *rest).transpose(0, 1).reshape(n // g, g * c, *rest)
    mean = bn.running_mean.repeat(g) if bn.running_mean is not None else None
    var = bn.running_var.repeat(g) if bn.running_var is not None else None
    weight = bn.weight.repeat(g) if bn.weight is not None else None
    bias = bn.bias.repeat(g) if bn.bias is not None else None
    out = F.batch_norm(xs, mean, var, weight, bias, True, bn.momentum, bn.eps)
    if bn.running_mean is not None and bn.running_var is not None:
        assert mean is not None and var is not None
        with torch.no_grad():
            bn.running_mean.copy_(mean.view(g, c).mean(dim=0))
            bn.running_var.copy_(var.view(g, c).mean(dim=0))
    return out.reshape(n // g, g, c, *rest).transpose(0, 1).reshape(n, c, *rest)


class _Groups(nn.modules.batchnorm._BatchNorm):
    """A BN layer that, in training with ``num_splits`` G > 1, normalises G contiguous
    chunks of the batch apart (:func:`_split_batch_norm`); plain BN otherwise."""

    def __init__(self, num_features: int, num_splits: int = 1, **kwargs: object) -> None:
        super().__init__(num_features, **kwargs)  # type: ignore[arg-type]
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        self._check_input_dim(x)  # BatchNorm1d: (N, C) or (N, C, L); 2d: (N, C, H, W)
        return _split_batch_norm(self, x, self.num_splits)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_splits={self.num_splits}"


class SplitBatchNorm2d(_Groups, nn.BatchNorm2d):
    """BatchNorm2d that, in training, normalises G contiguous chunks of the batch apart.

    Group g is samples ``[g * N/G, (g+1) * N/G)``, which is what process g of G would
    see after a cross-process shuffle, so one process with G groups reproduces G
    processes with one group each. Buffers, parameters and ``state_dict`` are exactly
    BatchNorm2d's (running stats of shape (C,)), so weights load strictly into a
    torchvision ResNet. In eval mode, and for G = 1, it is plain BatchNorm2d.
    Running stats become the mean over groups of the per-group updates.
    """


class SplitBatchNorm1d(_Groups, nn.BatchNorm1d):
    """BatchNorm1d with ``SplitBatchNorm2d``'s groups, for the BN of MLP heads (MoCo v3's
    projector and predictor): with two views in one call and 2 groups, each view is
    normalised on its own, as in two calls."""
