"""The linear classification protocol (MoCo Sec. 4.1; official ``main_lincls.py``).

A frozen backbone, kept in eval mode (BN uses its running statistics), and one linear
layer on its pooled features trained with SGD (lr 30, weight decay 0, momentum 0.9,
100 epochs, lr x 0.1 at 60 and 80, batch 256). Model selection (the epoch kept) uses
only a validation split carved from the training data; the held-out test split is
evaluated once, at the end, with the selected classifier
(:func:`moco.eval.protocol.select_on_val`, shared with fine-tuning). ``label_fraction``
< 1 trains the classifier on a stratified, seeded subset of the training labels (the
semi-supervised protocol of SimCLR and MoCo: 1 % or 10 % of the labels); validation and
test stay those of the full protocol.

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
from dataclasses import dataclass

import kornia.augmentation as K
import torch
from torch import nn

from moco import dist
from moco.augment.views import build_eval_transform
from moco.data.sources import ImageSplits
from moco.encoders.base import as_encoder
from moco.eval.features import extract_features
from moco.eval.protocol import ClassifierResult, Trainee, select_on_val


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
    label_fraction: float = 1.0  # of the training labels left by val, per class (few labels)
    label_seed: int = 0  # draws that subset


PROTOCOLS: dict[str, LinearProtocol] = {
    "paper": LinearProtocol(),
    # cached features, a shorter schedule: minutes on a CPU for Fashion-MNIST-sized data
    "small": LinearProtocol(epochs=30, milestones=(18, 24), augment=False, cache_features=True),
}


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
    backbone = encoder.to(device)
    frozen = as_encoder(backbone)  # a ResNet or a ViT
    before = copy.deepcopy(backbone.state_dict())
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    eval_tf = build_eval_transform(size, mean, std, data.image_size).to(device)

    def features(images: torch.Tensor) -> torch.Tensor:
        return extract_features(frozen.forward_features, images, eval_tf, device=device)

    def setup(keep: torch.Tensor, val: torch.Tensor, g: torch.Generator) -> Trainee:
        classifier = nn.Linear(frozen.feature_dim, data.num_classes).to(device)
        with torch.no_grad():  # N(0, 0.01) weights and zero bias, as main_lincls
            classifier.weight.copy_(torch.randn(classifier.weight.shape, generator=g) * 0.01)
        nn.init.zeros_(classifier.bias)
        optimizer = torch.optim.SGD(
            classifier.parameters(),
            lr=protocol.lr,
            momentum=protocol.momentum,
            weight_decay=protocol.weight_decay,
        )
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert trained == {id(p) for p in classifier.parameters()}, "only the classifier trains"
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(protocol.milestones), 0.1)

        x_val = features(data.train_images[val])
        train_images = data.train_images[keep]
        cached = features(train_images) if protocol.cache_features else None
        train_tf: nn.Module = eval_tf
        if protocol.augment:
            train_tf = nn.Sequential(
                K.RandomResizedCrop((size, size), scale=(protocol.crop_min_scale, 1.0)),
                K.RandomHorizontalFlip(),
                build_eval_transform(size, mean, std, size),  # normalise after the crop
            ).to(device)

        def train_logits(idx: torch.Tensor) -> torch.Tensor:
            if cached is not None:
                return classifier(cached[idx.to(device)])
            with torch.no_grad():  # each rank encodes a share of the batch
                mine = idx[dist.shard_indices(len(idx))]
                raw = train_images[mine].to(device).float().div(255.0)
                x = dist.gather_shards(frozen.forward_features(train_tf(raw)), len(idx))
            return classifier(x)

        return Trainee(
            classifier,
            train_logits,
            optimizer,
            scheduler,
            val_logits=lambda: classifier(x_val),
            test_logits=lambda: classifier(features(data.test_images)),
        )

    result = select_on_val(data, protocol, setup, device)
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, before[name]), f"backbone changed during the probe: {name}"
    return result
