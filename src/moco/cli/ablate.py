"""``moco ablate``: one of the MoCo paper's ablations, as a sweep of pre-training runs."""

from __future__ import annotations

import argparse

from moco.cli.dispatch import Subparsers

DESCRIPTION = (
    "Pre-train once per value of AXIS (one run after another, each in its own "
    "sub-directory of OUT_DIR/NAME), then write table.json, table.md and ablate.png "
    "(kNN top-1 and pretext accuracy per epoch). Axes and default values: momentum "
    "(model.momentum 0 0.9 0.99 0.999 0.9999); queue (model.queue_size: the batch size, "
    "x4 steps, up to the preset's K); mechanism (model.method end_to_end memory_bank moco "
    "at matched K: the batch size, or the model.queue_size you pass); shuffle-bn "
    "(model.shuffle_keys true false); preset (whole recipes at the same epochs, default "
    "default simclr_small moco_v3_small). The kNN column is the last epoch's, never the "
    "best. Running the same command again resumes the sweep: finished runs are read "
    "back, a half-finished one continues from its checkpoint. A run whose loss becomes "
    "non-finite is recorded as diverged and the sweep goes on."
)


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "ablate",
        help="run one of the MoCo paper's ablations as a sweep of pre-training runs",
        description=DESCRIPTION,
    )
    p.add_argument(
        "axis", metavar="AXIS", choices=["momentum", "queue", "mechanism", "shuffle-bn", "preset"],
        help="momentum, queue, mechanism, shuffle-bn or preset",
    )  # fmt: skip
    p.add_argument(
        "--preset", help="recipe every run starts from (default: default; not for AXIS preset)"
    )
    p.add_argument("--values", nargs="+", metavar="V", help="the values to sweep instead")
    p.add_argument("--epochs", type=int, help="optim.epochs of every run")
    p.add_argument("--out-dir", default="runs", help="where the sweep directory goes (runs)")
    p.add_argument("--name", help="sweep directory name (default: ablate-AXIS-PRESET)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moco.experiments.ablate import markdown_table, run_sweep

    # `--values 0.9 0.99 key=value` swallows the overrides after it; no value has a "="
    values = [v for v in args.values or [] if "=" not in v] or None
    overrides = [*args.overrides, *(v for v in args.values or [] if "=" in v)]
    r = run_sweep(
        args.axis, args.preset, overrides, values, Path(args.out_dir), args.name, args.epochs
    )
    print(markdown_table(r.rows), end="")
    reused = len(r.rows) - len(r.ran)
    print(
        f"sweep {r.sweep_dir}: {len(r.ran)} run(s) trained, {reused} read back; wrote "
        f"{r.table_md}, {r.table_json}, {r.figure}"
    )
    return 0
