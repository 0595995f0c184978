"""Projection heads: v1 linear (MoCo Sec. 3.3), v2 2-layer MLP (MoCo v2, Sec. 2), and the
BN MLPs of MoCo v3 (projector and predictor, MoCo v3 Sec. 4 and its official code)."""

from __future__ import annotations

from torch import nn

from moco.layers.split_bn import SplitBatchNorm1d


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
