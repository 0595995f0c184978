"""Reopen a checkpoint for evaluation: its query encoder, data and normalisation.

Ours (the saved config rebuilds exactly what trained) or an official ``main_moco.py``
checkpoint (the state dict's shapes tell the encoder). The command line and the report
share this; it sits above the engine, evaluation and export, which it wires together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moco.config.schema import from_yaml
from moco.data.sources import ImageSplits, load_source
from moco.engine import checkpoint as ckpt_io
from moco.engine.build import build_model
from moco.errors import DataSourceError
from moco.export.official import load_query_encoder
from moco.export.torchvision import query_encoder_state


@dataclass
class EvalSetup:
    """A checkpoint's query encoder with the data and normalisation to evaluate it on."""

    encoder: nn.Module
    data: ImageSplits
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    checkpoint: str
    epoch: Any


def load_for_eval(
    path: str | Path, source: str | None = None, random_init: bool = False
) -> EvalSetup:
    """Our checkpoint (its config rebuilds the encoder) or an official one (shapes do).

    ``random_init`` builds the same encoder without loading its weights (the baseline
    every result should be compared with); the seed is the run's.
    """
    state = ckpt_io.load(path)
    if "config" in state:  # written by moco: rebuild exactly what trained
        cfg = from_yaml(state["config"])
        load_size = cfg.data.load_size or cfg.augment.size
        data = load_source(
            source or cfg.data.source, cfg.data.holdout_fraction, cfg.run.seed, load_size
        )
        torch.manual_seed(cfg.run.seed)
        encoder: nn.Module = build_model(cfg, data.channels).encoder_q
        if not random_init:
            encoder.load_state_dict(query_encoder_state(state["state_dict"]), strict=True)
        mean, std = tuple(state["derived"]["mean"]), tuple(state["derived"]["std"])
        size = cfg.augment.size
    else:  # an official main_moco.py checkpoint: no config, shapes tell the encoder
        if source is None:
            raise ckpt_io.CheckpointError(
                f"{state['path']} has no moco config (an official checkpoint); "
                "pass the data to evaluate on with --data"
            )
        if "arch" not in state:
            raise ckpt_io.CheckpointError(f"{state['path']} does not say its 'arch'")
        data = load_source(source, load_size=224)  # image files: the official 224 crops
        encoder = load_query_encoder(state["state_dict"], state["arch"])
        if random_init:
            raise ckpt_io.CheckpointError("--random-init needs a moco checkpoint (its seed)")
        mean, std = data.mean_std()
        size = data.image_size
    return EvalSetup(encoder, data, size, mean, std, state["path"], state.get("epoch", "?"))


def require_labels(data: ImageSplits) -> None:
    """kNN and the linear / fine-tuning protocols score predicted classes: an unlabelled
    source (``images:PATH``, every label -1) has nothing to score them against."""
    if bool((data.train_labels < 0).all()) or bool((data.test_labels < 0).all()):
        raise DataSourceError(
            f"{data.name} has no labels (every label is -1, e.g. an images: source); kNN and "
            "linear evaluation need labelled data: pass one with --data, e.g. folder:DIR"
        )
