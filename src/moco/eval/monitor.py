"""kNN accuracy of a MoCo encoder on pre-training data: the training-time monitor and
`moco knn`.

One function, :func:`knn_monitor`, for any :class:`~moco.data.interface.PretrainData`,
in memory or streamed: the data says how its splits are read and normalised
(``eval_splits``, ``eval_transform``); the features are extracted here, each rank
encoding a contiguous 1/W of every split and the shards gathered back in order
(:func:`moco.dist.shard_indices`, as :func:`~moco.eval.features.extract_features` does),
so every rank returns the same accuracy and no image is counted twice.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from moco import dist
from moco.core.diagnostics import feature_health
from moco.data.in_memory import InMemoryData
from moco.data.interface import EvalSplit, PretrainData
from moco.data.splits import ImageSplits
from moco.encoders.base import as_encoder
from moco.errors import DataSourceError
from moco.eval.knn import knn_top1


@torch.no_grad()
def knn_monitor(
    encoder: nn.Module,
    data: PretrainData,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    k: int,
    t: float,
    features: str,
    device: torch.device,
    workers: int,
) -> float:
    """Weighted kNN top-1 on the held-out split; memory = the training split, no augmentation.
    :func:`knn_monitor_health` is the same with the features' health.

    ``features``: "backbone" (the pooled backbone, ``forward_features``) or the encoder's
    output. The encoder is evaluated in eval mode (BN running statistics) and put back in
    the mode it was in. Streamed files that cannot be read are left out, with one warning
    each; ``workers`` DataLoader processes decode them (unused in memory).
    """
    args = (encoder, data, size, mean, std, k, t, features, device, workers)
    return knn_monitor_health(*args)[0]


@torch.no_grad()
def knn_monitor_health(
    encoder: nn.Module,
    data: PretrainData,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    k: int,
    t: float,
    features: str,
    device: torch.device,
    workers: int,
) -> tuple[float, dict[str, float]]:
    """:func:`knn_monitor`'s top-1 and the health of the held-out split's features
    (:func:`moco.core.diagnostics.feature_health`: effective rank, dimension std): the
    collapse check on the representation itself, not on the head's output."""
    transform = data.eval_transform(size, mean, std).to(device)
    memory, queries = data.eval_splits(size)
    was_training = encoder.training
    encoder.eval()
    fwd = as_encoder(encoder).forward_features if features == "backbone" else encoder
    try:
        train, train_labels = split_features(fwd, memory, transform, device, workers)
        test, test_labels = split_features(fwd, queries, transform, device, workers)
    finally:
        encoder.train(was_training)
    top1 = knn_top1(train, train_labels, test, test_labels, k, t)
    return top1, feature_health(test)


@torch.no_grad()
def split_features(
    forward: Callable[[torch.Tensor], torch.Tensor],
    split: EvalSplit,
    transform: nn.Module,
    device: torch.device,
    workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(float (n', D) features, int64 (n',) labels) of the n' readable images of ``split``,
    in split order, the same on every rank.

    Each rank encodes its contiguous shard (padded to equal length), batch by batch as the
    split gives them; the features of unreadable positions are zero rows until the shards
    are gathered, and are then dropped with their labels. In one process, with every image
    readable (always in memory), this is exactly ``extract_features``' computation.
    """
    n = len(split)
    mine = dist.shard_indices(n)
    feats: list[torch.Tensor | None] = []
    oks: list[torch.Tensor] = []
    shape: tuple[int, ...] = ()
    for x, ok in split.batches(mine, workers):
        shape = tuple(x.shape[1:])
        f = forward(transform(x.to(device, non_blocking=True))).float() if len(x) else None
        feats.append(f)
        oks.append(ok.to(device))
    dim = next((f.shape[1] for f in feats if f is not None), None)
    if dim is None:  # nothing readable in this rank's shard: learn D from a blank image
        blank = torch.zeros((1, *shape), dtype=torch.uint8, device=device)
        dim = forward(transform(blank)).shape[1]
    local = []
    for f, ok in zip(feats, oks, strict=True):
        if f is not None and len(f) == len(ok):
            local.append(f)
        else:  # unreadable files: zero rows in their places
            full = torch.zeros(len(ok), dim, device=device)
            if f is not None:
                full[ok] = f
            local.append(full)
    out = dist.gather_shards(torch.cat(local), n)
    readable = dist.gather_shards(torch.cat(oks).to(torch.uint8), n).bool().cpu()
    labels = split.labels
    if not readable.any():
        raise DataSourceError(f"none of the {n} images of an evaluation split could be read")
    if not readable.all():
        out, labels = out[readable.to(out.device)], labels[readable]
    return out, labels


# ----------------------------------------------------------------------------- ImageSplits


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
    """:func:`knn_monitor` of in-memory splits (`moco knn`, the Python API)."""
    dev = torch.device(device)
    return knn_monitor(encoder, InMemoryData(data), size, mean, std, k, t, features, dev, 0)
