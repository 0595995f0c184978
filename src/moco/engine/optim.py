"""Optimisers: SGD (MoCo v1/v2), LARS (SimCLR, MoCo v3 with ResNets) and AdamW (MoCo v3
with ViTs).

MoCo trains with SGD and weight decay on every parameter, as the official code does.
SimCLR and MoCo v3 (ResNet) use LARS (You et al. 2017, "Large Batch Training of
Convolutional Networks"): each parameter's update is scaled by a layer-wise trust ratio
``eta * ||w|| / ||g + wd * w||``, and biases and norm parameters get neither weight decay
nor the trust ratio (PAPER.md Sec. 3, 4). MoCo v3 trains ViTs with AdamW (Sec. 4; lr 1.5e-4
x batch / 256, weight decay 0.1); biases and norm parameters get no weight decay here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from moco.errors import ConfigError

OPTIMIZERS = ("sgd", "lars", "adamw")


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio (You et al. 2017).

    For each parameter ``w`` with gradient ``g`` of a group without ``lars_exclude``::

        d = g + weight_decay * w
        r = eta * ||w|| / ||d||          (r = 1 where ||w|| = 0 or ||d|| = 0)
        buf = momentum * buf + r * d
        w = w - lr * buf

    A group with ``lars_exclude=True`` (biases, BN) is plain momentum SGD with no weight
    decay: ``buf = momentum * buf + g``. This is the form SimCLR and MoCo v3 use: the
    trust ratio scales the step before the momentum buffer, and the lr multiplies the
    buffer. Norms and the ratio stay on the device (``torch.where``, no host syncs).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
        lars_exclude: bool = False,
    ) -> None:
        if lr < 0:
            raise ConfigError(f"lr must be >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}")
        if eta <= 0:
            raise ConfigError(f"eta (trust coefficient) must be > 0, got {eta}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "lars_exclude": lars_exclude,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            exclude = bool(group["lars_exclude"])
            wd, eta = group["weight_decay"], group["eta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not exclude:
                    if wd != 0:
                        d = d.add(p, alpha=wd)
                    w_norm = torch.linalg.vector_norm(p)
                    d_norm = torch.linalg.vector_norm(d)
                    ratio = torch.where(
                        (w_norm > 0) & (d_norm > 0),
                        eta * w_norm / d_norm,
                        torch.ones_like(w_norm),
                    )
                    d = d.mul(ratio)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.zeros_like(p)
                buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])
        return loss


def build_optimizer(
    named_params: Iterable[tuple[str, nn.Parameter]],
    name: str,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    """The optimiser ``name`` (``optim.optimizer``) over the trainable parameters.

    ``sgd``: one group, weight decay on every parameter (the official MoCo code).
    ``lars``: weights with ``ndim > 1`` get weight decay and the trust ratio; biases and
    norm parameters (``ndim <= 1``) go to a ``lars_exclude`` group without either
    (SimCLR / MoCo v3 convention). ``adamw``: :class:`torch.optim.AdamW` with PyTorch's
    default betas (0.9, 0.999), ``momentum`` unused; weight decay on ``ndim > 1``
    weights only, biases and norm parameters in a group with none (the DeiT / MAE / timm
    convention; the official MoCo v3 script decays every parameter). Parameters with
    ``requires_grad=False`` are left out.
    """
    name = str(getattr(name, "value", name))  # the config's Optimizer enum, or a string
    params = [(n, p) for n, p in named_params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(
            [p for _, p in params], lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    if name in ("lars", "adamw"):
        decayed = [p for _, p in params if p.ndim > 1]
        excluded = [p for _, p in params if p.ndim <= 1]
        groups: list[dict[str, Any]] = []
        if decayed:
            groups.append({"params": decayed})
        if excluded:
            groups.append({"params": excluded, "weight_decay": 0.0})
            if name == "lars":
                groups[-1]["lars_exclude"] = True
        if not groups:
            raise ConfigError("build_optimizer got no parameters with requires_grad=True")
        if name == "adamw":
            return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
