"""``moco knn``: the weighted kNN accuracy of a checkpoint, as a record of what was measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moco import dist
from moco.device import resolve_device
from moco.eval.monitor import knn_accuracy
from moco.runs.load import load_for_eval, require_labels
from moco.version import __version__


def knn_of_checkpoint(
    path: str | Path,
    source: str | None = None,
    k: int | None = None,
    t: float = 0.1,
    features: str = "backbone",
    device: str = "auto",
    random_init: bool = False,
) -> dict[str, Any]:
    """kNN top-1 of a checkpoint's query encoder, as a record of what was measured.
    ``k`` None: the run's ``eval.knn_k`` (200 for an official checkpoint)."""
    dev = resolve_device(device)
    dist.init_from_env(dev)  # under torchrun: each rank encodes a share of the images
    s = load_for_eval(path, source, random_init)
    require_labels(s.data)
    if k is None:  # the run's own k (fitted to its data), else the paper's 200
        k = s.knn_k if s.knn_k is not None else 200
    top1 = knn_accuracy(s.encoder.to(dev), s.data, s.size, s.mean, s.std, k, t, features, dev)
    return {
        "checkpoint": s.checkpoint, "epoch": s.epoch, "random_init": random_init,
        "data": s.data.name, "memory": f"train split ({len(s.data.train_images)} images)",
        "test_split": s.data.held_out, "test_images": len(s.data.test_images),
        "k": k, "t": t, "features": features, "normalisation": s.normalisation, "top1": top1,
        "version": __version__,
    }  # fmt: skip
