"""The MoCo paper's ablations as sweeps: one pre-training run per value, one table.

A sweep varies one axis of the config and pre-trains once per value, one run after
another in this process, each in its own sub-directory of one sweep directory. Then it
writes ``table.json``, ``table.md`` and ``ablate.png`` (kNN top-1 and pretext accuracy
against the epoch) there. The axes are the paper's (PAPER.md Sec. 1):

- ``momentum``: m of the key encoder, 0 / 0.9 / 0.99 / 0.999 / 0.9999 (m = 0 fails);
- ``queue``: K, from the batch size up to the preset's K in steps of 4x;
- ``mechanism``: end-to-end, memory bank and MoCo (Fig. 2/3) at matched K;
- ``shuffle-bn``: shuffling BN on or off (Sec. 3.3: without it the pretext task is
  solved by a BN leak, pretext accuracy near 100 % while kNN lags);
- ``preset``: whole recipes (e.g. SimCLR, MoCo v3) compared at the same epochs.

The table reports the kNN top-1 of the *last* epoch, never the best one: the held-out
split is not used to select anything. A sweep is resumable: a value whose run finished
(``result.json``) or diverged is read back, a run with a checkpoint but no result is
resumed, and no run directory is ever deleted.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from moco import dist
from moco.config.schema import Config, ConfigError, from_yaml, load_config
from moco.engine.build import method_of
from moco.engine.metrics import read_metrics
from moco.errors import NonFiniteLossError, OutputExistsError
from moco.runs import train as runs_train

# axis -> the config key it sets ("" for the preset axis: the value is a preset name)
AXES: dict[str, str] = {
    "momentum": "model.momentum",
    "queue": "model.queue_size",
    "mechanism": "model.method",
    "shuffle-bn": "model.shuffle_keys",
    "preset": "",
}
MOMENTA = ("0", "0.9", "0.99", "0.999", "0.9999")  # MoCo Table / Sec. 4.1 (K = 4096)
MECHANISMS = ("end_to_end", "memory_bank", "moco")  # MoCo Fig. 2 (a), (b), (c)
SHUFFLE = ("true", "false")
PRESETS = ("default", "simclr_small", "moco_v3_small")

RECORD = "ablate.json"  # written into each run directory by the sweep: wall time, status
# config keys that may differ between a run already in the sweep and the one planned
_FREE_KEYS = {"run.out_dir", "run.name", "run.progress"}
# methods that take their negatives from the batch; K is the batch size for them (the
# paper's convention for end-to-end, Fig. 3)


@dataclass(frozen=True)
class PlannedRun:
    value: str  # the axis value as given (a string, as on the command line)
    label: str  # the run's sub-directory name in the sweep directory
    cfg: Config


@dataclass(frozen=True)
class AblationRow:
    """One run of a sweep, as the table shows it."""

    value: str
    run_dir: str
    method: str
    k: int  # negatives: queue size (moco), sampled from the bank, or the batch size
    k_source: str  # "queue", "bank" or "batch"
    momentum: float | None  # m of the key encoder; None for methods without one
    shuffle_keys: bool | None  # None for methods that ignore it
    epochs: int
    knn_top1: float | None  # the last epoch's kNN top-1 on the held-out split
    knn_top1_init: float | None  # at random initialisation (epoch 0)
    pretext_acc: float | None  # the last epoch's mean pretext top-1
    loss: float | None  # the last epoch's mean loss
    wall_s: float | None  # seconds this sweep spent on the run (see ``note``)
    status: str  # "ok" or "diverged at step S"
    note: str


@dataclass
class SweepResult:
    axis: str
    sweep_dir: Path
    rows: list[AblationRow]
    table_json: Path
    table_md: Path
    figure: Path
    ran: list[str]  # values trained (or resumed) by this call; the others were read back


def queue_values(cfg: Config) -> list[int]:
    """The queue axis' default K: the batch size, then x4 steps, up to ``cfg``'s K.

    The smallest K a MoCo queue takes is the batch size (2x with ``model.symmetric``:
    both views' keys are enqueued); the preset's K ends the list even when it is not a
    power-of-4 multiple of the batch (default preset: 64, 256, 1024).
    """
    low = cfg.optim.batch_size * (2 if cfg.model.symmetric else 1)
    high = cfg.model.queue_size
    if high < low:
        raise ConfigError(f"model.queue_size={high} is below the smallest queue, {low}")
    out, k = [], low
    while k < high:
        out.append(k)
        k *= 4
    return [*out, high]


def default_values(axis: str, base: Config) -> list[str]:
    """The values an axis sweeps when ``--values`` is not given."""
    if axis == "momentum":
        return list(MOMENTA)
    if axis == "queue":
        return [str(k) for k in queue_values(base)]
    if axis == "mechanism":
        return list(MECHANISMS)
    if axis == "shuffle-bn":
        return list(SHUFFLE)
    if axis == "preset":
        return list(PRESETS)
    raise ConfigError(f"unknown ablation axis {axis!r}; allowed: {', '.join(AXES)}")


def negatives(cfg: Config) -> tuple[int, str]:
    """K of a run and where its negatives come from. In-batch methods: the batch size,
    the paper's convention for end-to-end (per query, N - 1 keys; 2N - 2 for SimCLR)."""
    method = method_of(cfg)
    if method.negatives == "batch":
        return cfg.optim.batch_size, "batch"
    return cfg.model.queue_size, method.negatives


def _label(axis: str, value: str) -> str:
    key = AXES[axis].rsplit(".", 1)[-1] or "preset"
    return re.sub(r"[^A-Za-z0-9._=-]", "_", f"{key}={value}")


def plan_sweep(
    axis: str,
    preset: str | None,
    overrides: list[str],
    values: list[str] | None,
    sweep_dir: Path,
    epochs: int | None = None,
) -> list[PlannedRun]:
    """Every run's config, built (and checked) before anything trains."""
    if axis not in AXES:
        raise ConfigError(f"unknown ablation axis {axis!r}; allowed: {', '.join(AXES)}")
    if axis == "preset" and preset is not None:
        raise ConfigError("the preset axis takes its presets as values (--values), not --preset")
    common = [*overrides, *([f"optim.epochs={epochs}"] if epochs is not None else [])]
    base = load_config(preset or "default", common)
    values = default_values(axis, base) if values is None else list(values)
    if not values:
        raise ConfigError("an ablation needs at least one value")
    labels = [_label(axis, v) for v in values]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"the values {values} repeat (or name the same run directory)")
    # mechanism at matched K (Fig. 3): end-to-end's K is the batch, so memory bank and
    # MoCo get K = batch too, unless the user chose a K (then theirs, for those two)
    user_k = any(o.split("=", 1)[0].strip() == "model.queue_size" for o in overrides)
    plans = []
    for value, label in zip(values, labels, strict=True):
        if axis == "preset":
            cfg = load_config(value, common)
        else:
            extra = [f"{AXES[axis]}={value}"]
            if axis == "mechanism" and value != "end_to_end" and not user_k:
                extra.append(f"model.queue_size={base.optim.batch_size}")
            cfg = load_config(preset or "default", [*common, *extra])
        # set directly rather than as overrides: a name such as "true" or "1e-3" must
        # stay the string it is, not be parsed as YAML
        cfg.run.out_dir, cfg.run.name = str(sweep_dir), label
        plans.append(PlannedRun(value, label, cfg))
    return plans


