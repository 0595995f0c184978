"""Model selection on a validation split: the skeleton the supervised protocols share.

The linear probe (MoCo Sec. 4.1, :mod:`moco.eval.linear`) and fine-tuning (Sec. 4.2,
:mod:`moco.eval.finetune`) differ in what trains (one linear layer on frozen features,
or the whole network) and in how a batch of training images becomes logits. The rest
is :func:`select_on_val`: a stratified validation split carved from the labelled
training data, epochs of SGD that each end with top-1 on that split, the state of the
best epoch kept, and the held-out test split evaluated once, with that state. The test
split never chooses anything.

Few labels (the semi-supervised protocol of SimCLR and MoCo v2/v3: 1 % and 10 % of the
labels): a protocol whose settings carry ``label_fraction`` < 1 trains on a stratified,
seeded subset (``label_seed``) of what the validation split leaves of the training split
(:func:`moco.data.splits.label_subset`). The validation split, the selection and the test
split are those of the full protocol, so the numbers of two fractions compare.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import Field, asdict, dataclass, field
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from moco.data.sources import ImageSplits, stratified_split
from moco.data.splits import check_label_fraction, label_subset


@dataclass
class ClassifierResult:
    """What a supervised protocol on top of an encoder (linear probe, fine-tune) reports."""

    test_top1: float
    test_top5: float
    val_top1: float  # of the selected epoch
    best_epoch: int
    protocol: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)  # per epoch: loss, val_top1
    labelled_images: int = 0  # the labelled training images it trained on


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    hit = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return hit.float().mean().item()


class Settings(Protocol):
    """The fields of a protocol's (frozen dataclass) settings that selection reads."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # recorded whole in the result

    @property
    def epochs(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def val_fraction(self) -> float: ...  # of the training split, stratified
    @property
    def seed(self) -> int: ...  # of the split and of the epochs' sample orders

    # Optional, read with getattr (settings without them use every label):
    # label_fraction: float in (0, 1], the share of the labels trained on (1.0);
    # label_seed: int, the seed that draws them (0)


def label_settings(settings: Settings) -> tuple[float, int]:
    """``(label_fraction, label_seed)`` of ``settings``: ``(1.0, 0)`` where it has none;
    a fraction outside (0, 1] raises a ``ConfigError`` naming ``label_fraction``."""
    fraction = check_label_fraction(getattr(settings, "label_fraction", 1.0))
    return fraction, int(getattr(settings, "label_seed", 0))


def training_positions(
    labels: torch.Tensor, settings: Settings
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) positions into ``labels`` (the training split's): the stratified
    validation split of ``settings.val_fraction`` and ``settings.seed``, and what it leaves,
    cut to ``settings.label_fraction`` of every class with ``settings.label_seed``. Drawn
    from the kept positions only, so never from the validation (or test) images."""
    fraction, label_seed = label_settings(settings)
    keep, val = stratified_split(labels, settings.val_fraction, settings.seed)
    if fraction < 1.0:
        keep = keep[label_subset(labels[keep], fraction, label_seed)]
    return keep, val


def batch_size_for(settings: Settings, labelled: int) -> int:
    """The batch an epoch is cut into: ``settings.batch_size``, or all ``labelled``
    images where they are fewer (1 % of the labels may not fill one batch)."""
    return max(1, min(settings.batch_size, labelled))


@dataclass
class Trainee:
    """What one protocol trains and how: everything :func:`select_on_val` leaves open."""

    model: nn.Module  # whose state is kept for the selected epoch and restored for the test
    train_logits: Callable[[torch.Tensor], torch.Tensor]  # (B,) train-split positions -> (B, K)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    val_logits: Callable[[], torch.Tensor]  # (V, K) on the validation split, after each epoch
    test_logits: Callable[[], torch.Tensor]  # (T, K) on the test split, once
    schedule_per_batch: bool = False  # step the scheduler after every batch, else every epoch
    drop_last: bool = False  # leave out an epoch's last, partial batch


def select_on_val(
    data: ImageSplits,
    settings: Settings,
    setup: Callable[[torch.Tensor, torch.Tensor, torch.Generator], Trainee],
    device: torch.device | str = "cpu",
) -> ClassifierResult:
    """Train ``settings.epochs`` epochs, keep the best on val, evaluate the test split once.

    ``setup(keep, val, g)`` gets the indices of the split (into ``data.train_*``;
    ``keep`` cut to the labelled subset, :func:`training_positions`) and the
    generator seeded with ``settings.seed`` that then draws every epoch's sample order
    (a protocol may draw from it first, e.g. its initial weights), and returns the
    :class:`Trainee`. Each batch's loss is the cross-entropy of ``train_logits`` with the
    batch's labels; an epoch's loss in the curve is the mean over its samples; batches
    hold :func:`batch_size_for` images. The first epoch with the highest validation top-1
    is selected.
    """
    keep, val = training_positions(data.train_labels, settings)
    g = torch.Generator().manual_seed(settings.seed)  # the protocol is seeded, not the caller
    t = setup(keep, val, g)
    y_train, y_val = data.train_labels[keep].to(device), data.train_labels[val].to(device)
    size = batch_size_for(settings, len(keep))
    best: tuple[float, int, dict[str, torch.Tensor]] = (-1.0, -1, {})
    curve = []
    for epoch in range(settings.epochs):
        order = torch.randperm(len(keep), generator=g)
        total, n = 0.0, 0
        for i in range(0, len(order) - size + 1 if t.drop_last else len(order), size):
            idx = order[i : i + size]
            loss = F.cross_entropy(t.train_logits(idx), y_train[idx.to(device)])
            t.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t.optimizer.step()
            if t.schedule_per_batch:
                t.scheduler.step()
            total, n = total + loss.item() * len(idx), n + len(idx)
        if not t.schedule_per_batch:
            t.scheduler.step()
        with torch.no_grad():
            val_top1 = topk_accuracy(t.val_logits(), y_val, 1)
        curve.append({"epoch": epoch + 1, "loss": total / max(1, n), "val_top1": val_top1})
        if val_top1 > best[0]:
            best = (val_top1, epoch + 1, copy.deepcopy(t.model.state_dict()))

    t.model.load_state_dict(best[2])
    with torch.no_grad():  # the test split, once, with the state selected on val
        test = t.test_logits()
    y_test = data.test_labels.to(device)
    return ClassifierResult(
        test_top1=topk_accuracy(test, y_test, 1),
        test_top5=topk_accuracy(test, y_test, 5),
        val_top1=best[0],
        best_epoch=best[1],
        protocol=asdict(settings),
        curve=curve,
        labelled_images=len(keep),
    )
