"""``moco export``: a checkpoint's query encoder written for another library or runtime.

The conversions themselves are the pure maps of :mod:`moco.export`; this reads the
checkpoint (ours or an official ``main_moco.py`` one), applies the map of the format
asked for and writes the result (atomically, or as detectron2's pickle). ONNX needs the
encoder itself: ours is rebuilt from the checkpoint's config (as evaluation does), an
official one from its shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from moco.config.schema import from_yaml
from moco.engine import checkpoint as ckpt_io
from moco.engine.build import build_model
from moco.errors import CheckpointError, ExportError
from moco.export import load_query_encoder, to_torchvision
from moco.export.detectron2 import save_detectron2, to_detectron2
from moco.export.onnx import export_onnx
from moco.export.safetensors import save_safetensors, to_safetensors
from moco.export.timm import to_timm
from moco.export.torchvision import query_encoder_state

FORMATS = ("torchvision", "detectron2", "timm", "safetensors", "onnx")


@dataclass(frozen=True)
class Exported:
    """What :func:`export_checkpoint` wrote."""

    path: Path
    fmt: str  # one of FORMATS
    arch: str | None  # the checkpoint's arch (detectron2 does not need it)
    tensors: int  # entries of the written state dict


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    fmt: str = "torchvision",
    num_classes: int = 1000,
    fc: str = "init",
) -> Exported:
    """Write the checkpoint's query encoder to ``out`` in format ``fmt``.

    torchvision: a state dict that loads with ``strict=True`` into
    ``torchvision.models.<arch>(num_classes)``, fc re-initialised (``fc="init"``) or left
    out (``"drop"``). timm: checked against timm's own model (``num_classes=0``: no fc).
    detectron2: a pickle with MoCo's rename table and ``matching_heuristics``.
    safetensors: the backbone's state dict (no head) with its library's names. onnx: the
    encoder's pooled features, dynamic batch axis, at the run's channels and size.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}")
    state = ckpt_io.load(checkpoint)
    path = Path(out)
    if fmt == "detectron2":
        obj = to_detectron2(state["state_dict"])
        save_detectron2(obj, path)
        return Exported(path, fmt, state.get("arch"), len(obj["model"]))
    if "arch" not in state:
        raise CheckpointError(f"{state['path']} does not say its 'arch'")
    in_chans, size = _input_shape(state)
    if fmt == "onnx":
        encoder = _query_encoder(state)
        export_onnx(encoder, path, in_chans, size)
        return Exported(path, fmt, state["arch"], len(encoder.state_dict()))
    if fmt == "safetensors":
        tensors = to_safetensors(state["state_dict"])
        meta = {"arch": str(state["arch"]), "in_chans": str(in_chans), "img_size": str(size)}
        save_safetensors(tensors, path, meta)
        return Exported(path, fmt, state["arch"], len(tensors))
    if fmt == "timm":
        tensors = dict(to_timm(state["state_dict"], state["arch"], num_classes, in_chans, size))
    else:
        tensors = dict(to_torchvision(state["state_dict"], state["arch"], num_classes, fc, size))
    ckpt_io.save_atomic(tensors, path)
    return Exported(path, fmt, state["arch"], len(tensors))


def _input_shape(state: dict[str, Any]) -> tuple[int, int]:
    """(channels, image side) the encoder was trained at: ours from the run's plan and
    config; an official checkpoint from its conv1 (7x7 stem: ImageNet's 224 px)."""
    if "config" in state and "derived" in state:
        cfg = from_yaml(state["config"])
        derived = state["derived"]  # the plan; its mean has one entry per channel
        return int(derived.get("in_chans", len(derived["mean"]))), cfg.augment.size
    conv1 = query_encoder_state(state["state_dict"]).get("conv1.weight")
    if conv1 is None or conv1.ndim != 4:
        return 3, 224
    return int(conv1.shape[1]), 224 if conv1.shape[-1] == 7 else 32


def _query_encoder(state: dict[str, Any]) -> nn.Module:
    """The checkpoint's query encoder, weights loaded strictly, in eval mode."""
    if "config" not in state:  # an official main_moco.py checkpoint
        return load_query_encoder(state["state_dict"], state["arch"]).eval()
    cfg = from_yaml(state["config"])
    in_chans, _ = _input_shape(state)
    encoder = build_model(cfg, in_chans, quiet=True).encoder_q
    encoder.load_state_dict(query_encoder_state(state["state_dict"]), strict=True)
    return encoder.eval()
