"""torchvision ResNets with a CIFAR stem, any number of input channels and a width factor.

Parameter names and (at width 1) shapes are torchvision's: a ``state_dict`` of ours
loads strictly into ``torchvision.models.resnetXX`` and the other way round. The
blocks and ``_make_layer`` are torchvision's own; only the constructor is ours, because
torchvision's hard-codes the 64-128-256-512 widths and the ImageNet stem.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet as tv

from moco.layers.heads import build_head
from moco.layers.split_bn import SplitBatchNorm2d

ARCHS: dict[str, tuple[type[tv.BasicBlock | tv.Bottleneck], list[int]]] = {
    "resnet18": (tv.BasicBlock, [2, 2, 2, 2]),
    "resnet34": (tv.BasicBlock, [3, 4, 6, 3]),
    "resnet50": (tv.Bottleneck, [3, 4, 6, 3]),
    "resnet101": (tv.Bottleneck, [3, 4, 23, 3]),
    "resnet152": (tv.Bottleneck, [3, 8, 36, 3]),
}


class ResNet(tv.ResNet):
    """A torchvision ResNet split into ``forward_features`` (pooled) and ``fc``.

    Args:
        arch: one of ``ARCHS``.
        num_classes: output width of ``fc`` (ignored when ``head`` is given).
        cifar_stem: 3x3 stride-1 conv1 and no max-pool (official MoCo CIFAR demo),
            for 32x32-sized inputs; otherwise torchvision's 7x7/2 conv + max-pool.
        in_chans: input channels (1 for greyscale data).
        width: multiplies every stage width (64, 128, 256, 512); 1.0 is torchvision's.
        norm_layer: BN class for every norm (SplitBatchNorm2d for shuffling BN).
    """

    def __init__(
        self,
        arch: str = "resnet50",
        num_classes: int = 1000,
        cifar_stem: bool = False,
        in_chans: int = 3,
        width: float = 1.0,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        nn.Module.__init__(self)
        block, layers = ARCHS[arch]
        widths = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        self._norm_layer = norm_layer or nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = widths[0], 1, 1, 64
        if cifar_stem:
            self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_chans, widths[0], 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = self._norm_layer(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim = widths[3] * block.expansion
        self.fc: nn.Module = nn.Linear(self.feature_dim, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (N, feature_dim): what linear probes and kNN use."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def build_resnet(
    arch: str,
    num_classes: int = 1000,
    cifar_stem: bool = False,
    in_chans: int = 3,
    width: float = 1.0,
    bn_splits: int = 1,
) -> ResNet:
    """A ResNet whose BN layers are SplitBatchNorm2d with ``bn_splits`` groups."""
    norm = functools.partial(SplitBatchNorm2d, num_splits=bn_splits) if bn_splits > 1 else None
    return ResNet(arch, num_classes, cifar_stem, in_chans, width, norm)


def build_encoder(
    arch: str,
    dim: int = 128,
    mlp: bool = False,
    cifar_stem: bool = False,
    in_chans: int = 3,
    width: float = 1.0,
    bn_splits: int = 1,
) -> ResNet:
    """The MoCo encoder: a ResNet whose ``fc`` is the v1 (linear) or v2 (MLP) head."""
    net = build_resnet(arch, dim, cifar_stem, in_chans, width, bn_splits)
    net.fc = build_head(net.feature_dim, dim, mlp)
    return net
