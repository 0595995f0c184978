"""Pre-training: the one visible training loop, from a Config to a run directory.

A run directory holds ``config.yaml`` (the resolved config), ``derived.json`` (the run
plan: values computed from it, such as the scaled lr and the steps), ``metrics.jsonl``
and ``tb/`` (TensorBoard), ``checkpoint.pth.tar`` (every epoch, atomically replaced)
and ``result.json``.

Read it top to bottom: :func:`pretrain` / :func:`resume` (entry points) -> :func:`_run`
(build the parts, then the epochs) -> :func:`train_one_epoch` (the steps of one epoch)
-> :func:`~moco.engine.step.train_step` (one step in Algorithm 1's order). The kNN
monitor is handed in by the caller (:mod:`moco.runs.train` wires evaluation's); the
engine imports no evaluation code.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from tqdm import tqdm

from moco import dist
from moco.augment.views import PRESETS, override
from moco.config.schema import Config, ConfigError, apply_overrides, from_yaml, to_yaml
from moco.core.method import ContrastiveMethod
from moco.data.interface import Batches, PretrainData, open_data
from moco.device import resolve_device
from moco.engine import checkpoint as ckpt_io
from moco.engine import host
from moco.engine.build import build_model
from moco.engine.checkpoint import Checkpointer, LoopState, restore_rng
from moco.engine.metrics import MetricsLog
from moco.engine.optim import build_optimizer
from moco.engine.plan import RunPlan, plan_run
from moco.engine.schedule import lr_at, momentum_at
from moco.engine.step import train_step
from moco.errors import NonFiniteLossError, OutputExistsError
from moco.version import __version__

# The kNN monitor: top-1 of ``encoder`` (the query encoder, in whatever mode; the monitor
# restores it) on the data's held-out split, for this run's plan and config.
Monitor = Callable[[nn.Module, PretrainData, RunPlan, Config], float]

RESUMABLE_KEYS = ("optim.epochs", "run.log_every", "run.progress", "run.device")


@dataclass
class PretrainResult:
    run_dir: Path
    checkpoint: Path
    epochs: int
    knn_top1: float | None  # final kNN top-1 on the held-out split
    knn_top1_init: float | None  # the same network at random initialisation (epoch 0)


@dataclass
class Parts:
    """What a run trains with, built once by :func:`build_parts`."""

    model: ContrastiveMethod
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    batches: Batches  # one epoch of TrainBatch at a time
    views: nn.Module  # a crop batch (uint8) -> a normalised view, on the device
    memory_format: torch.memory_format
    online: dict[str, nn.Module] = dataclasses.field(default_factory=dict)  # DDP wrappers


@dataclass
class EpochStats:
    """Running means over the epoch (all ranks), as last logged."""

    loss: float = math.nan
    pretext_acc: float = math.nan
    lr: float = math.nan


def pretrain(cfg: Config, monitor: Monitor | None = None) -> PretrainResult:
    """Pre-train as ``cfg`` says, in a new run directory; ``monitor`` (kNN) as
    ``cfg.eval.knn_every`` says, and not at all when None.

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
        return resume(ckpt, monitor=monitor)
    return _run(cfg, None, monitor)


def resume(
    checkpoint: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    monitor: Monitor | None = None,
) -> PretrainResult:
    """Continue a run from its checkpoint (file or run directory), in the same directory.

    The run goes on with the config saved in the checkpoint; ``overrides`` may change
    only ``RESUMABLE_KEYS`` (e.g. ``optim.epochs=400`` to train longer). The result is
    the same weights as a run that was never interrupted.
    """
    ckpt = ckpt_io.load(checkpoint)
    for item in overrides:
        key = item.split("=", 1)[0]
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                f"cannot change {key!r} when resuming; only {', '.join(RESUMABLE_KEYS)} may change"
            )
    cfg = apply_overrides(from_yaml(ckpt["config"]), overrides)
    if cfg.optim.epochs < ckpt["epoch"]:
        raise ConfigError(
            f"optim.epochs={cfg.optim.epochs} is below the {ckpt['epoch']} epochs "
            "the checkpoint has already trained"
        )
    return _run(cfg, ckpt, monitor)


