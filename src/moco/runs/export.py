"""``moco export``: a checkpoint's query encoder written for another library.

The conversions themselves are the pure maps of :mod:`moco.export`; this reads the
checkpoint (ours or an official ``main_moco.py`` one), applies the map of the format
asked for and writes the result (atomically, or as detectron2's pickle).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from moco.engine import checkpoint as ckpt_io
from moco.errors import CheckpointError, ExportError
from moco.export import to_torchvision
from moco.export.detectron2 import save_detectron2, to_detectron2
from moco.export.timm import to_timm

FORMATS = ("torchvision", "detectron2", "timm")


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
    if fmt == "timm":
        tensors = dict(to_timm(state["state_dict"], state["arch"], num_classes))
    else:
        tensors = dict(to_torchvision(state["state_dict"], state["arch"], num_classes, fc))
    ckpt_io.save_atomic(tensors, path)
    return Exported(path, fmt, state["arch"], len(tensors))
