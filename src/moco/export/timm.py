"""MoCo checkpoint -> timm ResNet state dict (``timm.create_model(arch, num_classes=...)``).

timm's ResNets use torchvision's parameter names, so the conversion is the torchvision
one; what differs is the target the key set is checked against (timm's own model, when
timm is installed) and the default head: ``num_classes=0`` (timm's feature extractor, no
``fc``), else a freshly initialised ``fc`` of that width.
"""

from __future__ import annotations

import torch

from moco.errors import ExportError
from moco.export.keys import check_keys
from moco.export.torchvision import SHAPE_HINT, encoder_state


def to_timm(
    state_dict: dict[str, torch.Tensor], arch: str, num_classes: int = 0
) -> dict[str, torch.Tensor]:
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