def _run(cfg: Config, ckpt: dict[str, Any] | None, monitor: Monitor | None) -> PretrainResult:
    device = resolve_device(cfg.run.device)
    dist.init_from_env(device, cfg.run.dist_timeout)
    main = dist.is_main()  # rank 0 alone writes files, logs and the progress bar
    if device.type == "cpu" and cfg.run.keep_freed_memory:
        host.keep_freed_memory()  # ~1.5x faster CPU steps (engine/host.py)
    torch.manual_seed(cfg.run.seed)  # the same model on every rank
    load_size = cfg.data.load_size or cfg.augment.size
    data = open_data(
        cfg.data.source, cfg.data.holdout_fraction, cfg.run.seed, load_size, cfg.data.stream
    )
    plan = plan_run(cfg, data, device)
    parts = build_parts(cfg, plan, data, device)
    run_dir = Path(ckpt["path"]).parent if ckpt else dist.on_main(lambda: _new_run_dir(cfg))
    meta = {"arch": cfg.model.arch.value, "config": to_yaml(cfg)}
    saver = Checkpointer(
        run_dir / "checkpoint.pth.tar",
        parts.model,
        parts.optimizer,
        parts.scaler,
        {**meta, "derived": dataclasses.asdict(plan)},
    )
    state = saver.restore(ckpt) if ckpt else LoopState()
    # Identical start on every rank: query and key encoders, queue and pointer; then
    # DDP of each trainable sub-module apart (key encoders, queue and bank stay outside)
    dist.broadcast_module_(parts.model)
    parts.online = {
        n: dist.data_parallel(getattr(parts.model, n), device) for n in parts.model.online_names
    }
    log = MetricsLog(run_dir) if main else None
    if main:  # what runs from here on (a resume may have changed optim.epochs)
        _write_plan(run_dir, cfg, plan, data, resumed=ckpt is not None)
    if monitor is not None and cfg.eval.knn_every > 0 and not data.labelled:
        monitor = None  # images: an unlabelled source
        if main:
            tqdm.write("no labels: kNN monitor off")

    if ckpt is None:
        if monitor is not None and cfg.eval.knn_every > 0:
            _evaluate(monitor, parts.model, data, plan, cfg, state, log)  # random init
        saver.save(state)
        if plan.world_size > 1:  # each rank its own augmentation stream
            torch.manual_seed(cfg.run.seed + dist.rank())
    else:
        note = restore_rng(ckpt, plan.world_size)
        if note and main:
            tqdm.write(note)

    parts.model.train()
    for epoch in range(state.epoch, cfg.optim.epochs):
        stats = train_one_epoch(cfg, plan, parts, state, epoch, log, saver.path)
        state.epoch = done = epoch + 1
        _count_unreadable(parts.batches, state, device, log)
        every = cfg.eval.knn_every
        if monitor is not None and every > 0 and (done % every == 0 or done == cfg.optim.epochs):
            _evaluate(monitor, parts.model, data, plan, cfg, state, log)
        saver.save(state)
        if main:
            tqdm.write(
                f"epoch {done}/{cfg.optim.epochs}: loss {stats.loss:.4f} pretext acc "
                f"{stats.pretext_acc:.3f} lr {stats.lr:.4g}"
            )
    if log is not None:
        log.close()
    return _finish(run_dir, saver.path, cfg, plan, data, state)


