"""MoCo checkpoint -> a safetensors file of the query encoder's backbone.

The tensors are the backbone's state dict with its library's names (torchvision's for
our ResNets and ``torchvision:`` archs, timm's for ViTs and ``timm:`` archs; the
projection head is dropped), so ``safetensors.torch.load_file`` gives a dict that loads
into that library's model as the ``torchvision`` / ``timm`` exports do. The file's
metadata names the arch, the input channels and the image size it was trained at.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from moco.errors import ExportError
from moco.export.torchvision import backbone_state


def to_safetensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's tensors, each contiguous and with its own storage (safetensors
    refuses shared or strided ones)."""
    out = {k: v.detach().cpu().contiguous().clone() for k, v in backbone_state(state_dict).items()}
    if not out:
        raise ExportError("the query encoder has no backbone tensors")
    return out


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` to ``path`` through a temporary file renamed over it."""
    try:
        from safetensors.torch import save_file
    except ImportError as err:
        raise ExportError(
            "--format safetensors needs safetensors: pip install safetensors"
        ) from err
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
