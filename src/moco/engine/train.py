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
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from tqdm import tqdm

from moco import dist
from moco.augment.views import PRESETS, override
from moco.config.schema import Config, ConfigError, apply_overrides, from_yaml, to_yaml
from moco.core.method import ContrastiveMethod, StepOutput
from moco.data.interface import Batches, PretrainData, TrainBatch, open_data
from moco.device import resolve_device
from moco.engine import checkpoint as ckpt_io
from moco.engine import health, host
from moco.engine.build import build_model
from moco.engine.checkpoint import Checkpointer, LoopState, restore_rank_bn, restore_rng
from moco.engine.init import init_from_checkpoint
from moco.engine.metrics import MetricsLog
from moco.engine.optim import build_optimizer
from moco.engine.plan import RunPlan, fit_to_data, plan_run
from moco.engine.run_dir import RESUMABLE_KEYS, new_run_dir, open_run_dir, restartable, write_result
from moco.engine.schedule import lr_at, momentum_at
from moco.engine.signals import StopOnSignals, interrupted
from moco.engine.step import train_step
from moco.errors import CheckpointError, NonFiniteLossError
from moco.layers.split_bn import stop_interleaving

# The kNN monitor: top-1 of ``encoder`` (the query encoder, in whatever mode; the monitor
# restores it) on the data's held-out split, for this run's plan and config; or the
# top-1 and the health of the features it used (``health.feature_values``' names).
Monitor = Callable[
    [nn.Module, PretrainData, RunPlan, Config], float | tuple[float, dict[str, float]]
]


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
    online: dict[str, nn.Module] = field(default_factory=dict)  # DDP wrappers


@dataclass
class EpochStats:
    """Running means over the epoch (all ranks), as last logged."""

    loss: float = math.nan
    pretext_acc: float = math.nan
    lr: float = math.nan
    stopped: bool = False  # a stop signal ended the epoch early (every rank agrees)


