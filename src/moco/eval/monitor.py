"""kNN accuracy of a MoCo encoder on an ImageSplits: the training-time monitor and `moco knn`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from moco.augment.views import build_eval_transform
from moco.data.sources import DataSourceError, ImageSplits, load_source
from moco.data.stream import FileSplits, iter_center_crops
from moco.encoders.resnet import ResNet
from moco.eval.features import extract_features
from moco.eval.knn import knn_top1


@torch.no_grad()
def knn_accuracy(
    encoder: nn.Module,
    data: ImageSplits,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    k: int = 200,
    t: float = 0.1,
    features: str = "backbone",
    device: torch.device | str = "cpu",
) -> float:
    """Weighted kNN top-1 on the held-out split; memory = the training split, no augmentation.

    The encoder is evaluated in eval mode (BN running statistics) and put back in the
    mode it was in.
    """
    transform = build_eval_transform(size, mean, std, data.image_size).to(device)
    was_training = encoder.training
    encoder.eval()
    fwd = cast(ResNet, encoder).forward_features if features == "backbone" else encoder
    try:
        train = extract_features(fwd, data.train_images, transform, device=device)
        test = extract_features(fwd, data.test_images, transform, device=device)
    finally:
        encoder.train(was_training)
    return knn_top1(train, data.train_labels, test, data.test_labels, k, t)


@torch.no_grad()
def knn_accuracy_files(
    encoder: nn.Module,
    files: FileSplits,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    k: int = 200,
    t: float = 0.1,
    features: str = "backbone",
    device: torch.device | str = "cpu",
    workers: int = 4,
) -> float:
    """:func:`knn_accuracy` for a streamed file source: centre crops at ``size`` are
    decoded batch by batch in DataLoader workers, so no split is held in memory (only
    the (N, D) features). Every process encodes every image (not sharded)."""
    transform = build_eval_transform(size, mean, std, size).to(device)
    was_training = encoder.training
    encoder.eval()
    fwd = cast(ResNet, encoder).forward_features if features == "backbone" else encoder

    def encode(split: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        feats, labels = [], []
        for x, y in iter_center_crops(split, size, 256, workers, files.mode):
            feats.append(fwd(transform(x.to(device, non_blocking=True))).float())
            labels.append(y)
        return torch.cat(feats), torch.cat(labels).to(device)

    try:
        train, train_y = encode(files.train)
        test, test_y = encode(files.test)
    finally:
        encoder.train(was_training)
    return knn_top1(train, train_y, test, test_y, k, t)


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
    from moco.config.schema import from_yaml
    from moco.engine import checkpoint as ckpt_io
    from moco.engine.build import build_model
    from moco.export.official import load_query_encoder
    from moco.export.torchvision import query_encoder_state

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


def knn_of_checkpoint(
    path: str | Path,
    source: str | None = None,
    k: int = 200,
    t: float = 0.1,
    features: str = "backbone",
    device: str = "auto",
    random_init: bool = False,
) -> dict[str, Any]:
    """kNN top-1 of a checkpoint's query encoder, as a record of what was measured."""
    from moco import __version__, dist
    from moco.engine.train import resolve_device

    dev = resolve_device(device)
    dist.init_from_env(dev)  # under torchrun: each rank encodes a share of the images
    s = load_for_eval(path, source, random_init)
    require_labels(s.data)
    top1 = knn_accuracy(s.encoder.to(dev), s.data, s.size, s.mean, s.std, k, t, features, dev)
    return {
        "checkpoint": s.checkpoint, "epoch": s.epoch, "random_init": random_init,
        "data": s.data.name, "memory": f"train split ({len(s.data.train_images)} images)",
        "test_split": s.data.held_out, "test_images": len(s.data.test_images),
        "k": k, "t": t, "features": features, "top1": top1, "version": __version__,
    }  # fmt: skip
