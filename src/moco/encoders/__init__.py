"""Backbones with torchvision's parameter names, so weights load both ways."""

from moco.encoders.resnet import ARCHS, ResNet, build_encoder, build_resnet

__all__ = ["ARCHS", "ResNet", "build_encoder", "build_resnet"]