class Progress:
    """Rank 0's two progress lines: the whole run (steps done, time left for all of it)
    and, under it, the current epoch. Off with ``run.progress=false``."""

    def __init__(self, cfg: Config, plan: RunPlan, state: LoopState) -> None:
        self.cfg = cfg
        self.off = not (cfg.run.progress and dist.is_main())
        self.run = tqdm(
            total=plan.total_steps,
            initial=state.step,
            desc=f"run ({cfg.optim.epochs} epochs)",
            unit="step",
            disable=self.off,
            dynamic_ncols=True,
            position=0,
        )

    def epoch_bar(self, batches: Batches, epoch: int, start: int) -> tqdm[TrainBatch]:
        return tqdm(
            batches,
            desc=f"epoch {epoch + 1}/{self.cfg.optim.epochs}",
            disable=self.off,
            leave=False,
            dynamic_ncols=True,
            initial=start,
            total=len(batches),
            position=1,
        )

    def close(self) -> None:
        self.run.close()


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
    the same weights as a run that was never interrupted, also from a checkpoint written
    mid-epoch by a stop signal. A run directory that stopped before its first checkpoint
    is started again in place, with its ``config.yaml``.
    """
    for item in overrides:
        key = item.split("=", 1)[0]
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                f"cannot change {key!r} when resuming; only {', '.join(RESUMABLE_KEYS)} may change"
            )
    run_dir = Path(checkpoint)
    if run_dir.is_dir() and restartable(run_dir) and (run_dir / "config.yaml").is_file():
        try:
            cfg = apply_overrides(from_yaml((run_dir / "config.yaml").read_text()), overrides)
        except ConfigError as err:
            raise CheckpointError(
                f"{run_dir} stopped before its first checkpoint, and its config.yaml cannot "
                f"be read ({err}); run the command that started it again (same run.name)"
            ) from None
        if dist.launch_rank() == 0:
            tqdm.write(f"{run_dir} stopped before its first checkpoint: starting it again")
        return _run(cfg, None, monitor, restart_dir=run_dir)
    ckpt = ckpt_io.load(checkpoint)
    if "config" not in ckpt:
        raise CheckpointError(
            f"{ckpt['path']} is not a moco run (it has no config: an official or another "
            "library's checkpoint), so there is nothing to resume. To start a new run from "
            f"its weights: moco pretrain --init {ckpt['path']}"
        )
    cfg = apply_overrides(from_yaml(ckpt["config"]), overrides)
    if cfg.optim.epochs < ckpt["epoch"]:
        raise ConfigError(
            f"optim.epochs={cfg.optim.epochs} is below the {ckpt['epoch']} epochs "
            "the checkpoint has already trained"
        )
    return _run(cfg, ckpt, monitor)


def _run(
    cfg: Config,
    ckpt: dict[str, Any] | None,
    monitor: Monitor | None,
    restart_dir: Path | None = None,
) -> PretrainResult:
    """Set up (data, plan, parts, run directory, loop state), then train the epochs.
    ``restart_dir``: an unfinished run without a checkpoint, started again in place."""
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
    if ckpt is None:  # a new run: size-dependent settings the user left to the preset
        cfg, notes = fit_to_data(cfg, data)
        if notes and main:
            tqdm.write(f"fitted to {data.num_pretrain} training images: " + "; ".join(notes))
    plan = plan_run(cfg, data, device)
    parts = build_parts(cfg, plan, data, device)
    if ckpt is None and cfg.run.init:  # a new run from another run's (or official) weights
        summary = init_from_checkpoint(parts.model, cfg.run.init, cfg.run.init_queue)
        if main:
            tqdm.write(summary)
    if ckpt is not None:
        run_dir = Path(ckpt["path"]).parent
    else:
        run_dir = dist.on_main(lambda: restart_dir or new_run_dir(cfg))
    meta = {"arch": cfg.model.arch.value, "config": to_yaml(cfg), "derived": asdict(plan)}
    saver = Checkpointer(
        run_dir / "checkpoint.pth.tar", parts.model, parts.optimizer, parts.scaler, meta, device
    )
    state = saver.restore(ckpt) if ckpt else LoopState()
    # Identical start on every rank: query and key encoders, queue and pointer; then
    # DDP of each trainable sub-module apart (key encoders, queue and bank stay outside)
    dist.broadcast_module_(parts.model)
    parts.online = {
        n: dist.data_parallel(getattr(parts.model, n), device) for n in parts.model.online_names
    }
    if ckpt is not None:
        restore_rank_bn(parts.model, ckpt)  # mid-epoch: each rank's own BN statistics
    log = open_run_dir(run_dir, cfg, plan, data, ckpt) if main else None
    if monitor is not None and cfg.eval.knn_every > 0 and not data.labelled:
        monitor = None  # images: an unlabelled source
        if main:
            tqdm.write("no labels: kNN monitor off")
    if ckpt is None:
        if cfg.run.diagnostics:
            q = parts.model.negatives == "queue"
            k = int(getattr(parts.model, "queue_size", 0)) if q else None
            warnings = health.Detectors(state.history).at_start(k, plan.train_images)
            _warn(warnings, state, log)
        if monitor is not None and cfg.eval.knn_every > 0:
            _evaluate(monitor, parts.model, data, plan, cfg, state, log)  # random init
        if plan.world_size > 1:  # each rank its own augmentation stream, saved with it
            torch.manual_seed(cfg.run.seed + dist.rank())
        saver.save(state)
    else:
        note = restore_rng(ckpt, plan.world_size, device)
        if note and main:
            tqdm.write(note)
    with StopOnSignals() as stop:
        _train_epochs(cfg, plan, parts, data, state, log, saver, monitor, stop)
    if log is not None:
        log.close()
    return _finish(run_dir, saver.path, cfg, plan, data, state)


def _train_epochs(
    cfg: Config,
    plan: RunPlan,
    parts: Parts,
    data: PretrainData,
    state: LoopState,
    log: MetricsLog | None,
    saver: Checkpointer,
    monitor: Monitor | None,
    stop: StopOnSignals,
) -> None:
    """The epochs from ``state`` on: train, count unreadable files, monitor, save. A
    stop signal saves the step reached and raises :class:`~moco.errors.RunInterrupted`."""
    main = dist.is_main()
    parts.model.train()
    progress = Progress(cfg, plan, state)
    try:
        for epoch in range(state.epoch, cfg.optim.epochs):
            stats = train_one_epoch(cfg, plan, parts, state, epoch, log, saver.path, stop, progress)
            if stats.stopped:  # mid-epoch: the checkpoint of the step reached
                saver.save(state, mid_epoch=True)
                raise interrupted(stop, state, plan, saver.path)
            state.epoch = done = epoch + 1
            state.epoch_sums, state.epoch_seen = [0.0, 0.0], 0
            _count_unreadable(parts.batches, state, torch.device(plan.device), log)
            every = cfg.eval.knn_every
            if (
                monitor is not None
                and every > 0
                and (done % every == 0 or done == cfg.optim.epochs)
            ):
                _evaluate(monitor, parts.model, data, plan, cfg, state, log, stats.pretext_acc)
            if cfg.run.diagnostics:
                chance = parts.model.chance_loss(plan.batch_per_process * plan.world_size)
                detectors = health.Detectors(state.history)
                _warn(detectors.at_epoch_end(done, stats.loss, chance), state, log)
            saver.save(state)
            if main:
                tqdm.write(
                    f"epoch {done}/{cfg.optim.epochs}: loss {stats.loss:.4f} pretext acc "
                    f"{stats.pretext_acc:.3f} lr {stats.lr:.4g}"
                )
            if done < cfg.optim.epochs and stop.agreed(torch.device(plan.device)):
                raise interrupted(stop, state, plan, saver.path)
    finally:
        progress.close()


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
        stop_interleaving(model)  # split BN's view path compiles ~5x slower, runs no faster
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
    stop: StopOnSignals,
    progress: Progress,
) -> EpochStats:
    """One epoch of steps (from the batch a mid-epoch checkpoint reached); every
    ``run.log_every`` steps (and at the epoch's end) the running means over all ranks
    are logged, the only host syncs of the loop. Returns early, ``stopped``, when a stop
    signal came: ``state`` then holds the epoch's progress for the checkpoint."""
    n_batches = len(parts.batches)
    start = state.step - epoch * plan.steps_per_epoch  # 0 unless resumed mid-epoch
    parts.batches.set_epoch(epoch, start)
    bar = progress.epoch_bar(parts.batches, epoch, start)
    device = torch.device(plan.device)
    # loss sum and correct count of this rank: summed over ranks at log time only
    sums = torch.tensor(state.epoch_sums, device=device, dtype=torch.float64)
    seen = seen0 = state.epoch_seen
    t0, stats = time.perf_counter(), EpochStats()
    diag: dict[str, torch.Tensor] = {}  # the health of the step to be logged
    for batch in bar:
        b = len(batch.index)
        logs = (state.step + 1) % cfg.run.log_every == 0 or seen + b == n_batches * b
        probe = _probe(parts, diag) if logs and cfg.run.diagnostics and log is not None else None
        out, lr, m = _step(cfg, plan, parts, state, batch, probe)
        sums[0] += out.loss.detach().double() * b
        sums[1] += out.correct.double().mean() * b  # 2N anchors if symmetric
        seen += b
        state.step += 1
        progress.run.update()
        last = seen == n_batches * b
        asked = False
        if state.step % cfg.run.log_every == 0 or last:
            ips = (seen - seen0) * plan.world_size / (time.perf_counter() - t0)
            stats, asked = _log_progress(
                sums, seen, ips, lr, m, plan, state, epoch, log, ckpt_path, stop
            )
            if diag:
                _log_health(diag, stats, parts.model, len(out.k), m, plan, state, epoch, log)
            bar.set_postfix(
                loss=f"{stats.loss:.3f}",
                acc=f"{stats.pretext_acc:.3f}",
                lr=f"{lr:.4f}",
                ips=f"{ips:.0f}",
            )
        elif plan.world_size == 1:
            asked = stop.signum is not None
        if asked and not last:  # the epoch's end saves anyway
            state.epoch_sums, state.epoch_seen = sums.tolist(), seen
            return dataclasses.replace(stats, stopped=True)
    return stats


def _step(
    cfg: Config,
    plan: RunPlan,
    parts: Parts,
    state: LoopState,
    batch: TrainBatch,
    probe: Callable[[StepOutput], None] | None = None,
) -> tuple[StepOutput, float, float]:
    """One optimiser step at ``state.step``: the schedules' lr and momentum, the two views,
    :func:`~moco.engine.step.train_step` (``probe``: its ``inspect``). Returns its
    output, the lr and the momentum."""
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
    fmt = parts.memory_format
    x_q, x_k = (parts.views(c).contiguous(memory_format=fmt) for c in batch.crops)
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
        inspect=probe,
    )
    return out, lr, m