def run_sweep(
    axis: str,
    preset: str | None,
    overrides: list[str],
    values: list[str] | None,
    out_dir: Path,
    name: str | None = None,
    epochs: int | None = None,
) -> SweepResult:
    """Pre-train once per value of ``axis`` (one after another), then write the table and
    the figure. The sweep directory is ``out_dir / name`` (default
    ``ablate-<axis>-<preset>``, so running the same command again resumes the sweep).

    ``NonFiniteLossError`` (m = 0 may blow up) is recorded as "diverged at step S" and
    the sweep goes on; every other error propagates.
    """
    tag = "presets" if axis == "preset" else preset or "default"
    sweep_dir = Path(out_dir) / (name or f"ablate-{axis}-{tag}")
    plans = plan_sweep(axis, preset, overrides, values, sweep_dir, epochs)
    if axis == "shuffle-bn" and plans[0].cfg.model.bn_splits == 1 and not dist.launched():
        tqdm.write(
            "ablate: note: model.bn_splits=1 in one process, so the key encoder's BN sees one "
            "group and shuffling the keys changes nothing (Sec. 3.3); set model.bn_splits=8"
        )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    ran = []
    for i, plan in enumerate(plans):
        run_dir = sweep_dir / plan.label
        head = f"ablate {axis} [{i + 1}/{len(plans)}] {plan.value}"
        if _finished(run_dir, plan):
            tqdm.write(f"{head}: already done, read from {run_dir}")
            continue
        tqdm.write(f"{head}: run directory {run_dir}")
        _train(run_dir, plan)
        ran.append(plan.value)
    rows = [_row(sweep_dir / p.label, p) for p in plans]
    return _write_tables(axis, preset, overrides, epochs, sweep_dir, plans, rows, ran)


