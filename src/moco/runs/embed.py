"""``moco embed``: a checkpoint's features of a dataset, written as .npy files.

The frozen query encoder (eval mode, no augmentation) encodes the training and the
held-out split; each split becomes ``<split>_features.npy`` (float32, N x D),
``<split>_labels.npy`` and ``<split>_sources.txt`` (where each row came from), and
``embed.json`` records what was encoded, so the files can be read without moco.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moco.augment.views import build_eval_transform
from moco.device import resolve_device
from moco.encoders.base import as_encoder
from moco.errors import OutputExistsError
from moco.eval.features import extract_features
from moco.runs.load import load_for_eval
from moco.version import __version__


@dataclass(frozen=True)
class Embedding:
    """What :func:`embed_checkpoint` wrote: the directory, embed.json's record, the rows."""

    out_dir: Path
    meta: dict[str, Any]  # the record in embed.json
    rows: dict[str, int]  # rows written per split: {"train": N, "test": M}


def embed_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    data: str | None = None,
    features: str = "backbone",
    device: str = "auto",
) -> Embedding:
    """Write the features of ``data`` (default: the checkpoint's own) into ``out_dir``.

    ``features`` is ``"backbone"`` (pooled pre-logits features, (N, feature_dim)) or
    ``"head"`` (the projection head's output). ``out_dir`` must be new or empty: files of
    two checkpoints are never mixed.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"output directory {str(out)!r} exists and is not empty")
    dev = resolve_device(device)
    s = load_for_eval(checkpoint, data)
    encoder = as_encoder(s.encoder.to(dev).eval())
    forward = encoder.forward_features if features == "backbone" else encoder
    transform = build_eval_transform(s.size, s.mean, s.std, s.data.image_size).to(dev)
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": (s.data.train_images, s.data.train_labels),
              "test": (s.data.test_images, s.data.test_labels)}  # fmt: skip
    with torch.no_grad():
        for split, (images, labels) in splits.items():
            feats = extract_features(forward, images, transform, device=dev)
            np.save(out / f"{split}_features.npy", feats.cpu().numpy().astype(np.float32))
            np.save(out / f"{split}_labels.npy", labels.numpy())
            (out / f"{split}_sources.txt").write_text(
                "".join(f"{s.data.name}:{split}:{i}\n" for i in range(len(images)))
            )
    meta = {"checkpoint": s.checkpoint, "epoch": s.epoch, "data": s.data.name,
            "held_out": s.data.held_out, "features": features,
            "dim": int(feats.shape[1]), "normalisation": s.normalisation,
            "version": __version__}  # fmt: skip
    (out / "embed.json").write_text(json.dumps(meta, indent=2))
    return Embedding(out, meta, {split: len(images) for split, (images, _) in splits.items()})
