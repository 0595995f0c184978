"""Read the query encoder out of an official MoCo v1/v2 checkpoint (``main_moco.py``).

Those files hold ``arch``, ``epoch``, ``optimizer`` and a ``state_dict`` with
``module.encoder_q.*`` / ``module.encoder_k.*`` / ``module.queue`` keys, but no config:
the head (v1 linear ``fc`` or v2 MLP ``fc.0``/``fc.2``), its width, the stem and the
input channels are read off the tensors' shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moco.encoders.resnet import ResNet, build_encoder
from moco.export.torchvision import ExportError, query_encoder_state


@dataclass(frozen=True)
class EncoderSpec:
    arch: str
    dim: int
    mlp: bool
    cifar_stem: bool
    in_chans: int
    width: float


def infer_spec(state_dict: dict[str, torch.Tensor], arch: str) -> EncoderSpec:
    enc = query_encoder_state(state_dict)
    if "conv1.weight" not in enc:
        raise ExportError("the query encoder has no conv1.weight: not a ResNet")
    conv1 = enc["conv1.weight"]
    mlp = "fc.0.weight" in enc
    head_out = enc["fc.2.weight"] if mlp else enc.get("fc.weight")
    if head_out is None:
        raise ExportError("the query encoder has no head (fc.weight or fc.2.weight)")
    return EncoderSpec(
        arch=arch,
        dim=int(head_out.shape[0]),
        mlp=mlp,
        cifar_stem=conv1.shape[-1] == 3,
        in_chans=int(conv1.shape[1]),
        width=conv1.shape[0] / 64,
    )


def load_query_encoder(state_dict: dict[str, torch.Tensor], arch: str) -> ResNet:
    """Build the encoder the state dict describes and load it strictly."""
    spec = infer_spec(state_dict, arch)
    net = build_encoder(spec.arch, spec.dim, spec.mlp, spec.cifar_stem, spec.in_chans, spec.width)
    net.load_state_dict(query_encoder_state(state_dict), strict=True)
    return net