def _check_same_config(run_dir: Path, plan: PlannedRun) -> None:
    """A run already in the sweep directory must be the run planned: otherwise two
    different sweeps would be mixed in one table."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return  # e.g. a run that failed before it started: nothing to compare
    old = _flat(dataclasses.asdict(from_yaml(saved.read_text())))
    new = _flat(dataclasses.asdict(plan.cfg))
    diff = sorted(
        k for k in old.keys() | new.keys() if k not in _FREE_KEYS and old.get(k) != new.get(k)
    )
    if diff:
        changes = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
        raise ConfigError(
            f"{run_dir} holds a run with another config ({changes}); this sweep would mix "
            "two experiments. Choose another --name (or --out-dir) for the new sweep."
        )


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = getattr(v, "value", v)
    return out


def _finished(run_dir: Path, plan: PlannedRun) -> bool:
    """Whether the run is done (result.json) or recorded as diverged: read, not rerun."""
    if not run_dir.is_dir():
        return False
    _check_same_config(run_dir, plan)
    if (run_dir / "result.json").is_file():
        return True
    record = _record(run_dir)
    return record.get("status", "ok") != "ok"


def _record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def _train(run_dir: Path, plan: PlannedRun) -> None:
    """Train (or resume) one run and write its record (wall time, status)."""
    ckpt = run_dir / "checkpoint.pth.tar"
    record: dict[str, Any] = {"value": plan.value, "status": "ok", "resumed": False}
    if ckpt.is_file():
        record["resumed"] = True  # half-finished: continue from the last checkpoint
    elif run_dir.is_dir() and any(p.name != RECORD for p in run_dir.iterdir()):
        raise OutputExistsError(
            f"{run_dir} holds an unfinished run without a checkpoint (it stopped before its "
            "first one); move it away and run the sweep again"
        )
    t0 = time.perf_counter()
    try:
        if record["resumed"]:
            runs_train.resume(ckpt)
        else:
            runs_train.pretrain(plan.cfg)
    except NonFiniteLossError as err:
        found = re.search(r"at step (\d+)", str(err))
        record["status"] = f"diverged at step {found.group(1)}" if found else "diverged"
        record["error"] = str(err)
        tqdm.write(f"ablate: {plan.value} {record['status']}; the sweep goes on")
    record["wall_s"] = time.perf_counter() - t0
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RECORD).write_text(json.dumps(record, indent=2))


def _row(run_dir: Path, plan: PlannedRun) -> AblationRow:
    """A table row from what the run wrote: result.json, config.yaml, metrics.jsonl."""
    record = _record(run_dir)
    status = record.get("status", "ok")
    saved = run_dir / "config.yaml"
    cfg = from_yaml(saved.read_text()) if saved.is_file() else plan.cfg
    result = json.loads((run_dir / "result.json").read_text()) if status == "ok" else {}
    records = read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
    train = [r for r in records if r.get("kind") == "train"]
    last = train[-1] if train and status == "ok" else {}
    k, source = negatives(cfg)
    notes = []
    if record.get("resumed"):
        notes.append("resumed: wall time of the resumed part only")
    if not record:
        notes.append("run not made by this sweep: no wall time")
    if status != "ok" and record.get("error"):
        notes.append(str(record["error"]).split(";")[0])
    return AblationRow(
        value=plan.value,
        run_dir=str(run_dir),
        method=cfg.model.method.value,
        k=k,
        k_source=source,
        momentum=cfg.model.momentum if method_of(cfg).key_names else None,
        shuffle_keys=cfg.model.shuffle_keys if method_of(cfg).reads_shuffle else None,
        epochs=int(result.get("epochs", cfg.optim.epochs)),
        knn_top1=result.get("knn_top1"),
        knn_top1_init=result.get("knn_top1_random_init"),
        pretext_acc=last.get("pretext_acc"),
        loss=last.get("loss"),
        wall_s=record.get("wall_s"),
        status=status,
        note="; ".join(notes),
    )


COLUMNS = ("value", "method", "K", "m", "shuffle_keys", "epochs", "kNN top-1 (final)",
           "kNN top-1 (init)", "pretext acc", "loss", "wall (s)", "status")  # fmt: skip


def markdown_table(rows: list[AblationRow]) -> str:
    """The rows as a Markdown table, in the order of ``COLUMNS``."""

    def num(x: float | None, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt)

    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for r in rows:
        cells = [
            f"`{r.value}`",
            r.method,
            f"{r.k} ({r.k_source})",
            "n/a" if r.momentum is None else f"{r.momentum:g}",
            "n/a" if r.shuffle_keys is None else str(r.shuffle_keys).lower(),
            str(r.epochs),
            num(r.knn_top1, ".4f"),
            num(r.knn_top1_init, ".4f"),
            num(r.pretext_acc, ".4f"),
            num(r.loss, ".4f"),
            num(r.wall_s, ".1f"),
            r.status,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_tables(
    axis: str,
    preset: str | None,
    overrides: list[str],
    epochs: int | None,
    sweep_dir: Path,
    plans: list[PlannedRun],
    rows: list[AblationRow],
    ran: list[str],
) -> SweepResult:
    from moco.report.ablate_figure import ablation_curves

    table_json, table_md = sweep_dir / "table.json", sweep_dir / "table.md"
    figure = sweep_dir / "ablate.png"
    table_json.write_text(
        json.dumps(
            {
                "axis": axis,
                "key": AXES[axis] or "preset",
                "preset": preset,
                "overrides": overrides,
                "epochs": epochs,
                "knn": "top-1 of the last epoch on the held-out split (no selection)",
                "rows": [dataclasses.asdict(r) for r in rows],
            },
            indent=2,
        )
    )
    notes = [f"- `{r.value}`: {r.note}" for r in rows if r.note]
    table_md.write_text(
        f"# Ablation: {axis} ({AXES[axis] or 'preset'})\n\n"
        "kNN top-1: the last epoch's, on the held-out split (never the best epoch). "
        "Pretext accuracy and loss: means over the last epoch.\n\n"
        + markdown_table(rows)
        + ("\n" + "\n".join(notes) + "\n" if notes else "")
    )
    runs = [
        (p.label, read_metrics(sweep_dir / p.label))
        for p in plans
        if (sweep_dir / p.label / "metrics.jsonl").is_file()
    ]
    ablation_curves(runs, figure, f"ablation: {axis} ({sweep_dir.name})")
    return SweepResult(axis, sweep_dir, rows, table_json, table_md, figure, ran)