def _probe(parts: Parts, into: dict[str, torch.Tensor]) -> Callable[[StepOutput], None]:
    """train_step's ``inspect`` on a logged step: the health quantities, as tensors on
    the device, into ``into`` (read at log time, with the loop's own host sync)."""
    trainable = [p for p in parts.model.parameters() if p.requires_grad]

    def inspect(out: StepOutput) -> None:
        into.update(health.measure_step(parts.model, out, trainable))

    return inspect


def _log_health(
    diag: dict[str, torch.Tensor],
    stats: EpochStats,
    model: ContrastiveMethod,
    keys_per_rank: int,
    m: float,
    plan: RunPlan,
    state: LoopState,
    epoch: int,
    log: MetricsLog | None,
) -> None:
    """Rank 0: the logged step's health record (one device-to-host copy, after the loop
    synced anyway), then the step detectors (divergence, collapse)."""
    values = health.read(diag)
    diag.clear()
    w = plan.world_size
    chance = model.chance_loss(plan.batch_per_process * w)
    per_step = keys_per_rank * w if model.negatives == "queue" else plan.batch_per_process * w
    values |= health.state_values(
        model, state.step, per_step, plan.steps_per_epoch, plan.train_images
    )
    values |= {"loss_chance": chance, "loss_ratio": stats.loss / chance, "lr": stats.lr}
    values |= {"step_loss_ratio": values["step_loss"] / chance}
    values |= {"momentum": m}
    if log is not None:
        log.log("health", state.step, epoch=epoch + 1, **values)
    frac = state.step / plan.steps_per_epoch
    _warn(health.Detectors(state.history).at_log(values, frac), state, log)


