"""``moco report``: an HTML page of a run's curves, results, t-SNE and retrieval."""

from __future__ import annotations

import argparse

from moco.cli.dispatch import Subparsers


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "report",
        help="write an HTML report of a run",
        description="Write RUN_DIR/report.html (self-contained, PNGs embedded; copies in "
        "RUN_DIR/report/): loss, pretext accuracy, lr and kNN curves; every result with its "
        "settings (result.json, knn-*, lincls-*, finetune-*.json); a t-SNE of held-out "
        "features coloured by class; a nearest-neighbour retrieval grid.",
    )
    p.add_argument("run_dir", help="run directory")
    p.add_argument("--points", type=int, default=2000, help="held-out images in the t-SNE")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(f"report of {args.run_dir}: loading (torch and the run)", flush=True)
    from moco.report import write_report

    print(f"wrote {write_report(args.run_dir, max_points=args.points)}")
    return 0
