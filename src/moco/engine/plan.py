"""The run plan: every value derived from the config, the data and the device, computed
once (saved as ``derived.json`` apart from the config the user wrote)."""

from __future__ import annotations

import copy
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


# A queue (or bank draw) of at most this fraction of the training images: an image's own
# older keys then rarely sit among its negatives (MoCo's ImageNet K is 5 % of the images).
QUEUE_FRACTION = 0.25
MIN_STEPS_PER_EPOCH = 4  # a batch no larger than a quarter of the data
MIN_BN_GROUP = 8  # images per split-BN group, below which batch statistics are noise


def fit_to_data(cfg: Config, data: PretrainData) -> tuple[Config, list[str]]:
    """``cfg`` with the settings that depend on the data set's size fitted to ``data``,
    where the user did not set them (``cfg.set_by_user``), and one note per change.

    A preset's batch, queue, kNN k and BN groups suit its own data (the default preset's
    5,000 images); on a folder of 60 they cannot work. Fitted: the batch to at most a
    quarter of the training images (a power of two), BN groups to at least 8 images each
    and dividing the batch, the queue (or the memory bank's draw) to at most a quarter of
    the images, kNN k below the smallest class. A setting the user wrote is kept, and
    refused with the numbers only where it cannot run (a batch larger than the data, k
    larger than the kNN memory).
    """
    cfg = copy.deepcopy(cfg)
    n, counts = data.num_pretrain, data.train_class_counts
    user = set(cfg.set_by_user)
    notes: list[str] = []
    w = dist.world_size()

    def change(key: str, new: int, why: str) -> None:
        section, name = key.split(".")
        old = getattr(getattr(cfg, section), name)
        if new != old:
            setattr(getattr(cfg, section), name, new)
            notes.append(f"{key} {old} -> {new} ({why})")

    b = cfg.optim.batch_size
    if "optim.batch_size" not in user and b * MIN_STEPS_PER_EPOCH > n:
        fit = max(_pow2_at_most(n // MIN_STEPS_PER_EPOCH), 2 * w)
        change("optim.batch_size", fit, f"at least {MIN_STEPS_PER_EPOCH} steps an epoch")
    b = cfg.optim.batch_size
    g = cfg.model.bn_splits
    if "model.bn_splits" not in user and not cfg.model.sync_bn and g > 1:
        groups = g
        while groups > w and (b % groups or b // groups < MIN_BN_GROUP):
            groups //= 2
        change("model.bn_splits", max(groups, 1), f"groups of at least {MIN_BN_GROUP} images")
    k = cfg.model.queue_size
    if "model.queue_size" not in user and k > n * QUEUE_FRACTION:
        fit = max(_pow2_at_most(int(n * QUEUE_FRACTION)), cfg.optim.batch_size)
        change("model.queue_size", fit, f"well below the {n} training images")
    if counts and "eval.knn_k" not in user and cfg.eval.knn_k >= min(counts):
        change("eval.knn_k", max(1, min(counts) // 2), f"below the {min(counts)} images "
               "of the smallest class")  # fmt: skip
    if counts and cfg.eval.knn_k > sum(counts) and cfg.eval.knn_every > 0:
        raise ConfigError(
            f"eval.knn_k={cfg.eval.knn_k} is larger than the kNN memory, the "
            f"{sum(counts)} labelled training images; set eval.knn_k below {min(counts)}"
        )
    return cfg, notes


def _pow2_at_most(x: int) -> int:
    return 1 << max(x, 1).bit_length() - 1
