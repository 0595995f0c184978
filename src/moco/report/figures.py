"""The report's figures, drawn with matplotlib (Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


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
        ax.plot(steps, [r[key] for r in train], lw=1, marker="o" if len(train) < 30 else None, ms=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    ax = axes[1, 1]
    ax.plot([r["epoch"] for r in knn], [r["top1"] for r in knn], "o-")
    ax.set_title("kNN top-1, held-out split (epoch 0 = random init)")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def embedding_scatter(
    xy: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    path: Path,
    title: str,
    ringed: np.ndarray | None = None,
) -> None:
    """2-D points ``xy`` (N, 2) coloured by class: ``labels`` (N,) index ``class_names``,
    -1 (an unlabelled source) is grey. ``ringed`` (N,) bool marks points drawn larger
    with a black ring (the held-out ones, when training images fill out a small split).
    The legend names the classes present, up to 20 of them."""
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    size = float(np.clip(4000 / max(len(xy), 1), 4, 40))  # few points: larger dots
    ring = np.zeros(len(xy), bool) if ringed is None else ringed
    groups = [(c, name, cmap(c % cmap.N)) for c, name in enumerate(class_names)]
    present = [g for g in groups if (labels == g[0]).any()]
    for c, name, colour in [*present, (-1, "no label", "grey")]:
        m = labels == c
        if not m.any():
            continue
        ax.scatter(xy[m & ~ring, 0], xy[m & ~ring, 1], s=size, color=colour, label=name)
        ax.scatter(xy[m & ring, 0], xy[m & ring, 1], s=3 * size, color=colour,
                   edgecolors="black", linewidths=1.0)  # fmt: skip
    if len(present) <= 20:
        ax.legend(markerscale=max(1.0, 16 / size), fontsize=8, loc="best")
    ax.set_title(title, fontsize=10)
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
    class_names: list[str] | None = None,
) -> None:
    """One row per query (first column, named by its class when ``class_names`` is given),
    then its nearest training images; a neighbour framed green shares the query's label,
    red does not, grey when the query has no label (-1). Images: (R, H, W) or
    (R, H, W, 3); any R >= 1 and any number of neighbours >= 1."""
    rows, k = neighbours.shape[:2]
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.2 * (k + 1), 1.25 * rows + 0.2), squeeze=False)
    cmap = "gray" if queries.ndim == 3 else None
    for r in range(rows):
        labelled = query_labels[r] >= 0
        cells = [(queries[r], "black")] + [
            (neighbours[r, j], _frame(labelled, neighbour_labels[r, j] == query_labels[r]))
            for j in range(k)
        ]
        for j, (img, colour) in enumerate(cells):
            ax = axes[r, j]
            ax.imshow(img, cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_edgecolor(colour)
                side.set_linewidth(1 if j == 0 else 3)
        name = "query"
        if class_names is not None and 0 <= query_labels[r] < len(class_names):
            name = class_names[int(query_labels[r])]
        axes[r, 0].set_ylabel(name, fontsize=7)
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _frame(labelled: bool, same: bool) -> str:
    if not labelled:
        return "tab:gray"
    return "tab:green" if same else "tab:red"


def health(records: list[dict[str, Any]], path: Path) -> None:
    """The run-health curves (docs/run-health.md) against the step: loss over its chance
    value, pretext top-1/5, the logits, alignment and uniformity, collapse (the batch's
    and, at each kNN monitor, the pooled features'), key-encoder drift, the queue or
    bank, the gradient norm, and lr and momentum. Warnings are marked as red lines."""
    rows = [r for r in records if r["kind"] == "health"]
    for r in rows:
        if "step_loss_ratio" not in r and "step_loss" in r and r.get("loss_chance"):
            r["step_loss_ratio"] = r["step_loss"] / r["loss_chance"]
    knn = [r for r in records if r["kind"] == "knn" and "feat_eff_rank_ratio" in r]
    warned = [r["step"] for r in records if r["kind"] == "warning"]
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(3, 3, figsize=(13, 10))

    def draw(ax: Any, keys: list[tuple[str, str]], title: str, log: bool = False) -> None:
        for key, label in keys:
            ys = [r.get(key, np.nan) for r in rows]
            if not all(isinstance(y, float) and np.isnan(y) for y in ys):
                ax.plot(steps, ys, lw=1, label=label)
        if log:
            ax.set_yscale("log")
        for s in warned:
            ax.axvline(s, color="tab:red", lw=0.8, alpha=0.6)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="best")

    draw(axes[0, 0], [("loss_ratio", "epoch mean"), ("step_loss_ratio", "logged step")],
         "loss / chance (1 = nothing learnt)")  # fmt: skip
    axes[0, 0].axhline(1.0, color="grey", ls="--", lw=0.8)
    draw(axes[0, 1], [("top1", "top-1"), ("top5", "top-5")], "pretext accuracy (logged step)")
    draw(axes[0, 2], [("logit_pos_mean", "positive"), ("logit_neg_mean", "negatives (mean)"),
                      ("logit_neg_max", "negatives (row max)"), ("logit_gap", "gap pos - max")],
         "logits as cosine similarity")  # fmt: skip
    draw(axes[1, 0], [("alignment", "alignment (0 best)"), ("uniformity", "uniformity (lower)")],
         "alignment and uniformity (Wang & Isola)")  # fmt: skip
    ax = axes[1, 1]
    draw(ax, [("eff_rank_ratio", "eff. rank / min(N, C)"), ("dim_std_ratio", "dim std x sqrt(C)")],
         "collapse: embeddings (1 = spread)")  # fmt: skip
    if knn:
        ks = [r["step"] for r in knn]
        ax.plot(ks, [r["feat_eff_rank_ratio"] for r in knn], "s--", ms=4,
                label="backbone at kNN: eff. rank ratio")  # fmt: skip
        ax.plot(ks, [r["feat_dim_std_ratio"] for r in knn], "^--", ms=4,
                label="backbone at kNN: dim std ratio")  # fmt: skip
        ax.legend(fontsize=7, loc="best")
    ax.set_ylim(0, 1.05)
    draw(axes[1, 2], [("drift", "||θq − θk|| / ||θq||")], "key encoder drift")
    draw(axes[2, 0], [("queue_fill", "queue fill"), ("bank_fill", "bank fill"),
                      ("queue_of_data", "K / training images")],
         "stored negatives (fill)")  # fmt: skip
    age = axes[2, 0].twinx()
    for key, style in (("queue_age", "k:"), ("bank_age", "k-.")):
        ys = [r.get(key, np.nan) for r in rows]
        if any(not np.isnan(y) for y in ys):
            age.plot(steps, ys, style, lw=1)
            age.set_ylabel(f"{key.replace('_', ' ')} in steps (dotted)", fontsize=8)
    draw(axes[2, 1], [("grad_norm", "gradient norm")], "gradient norm (trainable)", log=True)
    draw(axes[2, 2], [("lr", "lr")], "lr and momentum")
    mom = axes[2, 2].twinx()
    mom.plot(steps, [r.get("momentum", np.nan) for r in rows], "k:", lw=1)
    mom.set_ylabel("momentum m (dotted)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
