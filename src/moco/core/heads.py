"""Projection heads: v1 linear (MoCo Sec. 3.3), v2 2-layer MLP (MoCo v2, Sec. 2)."""

from __future__ import annotations

from torch import nn


def build_head(in_dim: int, out_dim: int, mlp: bool) -> nn.Module:
    """v1: Linear(in, out). v2: Linear(in, in) - ReLU - Linear(in, out), hidden = in_dim.

    Module indices match the official code, where the v2 head replaces ``fc`` with
    ``Sequential(Linear, ReLU, fc)``: parameter keys are ``fc.weight`` (v1) or
    ``fc.0.*`` and ``fc.2.*`` (v2), so official tools strip the head the same way.
    """
    if not mlp:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(
        nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim)
    )