def build_parts(cfg: Config, plan: RunPlan, data: PretrainData, device: torch.device) -> Parts:
    """The batches, the views, the model and its optimiser (nothing distributed yet)."""
    spec = override(PRESETS[cfg.augment.preset.value], scale=(cfg.augment.crop_min_scale, 1.0))
    size = cfg.augment.size
    batches = data.batches(spec, size, cfg.optim.batch_size, device, cfg.run.seed, cfg.data.workers)
    views = data.view_transform(spec, size, plan.mean, plan.std).to(device)
    model = build_model(cfg, plan.in_chans, plan.bn_splits_per_process, plan.train_images)
    if cfg.model.sync_bn:  # global BN (SyncBatchNorm) in every encoder when distributed
        model = cast(ContrastiveMethod, dist.sync_batchnorm(model))
    model = model.to(device)
    fmt = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
    if cfg.run.channels_last:
        model = model.to(memory_format=fmt)  # type: ignore[call-overload]
    if cfg.run.compile:  # in place: parameter names and state_dict keys do not change
        for name in (*model.online_names, *model.key_names):
            getattr(model, name).compile()
    optimizer = build_optimizer(  # the trainable parameters: encoder_q (and predictor)
        model.named_parameters(),
        cfg.optim.optimizer.value,
        plan.lr,
        cfg.optim.momentum,
        cfg.optim.weight_decay,
    )
    return Parts(model, optimizer, plan.grad_scaler(), batches, views, fmt)


def train_one_epoch(
    cfg: Config,
    plan: RunPlan,
    parts: Parts,
    state: LoopState,
    epoch: int,
    log: MetricsLog | None,
    ckpt_path: Path,
) -> EpochStats:
    """One epoch of steps; every ``run.log_every`` steps (and at the epoch's end) the
    running means over all ranks are logged, the only host syncs of the loop."""
    parts.batches.set_epoch(epoch)
    bar = tqdm(
        parts.batches,
        desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
        disable=not (cfg.run.progress and dist.is_main()),
        leave=False,
        dynamic_ncols=True,
    )
    device = torch.device(plan.device)
    # loss sum and correct count of this rank: summed over ranks at log time only
    sums = torch.zeros(2, device=device, dtype=torch.float64)
    seen, t0, stats = 0, time.perf_counter(), EpochStats()
    for batch in bar:
        lr = lr_at(
            state.step,
            plan.lr,
            plan.total_steps,
            plan.steps_per_epoch,
            cfg.optim.schedule.value,
            cfg.optim.milestones,
            plan.warmup_steps,
        )
        for group in parts.optimizer.param_groups:
            group["lr"] = lr
        m = momentum_at(
            state.step, cfg.model.momentum, plan.total_steps, cfg.model.momentum_schedule.value
        )
        # x_q, x_k: two independent views (in memory: of the batch; streamed: of its crops)
        x_q, x_k = (
            parts.views(c).contiguous(memory_format=parts.memory_format) for c in batch.crops
        )
        out = train_step(
            parts.model,
            parts.optimizer,
            x_q,
            x_k,
            parts.scaler,
            plan.autocast_dtype,
            online=parts.online,
            index=batch.index,
            momentum=m,
        )
        b = len(batch.index)
        sums[0] += out.loss.detach().double() * b
        sums[1] += out.correct.double().mean() * b  # 2N anchors if symmetric
        seen += b
        state.step += 1
        if state.step % cfg.run.log_every == 0 or seen == len(parts.batches) * b:
            stats = _log_progress(sums, seen, t0, lr, m, plan, state, epoch, log, ckpt_path)
            bar.set_postfix(
                loss=f"{stats.loss:.3f}",
                acc=f"{stats.pretext_acc:.3f}",
                lr=f"{lr:.4f}",
                ips=f"{seen * plan.world_size / (time.perf_counter() - t0):.0f}",
            )
    return stats


def _log_progress(
    sums: torch.Tensor,
    seen: int,
    t0: float,
    lr: float,
    m: float,
    plan: RunPlan,
    state: LoopState,
    epoch: int,
    log: MetricsLog | None,
    ckpt_path: Path,
) -> EpochStats:
    """The epoch's running means over all ranks (every rank sees the same values, so a
    non-finite loss stops all of them together), logged on rank 0."""
    total = dist.all_reduce_sum_(sums.clone())
    images_seen = seen * plan.world_size
    loss = total[0].item() / images_seen
    if not math.isfinite(loss):
        if log is not None:
            log.close()
        raise NonFiniteLossError(
            f"loss is {loss} at step {state.step} (epoch {epoch + 1}); stopped without "
            f"saving. The last good checkpoint is {ckpt_path} (epoch {epoch}). "
            "Lower optim.lr, or turn off optim.amp."
        )
    acc = total[1].item() / images_seen
    ips = images_seen / (time.perf_counter() - t0)
    if log is not None:
        log.log(
            "train",
            state.step,
            epoch=epoch + 1,
            loss=loss,
            pretext_acc=acc,
            lr=lr,
            momentum=m,
            images_per_s=ips,
        )
    return EpochStats(loss, acc, lr)


