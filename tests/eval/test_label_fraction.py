"""Few labels (the semi-supervised protocol): a stratified, seeded subset of the training
labels left by the validation split; validation, selection and test as the full protocol."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from moco.data.sources import ImageSplits, load_source, stratified_split
from moco.data.splits import check_label_fraction, label_subset
from moco.encoders.resnet import build_encoder
from moco.errors import ConfigError
from moco.eval.finetune import FinetuneProtocol, finetune
from moco.eval.linear import PROTOCOLS, train_linear_probe
from moco.eval.protocol import Trainee, select_on_val, training_positions


def _labels(counts):
    """Labels of classes with the given image counts, shuffled so classes interleave."""
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(5))]


def test_the_subset_is_stratified_with_at_least_one_image_per_class():
    counts = [100, 45, 7, 1, 250]
    y = _labels(counts)
    for fraction in (0.01, 0.1, 0.5):
        chosen = label_subset(y, fraction, seed=0)
        assert torch.equal(chosen, torch.sort(chosen).values)  # sorted positions
        assert len(torch.unique(chosen)) == len(chosen)  # no position twice
        got = torch.bincount(y[chosen], minlength=len(counts)).tolist()
        want = [max(1, math.floor(fraction * n + 0.5)) for n in counts]
        assert got == want, fraction
    # 10 %: 10 + 5 (4.5 rounds half up) + 1 (0.7) + 1 (a class of one) + 25
    assert len(label_subset(y, 0.1, seed=0)) == 42
    assert torch.equal(label_subset(y, 1.0, seed=3), torch.arange(len(y)))  # all, in order


def test_the_subset_is_seeded_and_nested():
    y = _labels([300, 200, 100])
    a, b = label_subset(y, 0.1, seed=1), label_subset(y, 0.1, seed=1)
    assert torch.equal(a, b)  # same seed, same subset
    assert not torch.equal(a, label_subset(y, 0.1, seed=2))  # another seed, another subset
    small = set(label_subset(y, 0.01, seed=1).tolist())
    assert small < set(a.tolist())  # the 1 % subset lies inside the 10 % one of its seed


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.01, 2, math.nan, math.inf, "0.1", None, True])
def test_bad_fractions_are_refused_naming_label_fraction(bad):
    with pytest.raises(ConfigError, match=r"label_fraction must be a number in \(0, 1\]"):
        check_label_fraction(bad)
    with pytest.raises(ConfigError, match="label_fraction"):
        label_subset(torch.arange(10) % 2, bad, 0)  # type: ignore[arg-type]
    proto = dataclasses.replace(PROTOCOLS["small"], label_fraction=bad)
    with pytest.raises(ConfigError, match="label_fraction"):  # before any training
        select_on_val(_toy(), proto, lambda *a: pytest.fail("setup ran"))


def _toy(n=200, m=40, classes=4):
    return ImageSplits(
        "toy",
        torch.zeros(n, 1, 2, 2, dtype=torch.uint8),
        torch.arange(n) % classes,
        torch.zeros(m, 1, 2, 2, dtype=torch.uint8),
        torch.arange(m) % classes,
        "toy",
    )


@dataclasses.dataclass(frozen=True)
class _Settings:
    epochs: int = 2
    batch_size: int = 8
    val_fraction: float = 0.2
    seed: int = 3
    label_fraction: float = 0.1
    label_seed: int = 0


def test_the_subset_comes_from_train_only_never_validation_or_test():
    data, settings = _toy(), _Settings()
    kept, val_full = stratified_split(data.train_labels, 0.2, 3)
    keep, val = training_positions(data.train_labels, settings)
    assert torch.equal(val, val_full)  # validation exactly as with every label
    assert set(keep.tolist()) <= set(kept.tolist()) and not set(keep.tolist()) & set(val.tolist())
    assert len(keep) == 4 * 4  # 10 % of 40 kept per class
    seen = {"batches": [], "test": 0}

    def setup(k, v, g):
        assert torch.equal(k, keep) and torch.equal(v, val)
        model = nn.Linear(1, 4)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)

        def train_logits(idx):  # positions into k: never past the labelled subset
            assert int(idx.max()) < len(k)
            seen["batches"].append(len(idx))
            return model(torch.ones(len(idx), 1))

        def test_logits():
            seen["test"] += 1
            return model(torch.ones(len(data.test_labels), 1))

        return Trainee(
            model,
            train_logits,
            opt,
            torch.optim.lr_scheduler.StepLR(opt, 1),
            val_logits=lambda: model(torch.ones(len(v), 1)),
            test_logits=test_logits,
        )

    result = select_on_val(data, settings, setup)
    assert result.labelled_images == 16 and seen["test"] == 1
    assert seen["batches"] == [8, 8] * 2  # 16 labelled images, batch 8, 2 epochs
    assert result.protocol["label_fraction"] == 0.1 and result.protocol["label_seed"] == 0


def test_fraction_one_is_the_full_protocol(tiny_idx):
    """label_fraction 1 (any label seed) gives exactly the numbers of a protocol without it."""
    data = load_source(str(tiny_idx))
    enc = build_encoder("resnet18", 16, cifar_stem=True, in_chans=1, width=0.125)
    base = dataclasses.replace(PROTOCOLS["small"], epochs=2, milestones=(1,), batch_size=64)
    full = train_linear_probe(enc, data, base, 28, (0.28,), (0.35,))
    flagged = dataclasses.replace(base, label_fraction=1.0, label_seed=7)
    again = train_linear_probe(enc, data, flagged, 28, (0.28,), (0.35,))
    assert again.curve == full.curve and again.test_top1 == full.test_top1
    assert again.labelled_images == full.labelled_images == 256 - 26  # val: 10 % per class
    few = train_linear_probe(
        enc, data, dataclasses.replace(base, label_fraction=0.1), 28, (0.28,), (0.35,)
    )
    assert few.labelled_images < 40 and len(few.curve) == 2
    assert 0.0 <= few.test_top1 <= few.test_top5 <= 1.0


def test_finetune_trains_when_the_labelled_images_do_not_fill_a_batch(tiny_idx):
    data = load_source(str(tiny_idx))
    enc = build_encoder("resnet18", 16, cifar_stem=True, in_chans=1, width=0.125, bn_splits=2)
    proto = FinetuneProtocol(epochs=1, batch_size=128, label_fraction=0.1, lr=0.2)
    net_before = {k: v.clone() for k, v in enc.state_dict().items()}
    result = finetune(enc, data, proto, 28, (0.28,), (0.35,))
    assert result.labelled_images < 128 and len(result.curve) == 1
    assert result.curve[0]["loss"] > 0  # a batch of all the labelled images trained
    assert all(torch.equal(v, net_before[k]) for k, v in enc.state_dict().items())
