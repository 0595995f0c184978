"""Which device a process trains on, and the mixed precision it runs natively (a leaf:
only torch and :mod:`moco.dist`)."""

from __future__ import annotations

import os

import torch

from moco import dist
from moco.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """The device ``run.device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) names for this
    process, made the current CUDA device when it is one.

    ``auto``: CUDA when available, else CPU. One process: ``cuda`` is ``cuda:0``. Under a
    launcher (torchrun), each process needs a GPU of its own:

    - ``cuda`` / ``auto`` is ``cuda:LOCAL_RANK`` when every process of this node
      (``LOCAL_WORLD_SIZE``) has a visible GPU; with fewer visible GPUs than processes
      every rank stops with a :class:`ConfigError` naming the counts (instead of rank 1
      dying with "invalid device ordinal", or two ranks sharing a GPU, which NCCL refuses).
      A process launched without torchrun's ``LOCAL_WORLD_SIZE`` (e.g. by ``srun`` with
      the variables set by hand) that sees exactly one GPU through a one-entry
      ``CUDA_VISIBLE_DEVICES`` (SLURM's one-GPU-per-task binding) takes ``cuda:0``.
    - an explicit ``cuda:N`` is refused when torchrun starts several processes on this
      node: they all get the same arguments, so every rank would train on GPU N. (It is
      never the only way: NCCL needs one GPU per rank, and ``cuda`` gives each its own.)

    A CUDA device is also made the current one (``torch.cuda.set_device``), so that
    nothing created without an explicit device (NCCL's communicator, cuDNN and cuBLAS
    handles, ``torch.cuda.*`` defaults) lands on GPU 0 by accident.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"run.device={name!r} but CUDA is not available; use cpu or auto")
    device = torch.device("cuda", cuda_index(device.index, torch.cuda.device_count()))
    torch.cuda.set_device(device)
    return device


def cuda_index(requested: int | None, visible: int) -> int:
    """The GPU index this process trains on, by :func:`resolve_device`'s rules, from the
    index ``run.device`` names (None: ``cuda`` or ``auto``) and the number of GPUs this
    process sees; the launcher's variables are read from the environment."""
    launched = dist.launched()
    per_node = dist.local_world_size() if launched else None  # None: the launcher is silent
    if requested is not None:
        if per_node is not None and per_node > 1:
            raise ConfigError(
                f"run.device=cuda:{requested} would put all {per_node} processes of this "
                "node on one GPU (torchrun gives every process the same arguments); use "
                "run.device=cuda or auto, which gives each process the GPU of its LOCAL_RANK"
            )
        if requested >= visible:
            raise ConfigError(f"run.device=cuda:{requested} but this process sees {_seen(visible)}")
        return requested
    if not launched:
        return 0
    local_rank = dist.local_rank()
    if per_node is not None:
        if per_node <= visible:
            return local_rank
        raise ConfigError(
            f"torchrun starts {per_node} processes on this node and each needs a GPU of its "
            f"own, but this one (rank {local_rank} of {per_node} on this node) sees "
            f"{_seen(visible)}. Start at most {visible} per node (torchrun --nproc_per_node "
            f"{visible}), make more GPUs visible, or train on CPU processes (run.device=cpu)"
        )
    if local_rank < visible:
        return local_rank
    if visible == 1 and len(_visible_entries()) == 1:
        return 0  # one GPU bound to this process (e.g. SLURM --gpus-per-task=1)
    raise ConfigError(
        f"rank {local_rank} on this node (LOCAL_RANK) needs a GPU of its own, but it sees "
        f"{_seen(visible)}. Start at most {visible} processes per node, bind one GPU to "
        "each (CUDA_VISIBLE_DEVICES), or train on CPU processes (run.device=cpu)"
    )


def _visible_entries() -> list[str]:
    """The entries of ``CUDA_VISIBLE_DEVICES`` (empty when it is unset)."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [] if raw is None else [e for e in raw.split(",") if e.strip()]


def _seen(count: int) -> str:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    shown = "" if env is None else f" (CUDA_VISIBLE_DEVICES={env})"
    return f"{count} visible GPU{'' if count == 1 else 's'}{shown}"


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matmuls / convolutions natively (so autocast wins):
    a CUDA GPU of compute capability 8.0 or newer (Ampere and later: bf16 tensor cores),
    or a CPU that oneDNN runs bf16 on.

    Not ``torch.cuda.is_bf16_supported()``: it also says yes where bf16 is emulated
    (V100 7.0, T4 7.5), which runs slower than fp32 there."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
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
