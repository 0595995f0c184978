"""What every backbone offers the methods, evaluation and export: the Encoder protocol.

A backbone is an ``nn.Module`` split as timm splits its models: ``forward_features``
gives the pooled pre-logits features (N, ``feature_dim``) that kNN, the linear probe
and embeddings use, and ``fc`` is the head on top of them (a method replaces it with
its projection head; ``forward`` is ``fc(forward_features(x))``). ResNets and ViTs
both satisfy it; code that needs the features asks for an :class:`Encoder` through
:func:`as_encoder` instead of pretending every backbone is a ResNet.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Encoder(Protocol):
    feature_dim: int  # width of forward_features' output
    fc: nn.Module  # the head: the method's projection, or a classifier

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, feature_dim) pooled features."""
        ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, out): ``fc(forward_features(x))``."""
        ...


def as_encoder(module: nn.Module) -> Encoder:
    """``module`` as an :class:`Encoder`, or a TypeError naming what it lacks."""
    if not isinstance(module, Encoder):
        missing = [a for a in ("feature_dim", "fc", "forward_features") if not hasattr(module, a)]
        raise TypeError(f"{type(module).__name__} is not an encoder: it lacks {missing}")
    return module
