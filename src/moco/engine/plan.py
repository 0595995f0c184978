"""The run plan: every value derived from the config, the data and the device, computed
once (saved as ``derived.json`` apart from the config the user wrote)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moco import dist
from moco.config.schema import Config
from moco.data.interface import PretrainData
from moco.device import amp_dtype, grad_scaler, resolve_amp
from moco.errors import ConfigError


@dataclass(frozen=True)
class RunPlan:
    """Values computed once from the config and the data, saved apart from the config."""

    device: str
    world_size: int  # processes (torchrun); 1 without a launcher
    batch_per_process: int  # optim.batch_size / world_size
    bn_splits_per_process: int  # model.bn_splits / world_size
    lr: float  # optim.lr * batch_size / 256 (global batch)
    amp: str  # optim.amp as run on this device (auto resolved to bf16 or none)
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    train_images: int
    held_out_images: int
    held_out: str
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype the forward pass runs in under autocast; None: no autocast."""
        return amp_dtype(self.amp)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        return grad_scaler(self.amp)


def plan_run(cfg: Config, data: PretrainData, device: torch.device) -> RunPlan:
    """The plan of ``cfg`` on ``data`` and ``device``, or a ConfigError naming the fix."""
    w = dist.world_size()
    b, g = cfg.optim.batch_size, cfg.model.bn_splits
    if b % w != 0:
        raise ConfigError(f"optim.batch_size={b} (global) is not divisible by {w} processes")
    if cfg.model.sync_bn:  # one global BN: no groups to spread
        if w > 1 and device.type != "cuda":
            raise ConfigError("model.sync_bn=true runs on CUDA only (torch's SyncBatchNorm)")
    elif g % w != 0:
        raise ConfigError(
            f"model.bn_splits={g} BN groups cannot be spread over {w} processes: each "
            f"process normalises bn_splits / {w} groups; set model.bn_splits to a multiple "
            f"of {w} ({w} = one group per process, as the paper's 8 GPUs)"
        )
    n = data.num_pretrain  # train + unlabelled (STL-10): what an epoch draws from
    steps = n // cfg.optim.batch_size
    if steps == 0:
        raise ConfigError(
            f"optim.batch_size={cfg.optim.batch_size} is larger than the {n} training images"
        )
    mean, std = data.mean_std(cfg.augment.size, cfg.run.seed)
    return RunPlan(
        device=str(device),
        world_size=w,
        batch_per_process=b // w,
        bn_splits_per_process=1 if cfg.model.sync_bn else g // w,
        amp=resolve_amp(cfg.optim.amp.value, device),
        lr=cfg.optim.lr * cfg.optim.batch_size / 256,
        steps_per_epoch=steps,
        total_steps=steps * cfg.optim.epochs,
        warmup_steps=round(cfg.optim.warmup_epochs * steps),
        train_images=n,
        held_out_images=data.num_held_out,
        held_out=data.held_out,
        in_chans=data.channels,
        mean=mean,
        std=std,
    )
