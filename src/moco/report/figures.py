"""The report's figures, drawn with matplotlib (Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def curves(records: list[dict[str, Any]], path: Path) -> None:
    """Loss, pretext top-1, lr against the step, and kNN top-1 against the epoch."""
    train = [r for r in records if r["kind"] == "train"]
    knn = [r for r in records if r["kind"] == "knn"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    steps = [r["step"] for r in train]
    for ax, key, title in (
        (axes[0, 0], "loss", "InfoNCE loss (running mean over the epoch)"),
        (axes[0, 1], "pretext_acc", "pretext (K+1)-way top-1"),
        (axes[1, 0], "lr", "learning rate"),
    ):
        ax.plot(steps, [r[key] for r in train], lw=1)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    ax = axes[1, 1]
    ax.plot([r["epoch"] for r in knn], [r["top1"] for r in knn], "o-")
    ax.set_title("kNN top-1 on the held-out split (epoch 0 = random init)")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def embedding_scatter(
    xy: np.ndarray, labels: np.ndarray, class_names: list[str], path: Path, title: str
) -> None:
    """2-D points coloured by class."""
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c, name in enumerate(class_names):
        m = labels == c
        ax.scatter(xy[m, 0], xy[m, 1], s=4, color=cmap(c % cmap.N), label=name)
    ax.legend(markerscale=4, fontsize=8, loc="best")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def retrieval_grid(
    queries: np.ndarray,
    query_labels: np.ndarray,
    neighbours: np.ndarray,
    neighbour_labels: np.ndarray,
    path: Path,
) -> None:
    """One row per query (first column), then its nearest training images; a neighbour
    framed green shares the query's label, red does not. Images: (R, H, W) or (R, H, W, 3)."""
    rows, k = neighbours.shape[:2]
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.2 * (k + 1), 1.25 * rows))
    cmap = "gray" if queries.ndim == 3 else None
    for r in range(rows):
        cells = [(queries[r], None)] + [
            (neighbours[r, j], neighbour_labels[r, j] == query_labels[r]) for j in range(k)
        ]
        for j, (img, same) in enumerate(cells):
            ax = axes[r, j]
            ax.imshow(img, cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            colour = "black" if same is None else ("tab:green" if same else "tab:red")
            for side in ax.spines.values():
                side.set_edgecolor(colour)
                side.set_linewidth(3 if same is not None else 1)
        axes[r, 0].set_ylabel("query", fontsize=7)
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=90)
    plt.close(fig)