def _warn(warnings: list[health.HealthWarning], state: LoopState, log: MetricsLog | None) -> None:
    """Each warning once: on the terminal and as a ``warning`` record (rank 0)."""
    for w in warnings:
        if log is not None:
            tqdm.write(f"warning ({w.detector}): {w.message}. Try: {w.advice}")
            log.log(
                "warning",
                state.step,
                epoch=state.epoch,
                detector=w.detector,
                message=w.message,
                evidence=w.evidence,
                advice=w.advice,
            )


def _log_progress(
    sums: torch.Tensor,
    seen: int,
    ips: float,
    lr: float,
    m: float,
    plan: RunPlan,
    state: LoopState,
    epoch: int,
    log: MetricsLog | None,
    ckpt_path: Path,
    stop: StopOnSignals,
) -> tuple[EpochStats, bool]:
    """The epoch's running means over all ranks (every rank sees the same values, so a
    non-finite loss stops all of them together), logged on rank 0; and whether any rank
    was asked to stop (shared in the same all-reduce)."""
    total = dist.all_reduce_sum_(torch.cat([sums, stop.flag(sums.device).to(sums.dtype)]))
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
    state.history.setdefault("first_loss", loss)
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
    return EpochStats(loss, acc, lr), stop.shared(bool(total[2].item() > 0))


def _evaluate(
    monitor: Monitor,
    model: ContrastiveMethod,
    data: PretrainData,
    plan: RunPlan,
    cfg: Config,
    state: LoopState,
    log: MetricsLog | None,
    pretext_acc: float = math.nan,
) -> None:
    """The kNN monitor at the current epoch, with the one-process BN statistics; the
    health of its features and the BN-cheating detector (``pretext_acc``: the epoch's)."""
    dist.average_bn_stats_(model)
    result = monitor(model.encoder_q, data, plan, cfg)
    top1, feats = result if isinstance(result, tuple) else (result, {})
    state.history["knn"][state.epoch] = top1
    if log is not None:
        e = cfg.eval
        log.log("knn", state.step, epoch=state.epoch, top1=top1, **feats)
        tqdm.write(f"epoch {state.epoch}: kNN top-1 {top1:.4f} (k={e.knn_k}, t={e.knn_t})")
    if cfg.run.diagnostics:
        init = state.history["knn"].get(0)
        detectors = health.Detectors(state.history)
        _warn(detectors.at_knn(state.epoch, top1, init, pretext_acc), state, log)


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
    result = PretrainResult(
        run_dir, ckpt_path, cfg.optim.epochs, knn_hist.get(cfg.optim.epochs), knn_hist.get(0)
    )
    if dist.is_main():
        write_result(run_dir, ckpt_path, cfg, plan, data, knn_hist)
    return result
