"""MoCo checkpoint -> detectron2 pickle, with the rename table MoCo's detection transfer uses.

torchvision names -> detectron2 ResNet names: ``layerN`` -> ``res{N+1}``, ``bnK`` ->
``convK.norm``, ``downsample.0`` / ``.1`` -> ``shortcut`` / ``shortcut.norm``, and the
stem (``conv1``, ``bn1``) under ``stem.``. The file holds ``{"model": {name: ndarray},
"__author__": "MOCO", "matching_heuristics": True}``; detectron2 then matches these
names to its backbone (MoCo Sec. 4.2 fine-tunes it with SyncBN).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moco.errors import ExportError
from moco.export.keys import check_keys
from moco.export.official import backbone_shapes, infer_arch
from moco.export.torchvision import encoder_state


def rename(key: str) -> str:
    """One torchvision backbone key -> its detectron2 name."""
    new = re.sub(r"^layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", key)
    new = re.sub(r"bn(\d)", r"conv\1.norm", new)
    new = new.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
    return new if new.startswith("res") else "stem." + new


def to_detectron2(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The detectron2 checkpoint dict for a MoCo checkpoint's query-encoder backbone.

    Its keys and shapes are first checked against the ResNet the checkpoint claims to be:
    the arch its blocks show, at the stem, input channels and width of its ``conv1``.
    """
    backbone = encoder_state(state_dict)
    arch = infer_arch(state_dict)
    check_keys(backbone, backbone_shapes(state_dict, arch), f"the {arch} its blocks describe")
    model = {rename(k): v.detach().cpu().numpy() for k, v in backbone.items()}
    if len(model) != len(backbone):
        raise ExportError("two keys map to the same detectron2 name")
    bad = [k for k in model if not re.match(r"^(stem\.conv1|res[2-5]\.\d+\.)", k)]
    if bad:
        raise ExportError(f"keys outside detectron2's ResNet layout: {bad[:5]}")
    return {"model": model, "__author__": "MOCO", "matching_heuristics": True}


def save_detectron2(obj: dict[str, Any], path: str | Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


# What a detectron2 weights pickle may name besides plain data: numpy's array and dtype
# reconstruction (numpy.core in files numpy 1 wrote, numpy._core in numpy 2's;
# _frombuffer for protocol 5) and the function a protocol-2 pickle stores bytes with.
# Rebuilding an array runs no code of the file's choosing; any other global is refused.
_ARRAY_GLOBALS = {
    *((f"numpy.{core}.multiarray", name) for core in ("core", "_core")
      for name in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}  # fmt: skip


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"it needs {module}.{name} to unpickle")
        return super().find_class(module, name)


def load_detectron2(path: str | Path) -> dict[str, np.ndarray]:
    """The ``model`` dict (name -> array) of a detectron2 weights pickle, ours or the
    official converter's. The file is data: one that needs any global other than numpy's
    array reconstruction is refused (:class:`ExportError`), never executed."""
    try:
        with open(path, "rb") as f:
            obj = _ArraysOnlyUnpickler(f).load()
    except pickle.UnpicklingError as err:
        raise ExportError(
            f"refused to load {str(path)!r}: {err}. A detectron2 weights file must hold "
            "numpy arrays and plain data only; nothing in it was run"
        ) from None
    except (OSError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ExportError(f"cannot read detectron2 weights {str(path)!r}: {err}") from err
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        raise ExportError(f"{str(path)!r} is not a detectron2 weights file (no 'model' dict)")
    return obj["model"]
