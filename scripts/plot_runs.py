"""Plot the kNN and pretext-accuracy curves of finished runs side by side.

Each argument is ``LABEL=RUN_DIR``; the curves are read from the runs' ``metrics.jsonl``
(the kNN monitor on the held-out split, epoch 0 = random init; the epoch's mean pretext
top-1). The figures in ``docs/`` were made with it:

    python scripts/plot_runs.py docs/img/full-data-curves.png \\
        "Fashion-MNIST=runs/fmnist" "MNIST=runs/mnist" --title "35 / 10 epochs, 2 CPU cores"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from moco.report.ablate_figure import ablation_curves


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    runs = []
    for item in args.runs:
        label, sep, run_dir = item.partition("=")
        if not sep:
            parser.error(f"{item!r} is not LABEL=RUN_DIR")
        metrics = Path(run_dir) / "metrics.jsonl"
        if not metrics.is_file():
            parser.error(f"{run_dir!r} is not a run directory: it has no metrics.jsonl")
        lines = metrics.read_text().splitlines()
        runs.append((label, [json.loads(line) for line in lines if line.strip()]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ablation_curves(runs, args.out, args.title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
