"""The run directory: created and claimed atomically, started again in place when a run
stopped before its first checkpoint, opened for a resume (stale temporaries removed, a
hand-edited config kept aside, the metrics cut back), and the files that describe the
run (``config.yaml``, ``derived.json``, ``result.json``)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from moco.config.schema import Config, to_yaml
from moco.data.interface import PretrainData
from moco.engine import checkpoint as ckpt_io
from moco.engine.metrics import MetricsLog
from moco.engine.plan import RunPlan
from moco.errors import OutputExistsError
from moco.version import __version__

# what a resume may change (the rest is the checkpoint's config)
RESUMABLE_KEYS = ("optim.epochs", "run.log_every", "run.progress", "run.device")

# What a run directory holds before its first checkpoint (``.tmp-*``: interrupted writes)
_BEFORE_FIRST_CHECKPOINT = frozenset({"config.yaml", "derived.json", "metrics.jsonl", "tb"})


def restartable(run_dir: Path) -> bool:
    """A run directory that stopped before its first checkpoint: nothing in it but what
    the run wrote before one (so starting it again in place loses nothing)."""
    names = {p.name for p in run_dir.iterdir() if not p.name.startswith(ckpt_io.TMP_PREFIX)}
    return bool(names) and names <= _BEFORE_FIRST_CHECKPOINT


def new_run_dir(cfg: Config) -> Path:
    """Create and claim the run directory. The claim is ``config.yaml`` created with
    O_EXCL, so two runs started in the same second never share a directory: without a
    ``run.name`` the second takes ``NAME-2`` (and so on). A named directory that
    stopped before its first checkpoint is started again in place; any other non-empty
    one is refused."""
    base = cfg.run.name or f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1, 1000):
        run_dir = Path(cfg.run.out_dir) / (base if i == 1 else f"{base}-{i}")
        run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.run.name and restartable(run_dir):
            tqdm.write(f"{run_dir} stopped before its first checkpoint: starting it again")
            return run_dir
        if not any(run_dir.iterdir()) and _claim(run_dir / "config.yaml", to_yaml(cfg)):
            return run_dir
        if cfg.run.name:
            raise OutputExistsError(
                f"run directory {str(run_dir)!r} already exists and is not empty; "
                "choose another run.name, or continue it with --resume"
            )
    raise OutputExistsError(f"no free run directory named {base}[-N] in {cfg.run.out_dir}")


def _claim(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` if nobody has (O_EXCL); whether we did."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False  # another run claimed it first
    with os.fdopen(fd, "w") as f:  # the claim holds the config at once
        f.write(text)
    return True


def open_run_dir(
    run_dir: Path, cfg: Config, plan: RunPlan, data: PretrainData, ckpt: dict[str, Any] | None
) -> MetricsLog:
    """Rank 0's start in the run directory: stale temporary files removed, a hand-edited
    config.yaml kept aside, the metrics cut back to the checkpoint's step (a resumed run
    logs each step once), config.yaml and derived.json written, the header printed."""
    ckpt_io.remove_stale_temporaries(run_dir)
    if ckpt is not None:
        _keep_hand_edits(run_dir / "config.yaml", ckpt["config"])
    log = MetricsLog(run_dir, keep_until=ckpt["step"] if ckpt is not None else -1)
    _write_plan(run_dir, cfg, plan, data, resumed=ckpt is not None)
    return log


def _keep_hand_edits(path: Path, trained: str) -> None:
    """A config.yaml that differs from the config the checkpoint trained with was edited
    by hand: keep it aside (the run goes on with the checkpoint's) and say so."""
    if not path.is_file() or path.read_text() == trained:
        return
    kept = path.with_name(f"config.yaml.edited-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, kept)
    tqdm.write(
        f"note: {path} differs from the config its checkpoint trained with; the run goes on "
        f"with the checkpoint's (config.yaml), yours is kept as {kept.name}. Only "
        f"{', '.join(RESUMABLE_KEYS)} may change on a resume: pass them as key=value."
    )


def _write_plan(
    run_dir: Path, cfg: Config, plan: RunPlan, data: PretrainData, resumed: bool
) -> None:
    """config.yaml and derived.json, and the run's one-line header."""
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    (run_dir / "derived.json").write_text(json.dumps(asdict(plan), indent=2))
    procs = f"{plan.world_size} processes x " if plan.world_size > 1 else ""
    tqdm.write(
        f"{'resuming' if resumed else 'run'} {run_dir}: {cfg.preset} "
        f"({cfg.model.method.value}) on "
        f"{data.name} ({plan.train_images} train / {plan.held_out_images} held-out "
        f"images, {plan.held_out}); {procs}{plan.device}, batch "
        f"{cfg.optim.batch_size}, lr {plan.lr:.4g}, {plan.steps_per_epoch} steps/epoch"
    )


def write_result(
    run_dir: Path,
    ckpt_path: Path,
    cfg: Config,
    plan: RunPlan,
    data: PretrainData,
    knn_hist: dict[int, float],
) -> None:
    """``result.json``: the final and random-init kNN, its settings, the data, the version."""
    final = knn_hist.get(cfg.optim.epochs)
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
