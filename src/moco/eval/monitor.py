"""kNN accuracy of a MoCo encoder on an ImageSplits: the training-time monitor and `moco knn`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from moco.augment.views import build_eval_transform
from moco.data.sources import ImageSplits
from moco.data.stream import FileSplits, iter_center_crops
from moco.encoders.base import as_encoder
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
    fwd = as_encoder(encoder).forward_features if features == "backbone" else encoder
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
    fwd = as_encoder(encoder).forward_features if features == "backbone" else encoder

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
