"""Fine-tuning for transfer (MoCo Sec. 4.2): the whole network trains on labelled data.

As in the paper's transfer experiments, BN is trained rather than frozen (synchronised
across processes when distributed, ``moco.dist.sync_batchnorm``), and "feature
normalisation" puts a BN layer on the features that enter the newly initialised layer,
so the new head sees normalised inputs whatever the pre-trained features' scale.
Split-BN layers from pre-training normalise the whole batch here (one group). The
epoch is selected on a validation split of the training data; the test split is
evaluated once, at the end (:func:`moco.eval.protocol.select_on_val`, shared with the
linear probe; this module says what trains and how a batch is made).

``label_fraction`` < 1 fine-tunes on a stratified subset of the training labels (the
semi-supervised protocol); where it holds fewer images than ``batch_size``, a batch is
all of them and the lr is scaled linearly to that batch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import kornia.augmentation as K
import torch
from torch import nn

from moco.augment.views import build_eval_transform
from moco.data.sources import ImageSplits
from moco.dist import sync_batchnorm, world_size
from moco.encoders.base import Encoder, as_encoder
from moco.eval.features import extract_features
from moco.eval.protocol import ClassifierResult, Trainee, batch_size_for, select_on_val
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
    label_fraction: float = 1.0  # of the training labels left by val, per class (few labels)
    label_seed: int = 0  # draws that subset


def classifier_model(encoder: nn.Module, num_classes: int, norm_features: bool) -> Encoder:
    """A copy of the encoder with a new head: [BN1d] + Linear(feature_dim, num_classes)."""
    copied = copy.deepcopy(encoder)
    for m in copied.modules():
        if isinstance(m, SplitBatchNorm2d):
            m.num_splits = 1  # fine-tuning normalises the whole batch
    net = as_encoder(copied)  # a ResNet or a ViT
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
    net = classifier_model(encoder, data.num_classes, protocol.norm_features)
    assert isinstance(net, nn.Module)  # an encoder is a module (narrows the type)
    model = sync_batchnorm(net).to(device)
    eval_tf = build_eval_transform(size, mean, std, data.image_size).to(device)
    train_tf = nn.Sequential(
        K.RandomResizedCrop((size, size), scale=(protocol.crop_min_scale, 1.0)),
        K.RandomHorizontalFlip(),
        build_eval_transform(size, mean, std, size),
    ).to(device)

    def logits(split_images: torch.Tensor) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            out = extract_features(model, split_images, eval_tf, device=device)
        model.train()
        return out

    def setup(keep: torch.Tensor, val: torch.Tensor, g: torch.Generator) -> Trainee:
        images = data.train_images[keep]
        batch = batch_size_for(protocol, len(images))  # fewer labelled images than a batch
        lr = protocol.lr * batch / 256
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=lr,
            momentum=protocol.momentum,
            weight_decay=protocol.weight_decay,
        )
        steps = protocol.epochs * (len(images) // batch)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
        model.train()
        return Trainee(
            model,
            lambda idx: model(train_tf(images[idx].to(device).float().div(255.0))),
            optimizer,
            scheduler,
            val_logits=lambda: logits(data.train_images[val]),
            test_logits=lambda: logits(data.test_images),  # the selected epoch, once
            schedule_per_batch=True,  # cosine over the steps
            drop_last=True,
        )

    return select_on_val(data, protocol, setup, device)
