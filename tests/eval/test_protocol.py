"""select_on_val: the split, the epochs, the selection on val and the single test pass."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from moco.data.sources import ImageSplits, stratified_split
from moco.eval.protocol import Trainee, select_on_val, topk_accuracy


@dataclasses.dataclass(frozen=True)
class Settings:
    epochs: int = 4
    batch_size: int = 16
    val_fraction: float = 0.2
    seed: int = 3


def _data(n=100, m=30, classes=4):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    return ImageSplits(
        "toy",
        torch.zeros(n, 1, 2, 2, dtype=torch.uint8),  # the trainee brings its own inputs
        labels,
        torch.zeros(m, 1, 2, 2, dtype=torch.uint8),
        torch.randint(0, classes, (m,), generator=g),
        "toy",
    )


def _hit_logits(labels, hits, classes=4):
    """Logits whose top-1 is right for the first ``hits`` samples, wrong for the rest."""
    guess = labels.clone()
    guess[hits:] = (guess[hits:] + 1) % classes
    return F.one_hot(guess, classes).float()


def test_the_first_best_epoch_on_val_is_kept_and_the_test_split_seen_once():
    data, settings = _data(), Settings()
    x = torch.randn(len(data.train_labels), 5, generator=torch.Generator().manual_seed(1))
    val_hits = iter([2, 8, 8, 5])  # right answers on val per epoch: epoch 2 is the first best
    log = {"states": [], "batches": [], "tests": 0}

    def setup(keep, val, g):
        want_keep, want_val = stratified_split(data.train_labels, 0.2, settings.seed)
        assert torch.equal(keep, want_keep) and torch.equal(val, want_val)
        model = nn.Linear(5, 4)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
        log.update(model=model, n_train=len(keep), n_val=len(val))

        def train_logits(idx):
            log["batches"].append(idx.clone())
            return model(x[keep][idx])

        def val_logits():
            log["states"].append(copy.deepcopy(model.state_dict()))
            return _hit_logits(data.train_labels[val], next(val_hits))

        def test_logits():
            log["tests"] += 1
            for k, v in model.state_dict().items():  # the state validated at epoch 2
                assert torch.equal(v, log["states"][1][k]), k
            return model(torch.randn(len(data.test_labels), 5))

        return Trainee(model, train_logits, opt, sched, val_logits, test_logits)

    result = select_on_val(data, settings, setup)
    n_val = log["n_val"]
    assert [c["val_top1"] for c in result.curve] == pytest.approx([h / n_val for h in (2, 8, 8, 5)])
    assert result.best_epoch == 2 and result.val_top1 == pytest.approx(8 / n_val)
    for k, v in log["model"].state_dict().items():  # restored, and left so
        assert torch.equal(v, log["states"][1][k]), k
    assert not torch.equal(log["states"][1]["weight"], log["states"][3]["weight"])  # it trained on
    assert log["tests"] == 1
    assert result.protocol == dataclasses.asdict(settings)
    assert [c["epoch"] for c in result.curve] == [1, 2, 3, 4]

    # every epoch sees each training sample once, in an order drawn from the seeded generator
    g = torch.Generator().manual_seed(settings.seed)
    per_epoch = -(-log["n_train"] // settings.batch_size)  # the last, partial batch included
    for e in range(settings.epochs):
        seen = torch.cat(log["batches"][e * per_epoch : (e + 1) * per_epoch])
        assert torch.equal(seen, torch.randperm(log["n_train"], generator=g))


@pytest.mark.parametrize(("per_batch", "drop_last"), [(False, False), (True, True)])
def test_schedule_and_last_batch(per_batch, drop_last):
    data, settings = _data(n=90), Settings(epochs=3, batch_size=20)
    sizes, losses, made = [], [], {}

    def setup(keep, val, g):
        model = nn.Linear(3, 4)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        x, y = torch.randn(len(keep), 3), data.train_labels[keep]
        made.update(sched=sched, n_train=len(keep))

        def train_logits(idx):
            sizes.append(len(idx))
            out = model(x[idx])
            losses.append(F.cross_entropy(out, y[idx]).item() * len(idx))
            return out

        return Trainee(
            model,
            train_logits,
            opt,
            sched,
            val_logits=lambda: model(torch.zeros(len(val), 3)),
            test_logits=lambda: model(torch.zeros(len(data.test_labels), 3)),
            schedule_per_batch=per_batch,
            drop_last=drop_last,
        )

    result = select_on_val(data, settings, setup)
    full, rest = divmod(made["n_train"], settings.batch_size)
    assert rest > 0  # the case under test: a partial last batch
    per_epoch = [settings.batch_size] * full + ([] if drop_last else [rest])
    assert sizes == per_epoch * settings.epochs
    steps = len(per_epoch) * settings.epochs if per_batch else settings.epochs
    assert made["sched"].last_epoch == steps
    k = len(per_epoch)
    for e, c in enumerate(result.curve):  # the mean loss over the epoch's samples
        assert c["loss"] == pytest.approx(sum(losses[e * k : (e + 1) * k]) / sum(per_epoch))


def test_topk_accuracy():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(logits, labels, 5) == 1.0  # k is capped at the number of classes
