"""Pre-training: the one visible training loop, from a Config to a run directory.

A run directory holds ``config.yaml`` (the resolved config), ``derived.json`` (values
computed from it: scaled lr, steps), ``metrics.jsonl`` and ``tb/`` (TensorBoard),
``checkpoint.pth.tar`` (every epoch, atomically replaced) and ``result.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from tqdm import tqdm

from moco import dist
from moco.augment.two_stage import CropFlip
from moco.augment.views import (
    PRESETS,
    build_photometric_transform,
    build_view_transform,
    override,
)
from moco.config.schema import Config, ConfigError, apply_overrides, from_yaml, to_yaml
from moco.core.method import ContrastiveMethod
from moco.data.loader import InMemoryLoader
from moco.data.sources import ImageSplits, load_source
from moco.data.stream import FileSplits, StreamingLoader, list_source
from moco.device import resolve_amp, resolve_device
from moco.engine import checkpoint as ckpt_io
from moco.engine import host
from moco.engine.build import build_model
from moco.engine.metrics import MetricsLog
from moco.engine.optim import build_optimizer
from moco.engine.schedule import lr_at, momentum_at
from moco.engine.step import train_step
from moco.errors import NonFiniteLossError
from moco.eval.monitor import knn_accuracy, knn_accuracy_files
from moco.version import __version__


@dataclass(frozen=True)
class Derived:
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


@dataclass
class PretrainResult:
    run_dir: Path
    checkpoint: Path
    epochs: int
    knn_top1: float | None  # final kNN top-1 on the held-out split
    knn_top1_init: float | None  # the same network at random initialisation (epoch 0)


def derive(cfg: Config, data: ImageSplits | FileSplits, device: torch.device) -> Derived:
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
    if isinstance(data, FileSplits):  # streamed: statistics of a sample of the files
        n, n_test = len(data.train), len(data.test)
        mean, std = data.mean_std(cfg.augment.size, seed=cfg.run.seed)
    else:  # train + unlabelled (STL-10): what the loader iterates
        n, n_test = data.num_pretrain_images, len(data.test_images)
        mean, std = data.mean_std()
    steps = n // cfg.optim.batch_size
    if steps == 0:
        raise ConfigError(
            f"optim.batch_size={cfg.optim.batch_size} is larger than the {n} training images"
        )
    return Derived(
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
        held_out_images=n_test,
        held_out=data.held_out,
        in_chans=data.channels,
        mean=mean,
        std=std,
    )


def _amp(
    cfg: Config, device: torch.device
) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    amp = resolve_amp(cfg.optim.amp.value, device)
    if amp == "none":
        return None, None
    if amp == "bf16":
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def _new_run_dir(cfg: Config) -> Path:
    name = cfg.run.name or f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.run.out_dir) / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(
            f"run directory {str(run_dir)!r} already exists and is not empty; "
            "choose another run.name, or continue it with --resume"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def pretrain(cfg: Config) -> PretrainResult:
    """Pre-train with MoCo as ``cfg`` says, in a new run directory.

    Under ``torchrun --max-restarts``, a restarted job continues its run from the last
    checkpoint (found through ``run.name``, which such jobs must set).
    """
    if dist.max_restarts() > 0 and not cfg.run.name:
        raise ConfigError(
            "torchrun --max-restarts needs a fixed run.name, so that a restarted job "
            "finds its run directory and resumes from its last checkpoint"
        )
    ckpt = Path(cfg.run.out_dir) / cfg.run.name / "checkpoint.pth.tar"
    if dist.restart_count() > 0 and cfg.run.name and ckpt.is_file():
        if dist.launch_rank() == 0:
            tqdm.write(f"torchrun restart {dist.restart_count()}: resuming from {ckpt}")
        return resume(ckpt)
    return _run(cfg, None)


RESUMABLE_KEYS = ("optim.epochs", "run.log_every", "run.progress", "run.device")


def resume(checkpoint: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PretrainResult:
    """Continue a run from its checkpoint (file or run directory), in the same directory.

    The run goes on with the config saved in the checkpoint; ``overrides`` may change
    only ``RESUMABLE_KEYS`` (e.g. ``optim.epochs=400`` to train longer). The result is
    the same weights as a run that was never interrupted.
    """
    state = ckpt_io.load(checkpoint)
    for item in overrides:
        key = item.split("=", 1)[0]
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                f"cannot change {key!r} when resuming; only {', '.join(RESUMABLE_KEYS)} may change"
            )
    cfg = apply_overrides(from_yaml(state["config"]), overrides)
    if cfg.optim.epochs < state["epoch"]:
        raise ConfigError(
            f"optim.epochs={cfg.optim.epochs} is below the {state['epoch']} epochs "
            "the checkpoint has already trained"
        )
    return _run(cfg, state)


def _run(cfg: Config, state: dict[str, Any] | None) -> PretrainResult:
    device = resolve_device(cfg.run.device)
    dist.init_from_env(device, cfg.run.dist_timeout)
    main = dist.is_main()  # rank 0 alone writes files, logs and the progress bar
    if device.type == "cpu" and cfg.run.keep_freed_memory:
        host.keep_freed_memory()  # ~1.5x faster CPU steps (engine/host.py)
    torch.manual_seed(cfg.run.seed)  # the same model on every rank
    load_size = cfg.data.load_size or cfg.augment.size
    data: ImageSplits | FileSplits
    if cfg.data.stream:  # files decoded per step in DataLoader workers (data/stream.py)
        data = list_source(cfg.data.source, cfg.data.holdout_fraction, cfg.run.seed)
    else:
        data = load_source(cfg.data.source, cfg.data.holdout_fraction, cfg.run.seed, load_size)
    derived = derive(cfg, data, device)

    spec = override(PRESETS[cfg.augment.preset.value], scale=(cfg.augment.crop_min_scale, 1.0))
    size, channels = cfg.augment.size, data.channels
    loader: InMemoryLoader | StreamingLoader
    if isinstance(data, FileSplits):  # two stages: crop + flip per sample, then the rest
        loader = StreamingLoader(
            data.train,
            CropFlip(spec, size, 2, cfg.run.seed, data.mode),
            cfg.optim.batch_size,
            device,
            cfg.run.seed,
            cfg.data.workers,
        )
        views = build_photometric_transform(spec, size, channels, derived.mean, derived.std)
    else:  # everything batched on the device: crops and photometric ops
        loader = InMemoryLoader(  # labels -1 for unlabelled images; pre-training reads none
            data.pretrain_images, data.pretrain_labels, cfg.optim.batch_size, device, cfg.run.seed
        )
        views = build_view_transform(spec, size, channels, derived.mean, derived.std)
    views = views.to(device)

    def two_views(batch: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """x_q, x_k: two independent views of the batch (streamed: of its two crops)."""
        crops = batch if isinstance(batch, tuple) else (batch, batch)
        return tuple(views(c).contiguous(memory_format=fmt) for c in crops)

    model = build_model(cfg, data.channels, derived.bn_splits_per_process, derived.train_images)
    if cfg.model.sync_bn:  # global BN (SyncBatchNorm) in every encoder when distributed
        model = cast(ContrastiveMethod, dist.sync_batchnorm(model))
    model = model.to(device)
    fmt = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
    if cfg.run.channels_last:
        model = model.to(memory_format=fmt)  # type: ignore[call-overload]
    if cfg.run.compile:  # in place: parameter names and state_dict keys do not change
        for name in (*model.online_names, "encoder_k"):  # encoder_k: moco, moco_v3
            if hasattr(model, name):
                getattr(model, name).compile()
    optimizer = build_optimizer(  # the trainable parameters: encoder_q (and predictor)
        model.named_parameters(),
        cfg.optim.optimizer.value,
        derived.lr,
        cfg.optim.momentum,
        cfg.optim.weight_decay,
    )
    amp_dtype, scaler = _amp(cfg, device)

    history: dict[str, Any] = {"knn": {}}
    start_epoch, step = 0, 0
    if state is not None:
        run_dir = Path(state["path"]).parent
        model.load_state_dict(ckpt_io.from_official(state["state_dict"]))
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        start_epoch, step, history = state["epoch"], state["step"], state["history"]
    else:
        run_dir = dist.on_main(lambda: _new_run_dir(cfg))
    # Identical start on every rank: query and key encoders, queue and pointer.
    dist.broadcast_module_(model)
    # DDP of each trainable sub-module apart; key encoders, queue and bank stay outside
    online = {n: dist.data_parallel(getattr(model, n), device) for n in model.online_names}
    log = MetricsLog(run_dir) if main else None
    if main:  # what runs from here on (a resume may have changed optim.epochs)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
        (run_dir / "derived.json").write_text(json.dumps(dataclasses.asdict(derived), indent=2))
        procs = f"{derived.world_size} processes x " if derived.world_size > 1 else ""
        tqdm.write(
            f"{'resuming' if state is not None else 'run'} {run_dir}: {cfg.preset} "
            f"({cfg.model.method.value}) on "
            f"{data.name} ({derived.train_images} train / {derived.held_out_images} held-out "
            f"images, {derived.held_out}); {procs}{derived.device}, batch "
            f"{cfg.optim.batch_size}, lr {derived.lr:.4g}, {derived.steps_per_epoch} steps/epoch"
        )
    ckpt_path = run_dir / "checkpoint.pth.tar"
    knn_every = cfg.eval.knn_every
    labelled = (
        data.labelled if isinstance(data, FileSplits) else bool((data.train_labels >= 0).any())
    )
    if knn_every > 0 and not labelled:  # images: an unlabelled source
        knn_every = 0
        if main:
            tqdm.write("no labels: kNN monitor off")

    def save(epoch: int) -> None:
        dist.average_bn_stats_(model)  # the running stats of the one-process run
        rngs = dist.all_gather_object(ckpt_io.rng_state())
        if not main:
            return
        ckpt_io.save_atomic(
            {
                "epoch": epoch,
                "arch": cfg.model.arch.value,
                "state_dict": ckpt_io.to_official(model.state_dict()),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "step": step,
                "rng": rngs[0],
                "rng_per_rank": rngs,
                "config": to_yaml(cfg),
                "derived": dataclasses.asdict(derived),
                "history": history,
                "version": __version__,
            },
            ckpt_path,
        )

    def knn(epoch: int) -> None:
        e = cfg.eval
        dist.average_bn_stats_(model)
        args = (derived.mean, derived.std, e.knn_k, e.knn_t, e.knn_features.value, device)
        if isinstance(data, FileSplits):
            top1 = knn_accuracy_files(model.encoder_q, data, size, *args, cfg.data.workers)
        else:
            top1 = knn_accuracy(model.encoder_q, data, size, *args)
        history["knn"][epoch] = top1
        if log is not None:
            log.log("knn", step, epoch=epoch, top1=top1)
            tqdm.write(f"epoch {epoch}: kNN top-1 {top1:.4f} (k={e.knn_k}, t={e.knn_t})")

    if state is None:
        if knn_every > 0:
            knn(0)  # the random-init baseline every run reports
        save(0)
        if derived.world_size > 1:  # each rank its own augmentation stream
            torch.manual_seed(cfg.run.seed + dist.rank())
    else:
        _restore_rng(state, derived.world_size)

    model.train()
    for epoch in range(start_epoch, cfg.optim.epochs):
        loader.set_epoch(epoch)
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
            disable=not (cfg.run.progress and main),
            leave=False,
            dynamic_ncols=True,
        )
        # loss sum and correct count of this rank: summed over ranks at log time only
        sums = torch.zeros(2, device=device, dtype=torch.float64)
        seen, t0 = 0, time.perf_counter()
        for images, _, idx in bar:  # images: uint8 (b, C, H, W), or two crops if streamed
            lr = lr_at(
                step,
                derived.lr,
                derived.total_steps,
                derived.steps_per_epoch,
                cfg.optim.schedule.value,
                cfg.optim.milestones,
                derived.warmup_steps,
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            m = momentum_at(
                step, cfg.model.momentum, derived.total_steps, cfg.model.momentum_schedule.value
            )
            x_q, x_k = two_views(images)
            out = train_step(
                model, optimizer, x_q, x_k, scaler, amp_dtype, online=online, index=idx, momentum=m
            )
            b = len(idx)
            sums[0] += out.loss.detach().double() * b
            sums[1] += out.correct.double().mean() * b  # 2N anchors if symmetric
            seen += b
            step += 1
            if step % cfg.run.log_every == 0 or seen == len(loader) * b:
                # running means over the epoch so far, over all ranks; the only host
                # syncs of the loop (every rank sees the same values, so a non-finite
                # loss stops all of them together)
                total = dist.all_reduce_sum_(sums.clone())
                images_seen = seen * derived.world_size
                loss = total[0].item() / images_seen
                if not math.isfinite(loss):
                    if log is not None:
                        log.close()
                    raise NonFiniteLossError(
                        f"loss is {loss} at step {step} (epoch {epoch + 1}); stopped without "
                        f"saving. The last good checkpoint is {ckpt_path} (epoch {epoch}). "
                        "Lower optim.lr, or turn off optim.amp."
                    )
                acc = total[1].item() / images_seen
                ips = images_seen / (time.perf_counter() - t0)
                if log is not None:
                    log.log(
                        "train",
                        step,
                        epoch=epoch + 1,
                        loss=loss,
                        pretext_acc=acc,
                        lr=lr,
                        momentum=m,
                        images_per_s=ips,
                    )
                bar.set_postfix(
                    loss=f"{loss:.3f}", acc=f"{acc:.3f}", lr=f"{lr:.4f}", ips=f"{ips:.0f}"
                )
        done = epoch + 1
        if isinstance(loader, StreamingLoader):  # replaced unreadable files, all ranks
            bad = int(
                dist.all_reduce_sum_(torch.tensor([loader.unreadable_in_epoch], device=device))[0]
            )
            if bad and main:
                tqdm.write(f"epoch {done}: {bad} unreadable file(s) replaced by others")
            if log is not None:
                log.log("data", step, epoch=done, unreadable=bad)
        if knn_every > 0 and (done % knn_every == 0 or done == cfg.optim.epochs):
            knn(done)
        save(done)
        if main:
            tqdm.write(
                f"epoch {done}/{cfg.optim.epochs}: loss {loss:.4f} pretext acc {acc:.3f} "
                f"lr {lr:.4g}"
            )
    knn_hist = {int(k): v for k, v in history["knn"].items()}
    final = knn_hist.get(cfg.optim.epochs)
    result = PretrainResult(run_dir, ckpt_path, cfg.optim.epochs, final, knn_hist.get(0))
    if log is not None:
        log.close()
        (run_dir / "result.json").write_text(
            json.dumps(
                {
                    "checkpoint": str(ckpt_path),
                    "epochs": cfg.optim.epochs,
                    "data": data.name,
                    "held_out": data.held_out,
                    "processes": derived.world_size,
                    "knn_top1": final,
                    "knn_top1_random_init": knn_hist.get(0),
                    "knn": {
                        "k": cfg.eval.knn_k,
                        "t": cfg.eval.knn_t,
                        "features": cfg.eval.knn_features.value,
                    },
                    "knn_history": knn_hist,
                    "version": __version__,
                },
                indent=2,
            )
        )
    return result


def _restore_rng(state: dict[str, Any], world: int) -> None:
    """Each rank's RNG as saved, so a resume is bitwise the uninterrupted run. With a
    different number of processes that is impossible: ranks are re-seeded instead."""
    per_rank = state.get("rng_per_rank") or [state["rng"]]
    if len(per_rank) == world:
        ckpt_io.set_rng_state(per_rank[dist.rank()])
        return
    if dist.is_main():
        tqdm.write(
            f"note: the checkpoint was written by {len(per_rank)} processes and this run has "
            f"{world}; training continues equivalently but not bitwise (augmentation RNG "
            "re-seeded per rank)"
        )
    torch.manual_seed(int(state["step"]) * 1000 + dist.rank())
