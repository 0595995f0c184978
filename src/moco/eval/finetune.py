"""Fine-tuning for transfer (MoCo Sec. 4.2): the whole network trains on labelled data.

As in the paper's transfer experiments, BN is trained rather than frozen (synchronised
across processes when distributed, ``moco.dist.sync_batchnorm``), and "feature
normalisation" puts a BN layer on the features that enter the newly initialised layer,
so the new head sees normalised inputs whatever the pre-trained features' scale.
Split-BN layers from pre-training normalise the whole batch here (one group). The
epoch is selected on a validation split of the training data; the test split is
evaluated once, at the end.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import cast

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn

from moco.augment.views import build_eval_transform
from moco.data.sources import ImageSplits, stratified_split
from moco.dist import sync_batchnorm, world_size
from moco.encoders.resnet import ResNet
from moco.eval.features import extract_features
from moco.eval.linear import ClassifierResult, topk_accuracy
from moco.layers.split_bn import SplitBatchNorm2d


@dataclass(frozen=True)
class FinetuneProtocol:
    epochs: int = 20
    lr: float = 0.05  # for a batch of 256, scaled linearly
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 128
    norm_features: bool = True  # BN on the features entering the new classifier
    crop_min_scale: float = 0.3
    val_fraction: float = 0.1
    seed: int = 0


def classifier_model(encoder: nn.Module, num_classes: int, norm_features: bool) -> ResNet:
    """A copy of the encoder with a new head: [BN1d] + Linear(feature_dim, num_classes)."""
    net = cast(ResNet, copy.deepcopy(encoder))
    for m in net.modules():
        if isinstance(m, SplitBatchNorm2d):
            m.num_splits = 1  # fine-tuning normalises the whole batch
    head = nn.Linear(net.feature_dim, num_classes)
    net.fc = nn.Sequential(nn.BatchNorm1d(net.feature_dim), head) if norm_features else head
    return net


def finetune(
    encoder: nn.Module,
    data: ImageSplits,
    protocol: FinetuneProtocol,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device | str = "cpu",
) -> ClassifierResult:
    """Fine-tune a copy of ``encoder`` with a new head; see the module docstring."""
    if world_size() > 1:
        raise ValueError(
            "moco finetune runs in one process for now (no DDP of the whole network yet); "
            "launch it without torchrun"
        )
    torch.manual_seed(protocol.seed)
    net = sync_batchnorm(classifier_model(encoder, data.num_classes, protocol.norm_features))
    net = net.to(device)
    keep, val = stratified_split(data.train_labels, protocol.val_fraction, protocol.seed)
    images, labels = data.train_images[keep], data.train_labels[keep].to(device)
    lr = protocol.lr * protocol.batch_size / 256
    optimizer = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay
    )
    steps = protocol.epochs * (len(images) // protocol.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
    eval_tf = build_eval_transform(size, mean, std, data.image_size).to(device)
    train_tf = nn.Sequential(
        K.RandomResizedCrop((size, size), scale=(protocol.crop_min_scale, 1.0)),
        K.RandomHorizontalFlip(),
        build_eval_transform(size, mean, std, size),
    ).to(device)

    def logits(split_images: torch.Tensor) -> torch.Tensor:
        net.eval()
        with torch.no_grad():
            out = extract_features(net, split_images, eval_tf, device=device)
        net.train()
        return out

    g = torch.Generator().manual_seed(protocol.seed)
    y_val = data.train_labels[val].to(device)
    best: tuple[float, int, dict[str, torch.Tensor]] = (-1.0, -1, {})
    curve = []
    net.train()
    for epoch in range(protocol.epochs):
        order = torch.randperm(len(images), generator=g)
        total, n = 0.0, 0
        for i in range(0, len(order) - protocol.batch_size + 1, protocol.batch_size):
            idx = order[i : i + protocol.batch_size]
            x = train_tf(images[idx].to(device).float().div(255.0))
            loss = F.cross_entropy(net(x), labels[idx.to(device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total, n = total + loss.item() * len(idx), n + len(idx)
        val_top1 = topk_accuracy(logits(data.train_images[val]), y_val, 1)
        curve.append({"epoch": epoch + 1, "loss": total / max(1, n), "val_top1": val_top1})
        if val_top1 > best[0]:
            best = (val_top1, epoch + 1, copy.deepcopy(net.state_dict()))
    net.load_state_dict(best[2])
    test = logits(data.test_images)  # the test split, once, with the selected epoch
    y_test = data.test_labels.to(device)
    return ClassifierResult(
        test_top1=topk_accuracy(test, y_test, 1),
        test_top5=topk_accuracy(test, y_test, 5),
        val_top1=best[0],
        best_epoch=best[1],
        protocol=asdict(protocol),
        curve=curve,
    )