def _evaluate(
    monitor: Monitor,
    model: ContrastiveMethod,
    data: PretrainData,
    plan: RunPlan,
    cfg: Config,
    state: LoopState,
    log: MetricsLog | None,
) -> None:
    """The kNN monitor at the current epoch, with the one-process BN statistics."""
    dist.average_bn_stats_(model)
    top1 = monitor(model.encoder_q, data, plan, cfg)
    state.history["knn"][state.epoch] = top1
    if log is not None:
        e = cfg.eval
        log.log("knn", state.step, epoch=state.epoch, top1=top1)
        tqdm.write(f"epoch {state.epoch}: kNN top-1 {top1:.4f} (k={e.knn_k}, t={e.knn_t})")


def _count_unreadable(
    batches: Batches, state: LoopState, device: torch.device, log: MetricsLog | None
) -> None:
    """Unreadable files replaced in the epoch, over all ranks (streamed sources)."""
    count = torch.tensor([batches.unreadable_in_epoch], device=device)
    bad = int(dist.all_reduce_sum_(count)[0])
    if log is not None:
        if bad:
            tqdm.write(f"epoch {state.epoch}: {bad} unreadable file(s) replaced by others")
        log.log("data", state.step, epoch=state.epoch, unreadable=bad)


def _new_run_dir(cfg: Config) -> Path:
    name = cfg.run.name or f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.run.out_dir) / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise OutputExistsError(
            f"run directory {str(run_dir)!r} already exists and is not empty; "
            "choose another run.name, or continue it with --resume"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _write_plan(
    run_dir: Path, cfg: Config, plan: RunPlan, data: PretrainData, resumed: bool
) -> None:
    """config.yaml and derived.json, and the run's one-line header."""
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    (run_dir / "derived.json").write_text(json.dumps(dataclasses.asdict(plan), indent=2))
    procs = f"{plan.world_size} processes x " if plan.world_size > 1 else ""
    tqdm.write(
        f"{'resuming' if resumed else 'run'} {run_dir}: {cfg.preset} "
        f"({cfg.model.method.value}) on "
        f"{data.name} ({plan.train_images} train / {plan.held_out_images} held-out "
        f"images, {plan.held_out}); {procs}{plan.device}, batch "
        f"{cfg.optim.batch_size}, lr {plan.lr:.4g}, {plan.steps_per_epoch} steps/epoch"
    )


def _finish(
    run_dir: Path,
    ckpt_path: Path,
    cfg: Config,
    plan: RunPlan,
    data: PretrainData,
    state: LoopState,
) -> PretrainResult:
    """The result, and ``result.json`` (rank 0)."""
    knn_hist = {int(k): v for k, v in state.history["knn"].items()}
    final = knn_hist.get(cfg.optim.epochs)
    result = PretrainResult(run_dir, ckpt_path, cfg.optim.epochs, final, knn_hist.get(0))
    if dist.is_main():
        record = {
            "checkpoint": str(ckpt_path),
            "epochs": cfg.optim.epochs,
            "data": data.name,
            "held_out": data.held_out,
            "processes": plan.world_size,
            "knn_top1": final,
            "knn_top1_random_init": knn_hist.get(0),
            "knn": {
                "k": cfg.eval.knn_k,
                "t": cfg.eval.knn_t,
                "features": cfg.eval.knn_features.value,
            },
            "knn_history": knn_hist,
            "version": __version__,
        }
        (run_dir / "result.json").write_text(json.dumps(record, indent=2))
    return result
