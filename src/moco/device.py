"""Which device a process trains on, and the mixed precision it runs natively (a leaf:
only torch and :mod:`moco.dist`)."""

from __future__ import annotations

import torch

from moco import dist
from moco.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU. Under torchrun a CUDA device without an
    index becomes ``cuda:LOCAL_RANK`` (one GPU per process)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device={name!r} but CUDA is not available; use cpu or auto")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", dist.local_rank() if dist.launched() else 0)
    return device


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matmuls / convolutions natively (so autocast wins):
    CUDA with bf16 support (Ampere and later), or a CPU that oneDNN runs bf16 on."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_amp(name: str, device: torch.device) -> str:
    """``optim.amp`` as it runs on ``device``: ``auto`` becomes bf16 or none."""
    if name == "auto":
        return "bf16" if fast_bf16(device) else "none"
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("optim.amp=fp16 needs a CUDA device; use bf16 on CPU")
    return name


def amp_dtype(amp: str) -> torch.dtype | None:
    """The autocast dtype of a resolved ``amp`` ("none", "bf16", "fp16"); None: no autocast."""
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def grad_scaler(amp: str) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling (CUDA); bf16 and fp32 do not."""
    return torch.amp.GradScaler("cuda") if amp == "fp16" else None
