"""Backbones: torchvision-named ResNets, and timm ViTs (when timm is installed)."""

from moco.encoders.resnet import ARCHS, ResNet, build_encoder, build_resnet
from moco.encoders.vit import VIT_ARCHS, ViTEncoder, build_vit

__all__ = [
    "ARCHS",
    "VIT_ARCHS",
    "ResNet",
    "ViTEncoder",
    "build_encoder",
    "build_resnet",
    "build_vit",
]
