"""The figure of an ablation sweep: kNN top-1 and pretext accuracy against the epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def per_epoch(records: list[dict[str, Any]], kind: str, key: str) -> tuple[list[int], list[float]]:
    """The last ``key`` of each epoch among the ``kind`` records, by epoch.

    Train records are running means over the epoch so far, so the last one of an epoch is
    that epoch's mean; a resumed run may repeat an epoch, and its last records win.
    """
    last: dict[int, float] = {}
    for r in records:
        if r.get("kind") == kind and key in r:
            last[int(r["epoch"])] = float(r[key])
    epochs = sorted(last)
    return epochs, [last[e] for e in epochs]


def ablation_curves(runs: list[tuple[str, list[dict[str, Any]]]], path: Path, title: str) -> None:
    """Two panels, one line per run: kNN top-1 (epoch 0 = random init) and the epoch's
    mean pretext accuracy. ``runs``: (label, metrics.jsonl records) pairs."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, records in runs:
        for ax, kind, key in ((axes[0], "knn", "top1"), (axes[1], "train", "pretext_acc")):
            epochs, values = per_epoch(records, kind, key)
            ax.plot(epochs, values, "o-", ms=3, lw=1.2, label=label)
    axes[0].set_title("kNN top-1 on the held-out split")
    axes[1].set_title("pretext top-1 (mean over the epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
