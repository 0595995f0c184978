"""Read the query encoder out of an official MoCo v1/v2 checkpoint (``main_moco.py``).

Those files hold ``arch``, ``epoch``, ``optimizer`` and a ``state_dict`` with
``module.encoder_q.*`` / ``module.encoder_k.*`` / ``module.queue`` keys, but no config:
the head (v1 linear ``fc`` or v2 MLP ``fc.0``/``fc.2``), its width, the stem and the
input channels are read off the tensors' shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from moco.encoders.resnet import ARCHS, ResNet, build_encoder, build_resnet
from moco.errors import ExportError
from moco.export.keys import check_keys
from moco.export.torchvision import query_encoder_state


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
    if conv1.ndim != 4:
        raise ExportError(f"conv1.weight has shape {tuple(conv1.shape)}, not a conv's 4 dims")
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


def infer_arch(state_dict: dict[str, torch.Tensor]) -> str:
    """The ResNet whose block type and blocks per stage the query encoder's keys show
    (``layer3.22.*`` is the 23rd block of stage 3; a Bottleneck has ``conv3``)."""
    enc = query_encoder_state(state_dict)
    blocks = [
        len({m[1] for k in enc if (m := re.match(rf"layer{stage}\.(\d+)\.", k))})
        for stage in (1, 2, 3, 4)
    ]
    if not any(blocks):
        raise ExportError("the query encoder has no layer1-4 blocks: not a ResNet")
    kind = "Bottleneck" if any(k.endswith(".conv3.weight") for k in enc) else "BasicBlock"
    for arch, (block, layers) in ARCHS.items():
        if layers == blocks and block.__name__ == kind:
            return arch
    raise ExportError(f"no ResNet ({', '.join(ARCHS)}) has {blocks} {kind}s per stage")


def backbone_shapes(state_dict: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Size]:
    """Name -> shape of the backbone (no ``fc``) of the ResNet the query encoder claims to
    be: ``arch`` with the stem, input channels and width of :func:`infer_spec`. Built on
    the meta device: no memory for the weights, no draws from the random generator."""
    spec = infer_spec(state_dict, arch)
    with torch.device("meta"):
        net = build_resnet(spec.arch, 1, spec.cifar_stem, spec.in_chans, spec.width)
    return {k: v.shape for k, v in net.state_dict().items() if not k.startswith("fc.")}


def load_query_encoder(state_dict: dict[str, torch.Tensor], arch: str) -> ResNet:
    """Build the encoder the state dict describes and load it strictly."""
    spec = infer_spec(state_dict, arch)
    net = build_encoder(spec.arch, spec.dim, spec.mlp, spec.cifar_stem, spec.in_chans, spec.width)
    enc = query_encoder_state(state_dict)
    expected = {k: v.shape for k, v in net.state_dict().items()}
    check_keys(enc, expected, f"the {arch} its conv1 and head describe")
    net.load_state_dict(enc, strict=True)
    return net
