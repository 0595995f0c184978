"""MoCo checkpoint -> timm state dict (``timm.create_model(arch, num_classes=...)``).

timm's ResNets use torchvision's parameter names, so the conversion is the torchvision
one; what differs is the target the key set is checked against (timm's own model, when
timm is installed) and the default head: ``num_classes=0`` (timm's feature extractor, no
``fc``), else a freshly initialised ``fc`` of that width.

A ``timm:NAME`` encoder (:mod:`moco.encoders.library`) is timm's own model under
``backbone.``: the prefix is stripped and the keys checked against
``timm.create_model(NAME, num_classes=..., in_chans=..., img_size=...)`` (the run's
channels and size; ``img_size`` where the model has that option), whose classifier, if
any, is freshly initialised.
"""

from __future__ import annotations

import torch

from moco.encoders.library import build_library_model
from moco.errors import ExportError, MocoError
from moco.export.keys import check_keys
from moco.export.torchvision import SHAPE_HINT, backbone_state, encoder_state


def to_timm(
    state_dict: dict[str, torch.Tensor],
    arch: str,
    num_classes: int = 0,
    in_chans: int = 3,
    img_size: int = 224,
) -> dict[str, torch.Tensor]:
    """A state dict for timm's ``arch`` (our ResNet names: timm's ResNet of that name;
    ``timm:NAME``: that model, built for ``in_chans`` and ``img_size``)."""
    if arch.startswith("timm:"):
        return _library_to_timm(state_dict, arch, num_classes, in_chans, img_size)
    if ":" in arch:
        raise ExportError(
            f"{arch} is not a timm model: export it with --format torchvision, safetensors or onnx"
        )
    try:
        import timm
    except ImportError as err:
        raise ExportError("the timm export needs timm: pip install timm") from err
    if arch not in timm.list_models(arch):
        raise ExportError(f"timm has no architecture {arch!r}")
    reference = timm.create_model(arch, pretrained=False, num_classes=num_classes).state_dict()
    backbone = encoder_state(state_dict)
    expected = {k: v for k, v in reference.items() if not k.startswith("fc.")}
    check_keys(backbone, {k: v.shape for k, v in expected.items()}, f"timm {arch}", SHAPE_HINT)
    out = {k: backbone[k].clone() for k in expected}
    out.update({k: v.clone() for k, v in reference.items() if k.startswith("fc.")})
    return out


def _library_to_timm(
    state_dict: dict[str, torch.Tensor],
    arch: str,
    num_classes: int,
    in_chans: int,
    img_size: int,
) -> dict[str, torch.Tensor]:
    name = arch.partition(":")[2]
    try:
        reference = build_library_model("timm", name, in_chans, img_size, True, num_classes)
    except MocoError as err:
        raise ExportError(str(err)) from err
    ref = reference.state_dict()
    fresh = {k: v.shape for k, v in reference.state_dict().items()}
    # timm's classifier: what num_classes=0 leaves out (the same model without it)
    without = build_library_model("timm", name, in_chans, img_size, False).state_dict()
    head_keys = set(fresh) - set(without)
    expected = {k: v for k, v in fresh.items() if k not in head_keys}
    backbone = backbone_state(state_dict)
    check_keys(backbone, expected, f"timm {name}", "input channels or image size?")
    out = {k: backbone[k].clone() for k in expected}
    out.update({k: ref[k].clone() for k in sorted(head_keys)})
    return out
