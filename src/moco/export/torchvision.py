"""MoCo checkpoint -> torchvision state dict (our ResNets, and ``torchvision:NAME`` archs).

Works on our checkpoints and on the official ones alike: both keep the query encoder
under ``module.encoder_q.`` (``encoder_q.`` without DDP). The projection head
(``fc``, or ``fc.0`` / ``fc.2`` for the v2 MLP) is pre-training only (MoCo Sec. 3.3,
v2 Sec. 2) and is dropped; ``fc`` is then either left out or re-initialised as
torchvision initialises a fresh ``Linear``, so that the result loads with
``strict=True`` into ``torchvision.models.resnetXX(num_classes=...)``.

A ``torchvision:NAME`` encoder (:mod:`moco.encoders.library`) keeps the model's names
under ``backbone.``; the export strips that prefix and checks the result against
``torchvision.models.get_model(NAME, num_classes=...)`` with its classifier (the last
``nn.Linear``: ``classifier.3`` of MobileNetV3, ...) re-initialised or left out.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from moco.encoders.library import build_library_model, classifier_name
from moco.errors import ExportError, MocoError
from moco.export.keys import check_keys

ENCODER_PREFIXES = ("module.encoder_q.", "encoder_q.")
SHAPE_HINT = "CIFAR stem, input channels or width?"  # what a torchvision ResNet cannot hold


def query_encoder_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """All ``encoder_q`` tensors (head included), prefix stripped."""
    for prefix in ENCODER_PREFIXES:
        out = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if out:
            return out
    raise ExportError(
        f"no query encoder in this state dict: expected keys starting with {ENCODER_PREFIXES}"
    )


def encoder_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The query encoder's backbone (head dropped), with torchvision's key names."""
    return {k: v for k, v in query_encoder_state(state_dict).items() if not k.startswith("fc.")}


def backbone_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The query encoder's backbone with its library's names: :func:`encoder_state`,
    and without the ``backbone.`` prefix of the timm / torchvision wrappers (ViTs,
    ``torchvision:`` / ``timm:`` archs)."""
    enc = encoder_state(state_dict)
    prefix = "backbone."
    if enc and all(k.startswith(prefix) for k in enc):
        return {k[len(prefix) :]: v for k, v in enc.items()}
    return enc


def to_torchvision(
    state_dict: dict[str, torch.Tensor],
    arch: str,
    num_classes: int = 1000,
    fc: str = "init",
    img_size: int = 224,
) -> dict[str, torch.Tensor]:
    """A state dict for ``torchvision.models.<arch>(num_classes=num_classes)``, or for
    ``torchvision.models.get_model(NAME, num_classes=...)`` when ``arch`` is
    ``torchvision:NAME`` (``img_size``: the run's image size, for the ViTs' option).

    ``fc="init"`` adds a freshly initialised classifier (loads with strict=True);
    ``fc="drop"`` leaves it out (load with strict=False; only fc.* will be missing).
    Raises :class:`ExportError` naming the keys or shapes that do not match, e.g. for a
    CIFAR-stem, greyscale or width-scaled encoder, which torchvision cannot hold.
    """
    if fc not in ("init", "drop"):
        raise ExportError(f"fc must be 'init' or 'drop', got {fc!r}")
    if arch.startswith("torchvision:"):
        return _library_to_torchvision(state_dict, arch, num_classes, fc, img_size)
    if ":" in arch:
        raise ExportError(
            f"{arch} is not a torchvision model: export it with --format timm, safetensors or onnx"
        )
    if not hasattr(torchvision.models, arch) or not arch.startswith("resnet"):
        raise ExportError(f"unknown torchvision ResNet {arch!r}")
    backbone = encoder_state(state_dict)
    reference: nn.Module = getattr(torchvision.models, arch)(num_classes=num_classes)
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    check_keys(
        backbone, {k: v.shape for k, v in expected.items()}, f"torchvision {arch}", SHAPE_HINT
    )
    out = {k: backbone[k].clone() for k in expected}
    if fc == "init":
        out["fc.weight"] = reference.state_dict()["fc.weight"].clone()
        out["fc.bias"] = reference.state_dict()["fc.bias"].clone()
    return out


def _library_to_torchvision(
    state_dict: dict[str, torch.Tensor], arch: str, num_classes: int, fc: str, img_size: int
) -> dict[str, torch.Tensor]:
    name = arch.partition(":")[2]
    try:
        reference = build_library_model("torchvision", name, 3, img_size, True, num_classes)
    except MocoError as err:
        raise ExportError(str(err)) from err
    head = classifier_name(reference)
    ref = reference.state_dict()
    head_keys = {f"{head}.{p}" for p, _ in reference.get_submodule(head).named_parameters()}
    expected = {k: v.shape for k, v in ref.items() if k not in head_keys}
    check_keys(backbone_state(state_dict), expected, f"torchvision {name}", "input channels?")
    backbone = backbone_state(state_dict)
    out = {k: backbone[k].clone() for k in expected}
    if fc == "init":
        out.update({k: ref[k].clone() for k in sorted(head_keys)})
    return out
