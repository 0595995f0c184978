"""The linear classification protocol (MoCo Sec. 4.1; official ``main_lincls.py``).

A frozen backbone, kept in eval mode (BN uses its running statistics), and one linear
layer on its pooled features trained with SGD (lr 30, weight decay 0, momentum 0.9,
100 epochs, lr x 0.1 at 60 and 80, batch 256). Model selection (the epoch kept) uses
only a validation split carved from the training data; the held-out test split is
evaluated once, at the end, with the selected classifier.

Two paths: through the frozen backbone every step (``augment=True``: random-resized
crops + flips, as the paper), or, without augmentation, on features extracted once
(``cache_features=True``): far faster on a CPU and the same classifier as running the
un-augmented images through the backbone every step (a test checks it).

Under torchrun, every rank encodes a share of each batch (or of the dataset) and the
features are gathered by sample index; the classifier then trains on the same features
with the same seed on every rank, so the replicas stay identical without DDP.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn

from moco import dist
from moco.augment.views import build_eval_transform
from moco.data.sources import ImageSplits, stratified_split
from moco.encoders.resnet import ResNet
from moco.eval.features import extract_features


@dataclass(frozen=True)
class LinearProtocol:
    epochs: int = 100
    lr: float = 30.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = (60, 80)
    batch_size: int = 256
    val_fraction: float = 0.1  # of the training split, stratified, for model selection
    augment: bool = True  # random-resized crop + flip of the training images
    cache_features: bool = False  # without augmentation: extract features once, train on them
    crop_min_scale: float = 0.08  # torchvision's RandomResizedCrop default, as main_lincls
    seed: int = 0


PROTOCOLS: dict[str, LinearProtocol] = {
    "paper": LinearProtocol(),
    # cached features, a shorter schedule: minutes on a CPU for Fashion-MNIST-sized data
    "small": LinearProtocol(epochs=30, milestones=(18, 24), augment=False, cache_features=True),
}


@dataclass
class ClassifierResult:
    """What a supervised protocol on top of an encoder (linear probe, fine-tune) reports."""

    test_top1: float
    test_top5: float
    val_top1: float  # of the selected epoch
    best_epoch: int
    protocol: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)  # per epoch: loss, val_top1


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    hit = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return hit.float().mean().item()


def train_linear_probe(
    encoder: nn.Module,
    data: ImageSplits,
    protocol: LinearProtocol,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device | str = "cpu",
) -> ClassifierResult:
    """Train a linear classifier on the frozen ``encoder.forward_features``; see module doc."""
    if protocol.augment and protocol.cache_features:
        raise ValueError("cache_features needs augment=False: augmented views change every epoch")
    backbone = cast(ResNet, encoder).to(device)
    before = copy.deepcopy(backbone.state_dict())
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)

    keep, val = stratified_split(data.train_labels, protocol.val_fraction, protocol.seed)
    num_classes = data.num_classes
    eval_tf = build_eval_transform(size, mean, std, data.image_size).to(device)
    with torch.no_grad():
        feature_dim = backbone.forward_features(eval_tf(data.train_images[:2].to(device))).shape[1]
    classifier = nn.Linear(feature_dim, num_classes).to(device)
    g = torch.Generator().manual_seed(protocol.seed)  # the probe is seeded, not the caller
    with torch.no_grad():  # N(0, 0.01) weights and zero bias, as main_lincls
        classifier.weight.copy_(torch.randn(classifier.weight.shape, generator=g) * 0.01)
    nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.SGD(
        classifier.parameters(),
        lr=protocol.lr,
        momentum=protocol.momentum,
        weight_decay=protocol.weight_decay,
    )
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for p in classifier.parameters()}, "only the classifier trains"
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(protocol.milestones), 0.1)

    def features(images: torch.Tensor) -> torch.Tensor:
        return extract_features(backbone.forward_features, images, eval_tf, device=device)

    x_val, y_val = features(data.train_images[val]), data.train_labels[val].to(device)
    train_images, y_train = data.train_images[keep], data.train_labels[keep].to(device)
    cached = features(train_images) if protocol.cache_features else None
    train_tf: nn.Module = eval_tf
    if protocol.augment:
        train_tf = nn.Sequential(
            K.RandomResizedCrop((size, size), scale=(protocol.crop_min_scale, 1.0)),
            K.RandomHorizontalFlip(),
            build_eval_transform(size, mean, std, size),  # normalise after the crop
        ).to(device)

    best: tuple[float, int, dict[str, torch.Tensor]] = (-1.0, -1, {})
    curve = []
    for epoch in range(protocol.epochs):
        order = torch.randperm(len(y_train), generator=g).to(device)
        total, n = 0.0, 0
        for i in range(0, len(order), protocol.batch_size):
            idx = order[i : i + protocol.batch_size]
            if cached is not None:
                x = cached[idx]
            else:
                with torch.no_grad():  # each rank encodes a share of the batch
                    mine = idx.cpu()[dist.shard_indices(len(idx))]
                    raw = train_images[mine].to(device).float().div(255.0)
                    x = dist.gather_shards(backbone.forward_features(train_tf(raw)), len(idx))
            loss = F.cross_entropy(classifier(x), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, n = total + loss.item() * len(idx), n + len(idx)
        scheduler.step()
        with torch.no_grad():
            val_top1 = topk_accuracy(classifier(x_val), y_val, 1)
        curve.append({"epoch": epoch + 1, "loss": total / n, "val_top1": val_top1})
        if val_top1 > best[0]:
            best = (val_top1, epoch + 1, copy.deepcopy(classifier.state_dict()))

    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, before[name]), f"backbone changed during the probe: {name}"
    classifier.load_state_dict(best[2])
    with torch.no_grad():  # the test split, once, with the classifier selected on val
        logits = classifier(features(data.test_images))
    y_test = data.test_labels.to(device)
    return ClassifierResult(
        test_top1=topk_accuracy(logits, y_test, 1),
        test_top5=topk_accuracy(logits, y_test, 5),
        val_top1=best[0],
        best_epoch=best[1],
        protocol=asdict(protocol),
        curve=curve,
    )
