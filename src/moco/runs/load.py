"""Reopen a checkpoint for evaluation: its query encoder, data and normalisation.

Ours (the saved config rebuilds exactly what trained) or an official ``main_moco.py``
checkpoint (the state dict's shapes tell the encoder). The command line and the report
share this; it sits above the engine, evaluation and export, which it wires together.

Each is evaluated as it was trained (:attr:`EvalSetup.normalisation` says which way):

- ``"run"``: ours, at the run's ``augment.size`` with the mean / std of its training data
  (``derived.json``);
- ``"imagenet"``: an official ImageNet encoder (3 channels, the 7x7 stem), as the official
  ``main_lincls.py`` validates: shorter side resized to 256, centre 224 x 224 crop,
  ImageNet mean / std. Image files are decoded at 256 (shorter side, centre square, one
  resampling) and their centre 224 square is cut, which is exactly that; sources of a
  fixed size s have their centre ``round(s * 224 / 256)`` square cut, which the
  evaluation transform resizes to 224 (the same pixels as resizing to 256 first).
  Greyscale data repeats its channel, as the official loader's ``convert("RGB")`` does;
- ``"data"``: a file in the official layout that no ImageNet recipe trained (another
  stem or channel count), so there is no recipe to follow: the evaluation data's own
  mean / std at its own size.
"""

from __future__ import annotations

import dataclasses
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
    normalisation: str  # "run", "imagenet" or "data": see the module docstring
    knn_k: int | None = None  # the run's eval.knn_k (None: an official checkpoint)


# The official ImageNet evaluation (main_lincls.py): Resize(256), CenterCrop(224), and
# torchvision's ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE, CROP = 256, 224


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
        # any arch the config names (ours, vit_*, torchvision:/timm:NAME), as trained
        encoder: nn.Module = build_model(cfg, data.channels, quiet=True).encoder_q
        if not random_init:
            encoder.load_state_dict(query_encoder_state(state["state_dict"]), strict=True)
        mean, std = tuple(state["derived"]["mean"]), tuple(state["derived"]["std"])
        size, normalisation, knn_k = cfg.augment.size, "run", cfg.eval.knn_k
    else:  # an official main_moco.py checkpoint: no config, shapes tell the encoder
        if source is None:
            raise ckpt_io.CheckpointError(
                f"{state['path']} has no moco config (an official checkpoint); "
                "pass the data to evaluate on with --data"
            )
        if "arch" not in state:
            raise ckpt_io.CheckpointError(f"{state['path']} does not say its 'arch'")
        if random_init:
            raise ckpt_io.CheckpointError("--random-init needs a moco checkpoint (its seed)")
        knn_k = None
        encoder = load_query_encoder(state["state_dict"], state["arch"])
        conv1 = encoder.conv1.weight
        if conv1.shape[1] == 3 and conv1.shape[-1] == 7:  # an ImageNet encoder
            data = _official_view(load_source(source, load_size=RESIZE))
            mean, std, size, normalisation = IMAGENET_MEAN, IMAGENET_STD, CROP, "imagenet"
        else:
            data = load_source(source, load_size=CROP)
            mean, std = data.mean_std()
            size, normalisation = data.image_size, "data"
    epoch = state.get("epoch", "?")
    return EvalSetup(encoder, data, size, mean, std, state["path"], epoch, normalisation, knn_k)


def _official_view(data: ImageSplits) -> ImageSplits:
    """``data`` as main_lincls.py's validation sees it before the final resize: the centre
    ``224 / 256`` of every image (224 x 224 when image files were decoded at 256), in
    3 channels (greyscale repeated). Pre-training-only images are dropped."""
    if data.channels not in (1, 3):
        raise DataSourceError(
            f"{data.name} has {data.channels} channels; an ImageNet encoder reads RGB images"
        )
    side = data.image_size
    crop = round(side * CROP / RESIZE)
    top = (side - crop) // 2

    def view(x: torch.Tensor) -> torch.Tensor:
        x = x[..., top : top + crop, top : top + crop]
        return (x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x).contiguous()

    return dataclasses.replace(
        data,
        train_images=view(data.train_images),
        test_images=view(data.test_images),
        unlabelled_images=None,
    )


def require_labels(data: ImageSplits) -> None:
    """kNN and the linear / fine-tuning protocols score predicted classes: an unlabelled
    source (``images:PATH``, every label -1) has nothing to score them against."""
    if bool((data.train_labels < 0).all()) or bool((data.test_labels < 0).all()):
        raise DataSourceError(
            f"{data.name} has no labels (every label is -1, e.g. an images: source); kNN and "
            "linear evaluation need labelled data: pass one with --data, e.g. folder:DIR"
        )
