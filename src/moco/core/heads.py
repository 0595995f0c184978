"""Projection heads: v1 linear (MoCo Sec. 3.3), v2 2-layer MLP (MoCo v2, Sec. 2), and the
BN MLPs of MoCo v3 (projector and predictor, MoCo v3 Sec. 4 and its official code)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def build_head(in_dim: int, out_dim: int, mlp: bool, hidden_dim: int | None = None) -> nn.Module:
    """v1: Linear(in, out). v2: Linear(in, hidden) - ReLU - Linear(hidden, out).

    ``hidden_dim`` defaults to ``in_dim`` (2048 for ResNet-50, as in MoCo v2). Module
    indices match the official code, where the v2 head replaces ``fc`` with
    ``Sequential(Linear, ReLU, fc)``: parameter keys are ``fc.weight`` (v1) or
    ``fc.0.*`` and ``fc.2.*`` (v2), so official tools strip the head the same way.
    """
    if not mlp:
        return nn.Linear(in_dim, out_dim)
    hidden = in_dim if hidden_dim is None else hidden_dim
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
    )


class SplitBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that, in training, normalises G contiguous chunks of an (N, C) batch
    apart: the 1-D twin of :class:`moco.core.shuffle_bn.SplitBatchNorm2d`.

    MoCo v3 runs both views through the projector and predictor in one call (one call
    per step under DDP), while the official code makes one call per view; with G = 2 x
    the groups of one view, each view is normalised in its own groups, as two calls
    would. Buffers and parameters are exactly BatchNorm1d's; eval mode and G = 1 are
    plain BatchNorm1d. Running stats become the mean over groups of the per-group
    updates.
    """

    def __init__(self, num_features: int, num_splits: int = 1, **kwargs: object) -> None:
        super().__init__(num_features, **kwargs)  # type: ignore[arg-type]
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.num_splits
        if not self.training or g == 1:
            return super().forward(x)
        if x.dim() != 2:
            raise ValueError(f"SplitBatchNorm1d expects (N, C), got {tuple(x.shape)}")
        n, c = x.shape
        if n % g != 0:
            raise ValueError(f"batch of {n} is not divisible into {g} BN groups (bn_splits)")
        if self.momentum is None:
            raise ValueError("SplitBatchNorm1d needs a float momentum")
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        # (G, n/G, C) -> (n/G, G*C): each group's channels become channels of one BN call
        xs = x.view(g, n // g, c).transpose(0, 1).reshape(n // g, g * c)
        mean = self.running_mean.repeat(g) if self.running_mean is not None else None
        var = self.running_var.repeat(g) if self.running_var is not None else None
        weight = self.weight.repeat(g) if self.weight is not None else None
        bias = self.bias.repeat(g) if self.bias is not None else None
        out = F.batch_norm(xs, mean, var, weight, bias, True, self.momentum, self.eps)
        if self.running_mean is not None and self.running_var is not None:
            assert mean is not None and var is not None
            with torch.no_grad():
                self.running_mean.copy_(mean.view(g, c).mean(dim=0))
                self.running_var.copy_(var.view(g, c).mean(dim=0))
        return out.view(n // g, g, c).transpose(0, 1).reshape(n, c)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_splits={self.num_splits}"


def build_mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int,
    last_bn: bool = True,
    bn_splits: int = 1,
) -> nn.Sequential:
    """MoCo v3's MLP: (Linear without bias, BN, ReLU) x (num_layers - 1), then a Linear
    without bias and, when ``last_bn``, a BN without affine parameters.

    MoCo v3 (Sec. 4 and the official ``_build_mlp``), ResNet-50: projector of 2 layers
    (2048 -> 4096 -> 256, ``last_bn=True``) replacing ``fc``, predictor of 2 layers
    (256 -> 4096 -> 256, ``last_bn=False``). The linears have no bias because a BN
    follows each of them (a bias would be cancelled); the last layer of the predictor
    has no BN. ``bn_splits`` > 1 uses :class:`SplitBatchNorm1d` with that many groups
    (both views in one call: twice one view's groups); state_dict keys are the same.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")

    def bn(dim: int, affine: bool = True) -> nn.BatchNorm1d:
        if bn_splits == 1:
            return nn.BatchNorm1d(dim, affine=affine)
        return SplitBatchNorm1d(dim, num_splits=bn_splits, affine=affine)

    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in = in_dim if i == 0 else hidden_dim
        last = i == num_layers - 1
        d_out = out_dim if last else hidden_dim
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if not last:
            layers += [bn(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(bn(d_out, affine=False))
    return nn.Sequential(*layers)
