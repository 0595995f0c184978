"""Run health (docs/run-health.md): the methods' chance losses and diagnostic logits, the
queue's age, the detectors, and that measuring changes no weight."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from moco.core import diagnostics as dg
from moco.core.end_to_end import EndToEnd
from moco.core.memory_bank import MemoryBank
from moco.core.method import ContrastiveMethod
from moco.core.moco import MoCo
from moco.core.moco_v3 import MoCoV3
from moco.core.queue import enqueue_
from moco.core.simclr import SimCLR
from moco.engine import health
from moco.engine.metrics import read_metrics
from moco.runs.train import pretrain

N, DIM = 8, 16


class Constant(nn.Module):
    """Every image to the same vector: nothing can be told apart."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, DIM)
        nn.init.zeros_(self.fc.weight)
        nn.init.ones_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)[:, :4])


def _constant_method(name: str) -> ContrastiveMethod:
    enc = Constant()
    unit = F.normalize(torch.ones(DIM), dim=0)
    if name == "moco":
        m: ContrastiveMethod = MoCo(enc, DIM, 32, 0.99, 0.2, shuffle_keys=False)
        m.queue.copy_(unit[:, None].expand(DIM, 32))
    elif name == "moco_symmetric":
        m = MoCo(enc, DIM, 32, 0.99, 0.2, shuffle_keys=False, symmetric=True)
        m.queue.copy_(unit[:, None].expand(DIM, 32))
    elif name == "memory_bank":
        m = MemoryBank(enc, DIM, 20, 24, 0.2)
        m.bank.copy_(unit.expand(20, DIM))
    elif name == "end_to_end":
        m = EndToEnd(enc, 0.2, shuffle_keys=False)
    elif name == "moco_v3":
        m = MoCoV3(enc, nn.Identity(), 0.99, 0.2)
    else:
        m = SimCLR(enc, 0.5)
    return m


@pytest.mark.parametrize(
    "name", ["moco", "moco_symmetric", "memory_bank", "end_to_end", "moco_v3", "simclr"]
)
def test_chance_loss_is_the_loss_of_an_encoder_that_tells_nothing_apart(name):
    model = _constant_method(name)
    x = torch.randn(N, 1, 4, 4)
    out = model(x, x.clone(), index=torch.arange(N))
    assert out.loss.item() == pytest.approx(model.chance_loss(N), rel=1e-5)
    sims = model.diagnostic_logits(out)
    assert sims.shape[0] == N and torch.allclose(sims, torch.ones_like(sims))
    assert dg.pretext_topk(sims, 1).item() == 0.0  # ties count against the positive


def _views() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(N, 1, 4, 4, generator=g), torch.randn(N, 1, 4, 4, generator=g)


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("name", ["moco", "end_to_end", "moco_v3"])
def test_diagnostic_logits_give_the_losss_own_pretext_top1(name):
    enc = Linear()
    if name == "moco":
        model: ContrastiveMethod = MoCo(enc, DIM, 32, 0.99, 0.2, shuffle_keys=False)
    elif name == "end_to_end":
        model = EndToEnd(enc, 0.2, shuffle_keys=False)
    else:
        model = MoCoV3(enc, nn.Linear(DIM, DIM), 0.99, 0.2)
    x_q, x_k = _views()
    out = model(x_q, x_k)
    sims = model.diagnostic_logits(out)
    assert sims.shape == (N, 1 + (32 if name == "moco" else N - 1))
    expected = out.correct[:N].float().mean().item()
    assert dg.pretext_topk(sims, 1).item() == pytest.approx(expected)
    assert dg.pretext_topk(sims, sims.shape[1]).item() == 1.0
    q, k = out.q.detach(), out.k[:N]
    assert torch.allclose(sims[:, 0], (q * k).sum(1))  # the positive at column 0


def test_queue_age_and_fill_match_a_queue_whose_keys_carry_their_step():
    k, per_step = 20, 6  # K not a multiple of the batch: the write wraps
    queue, ptr = torch.full((1, k), -1.0), torch.zeros(1, dtype=torch.long)  # -1: initial
    for t in range(1, 12):
        enqueue_(queue, ptr, torch.full((per_step, 1), float(t)))
        written = queue[0] >= 0
        oldest = t - queue[0][written].min().item() if written.all() else t
        assert dg.queue_age(t, k, per_step) == oldest
        assert dg.queue_fill(t, k, per_step) == pytest.approx(written.float().mean().item())


def test_measure_step_on_a_moco_step_reads_its_tensors():
    torch.manual_seed(0)
    model = MoCo(Linear(), DIM, 32, 0.99, 0.2, shuffle_keys=False)
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.1)
    x_q, x_k = _views()
    out = model(x_q, x_k)
    opt.zero_grad()
    out.loss.backward()
    trainable = list(model.encoder_q.parameters())
    measured = health.measure_step(model, out, trainable)
    assert all(t.dim() == 0 for k, t in measured.items() if k != "_q")
    v = health.read(measured)
    grads = torch.cat([p.grad.flatten() for p in trainable])
    assert v["grad_norm"] == pytest.approx(grads.norm().item(), rel=1e-5)
    assert v["drift"] == 0.0  # no momentum update yet: the key encoder is a copy
    assert v["step_loss"] == out.loss.item()
    assert v["eff_rank_ratio"] == pytest.approx(dg.effective_rank(out.q).item() / N, rel=1e-6)
    assert v["top1"] == pytest.approx(out.correct.float().mean().item())


def test_state_values_of_a_bank_and_of_in_batch_methods():
    bank = MemoryBank(Linear(), DIM, 100, 24, 0.2)
    v = health.state_values(bank, steps=5, per_step=10, steps_per_epoch=10, images=100)
    assert v["bank_fill"] == 0.5
    assert v["bank_age"] == pytest.approx(0.5 * 2.5 + 0.5 * 5)
    v = health.state_values(bank, steps=30, per_step=10, steps_per_epoch=10, images=100)
    assert v == {"bank_age": 5.0, "bank_fill": 1.0}
    assert health.state_values(SimCLR(Linear(), 0.5), 3, 8, 10, 100) == {}


def _quiet() -> dict[str, float]:
    return {"grad_norm": 1.0, "step_loss": 4.0, "loss_chance": 7.0, "eff_rank": 30.0,
            "eff_rank_ratio": 0.5, "dim_std_ratio": 0.8}  # fmt: skip


def test_detectors_fire_once_each_with_evidence():
    h: dict = {"knn": {}}
    d = health.Detectors(h)
    assert d.at_start(1024, 5000) == []
    assert [w.detector for w in d.at_start(4096, 5000)] == ["queue_vs_data"]
    assert d.at_start(4096, 5000) == []  # once
    for _ in range(10):
        assert d.at_log(_quiet(), 2.0) == []
    fired = d.at_log(_quiet() | {"grad_norm": 50.0}, 2.0)
    assert [w.detector for w in fired] == ["divergence"]
    assert fired[0].evidence["grad_norm"] == 50.0 and fired[0].evidence["grad_norm_median"] == 1.0
    assert d.at_log(_quiet() | {"eff_rank_ratio": 0.01}, 0.5) == []  # not before epoch 1
    assert [w.detector for w in d.at_log(_quiet() | {"dim_std_ratio": 0.05}, 1.5)] == ["collapse"]
    assert d.at_epoch_end(1, 6.99, 7.0) == []  # too early to tell
    assert d.at_epoch_end(2, 6.0, 7.0) == []  # learning
    assert [w.detector for w in d.at_epoch_end(3, 6.99, 7.0)] == ["no_learning"]
    assert d.at_knn(5, 0.60, 0.58, 0.15) == []  # kNN stalls but the pretext is not solved
    assert d.at_knn(5, 0.70, 0.58, 0.97) == []  # solved and kNN learns: healthy
    assert [w.detector for w in d.at_knn(5, 0.60, 0.58, 0.97)] == ["bn_cheating"]
    assert sorted(h["warned"]) == sorted(
        ["queue_vs_data", "divergence", "collapse", "no_learning", "bn_cheating"]
    )
    assert d.at_log(_quiet() | {"step_loss": math.inf}, 3.0) == []  # each once
    # the memory is the loop state's history, saved in the checkpoint: a resumed run
    # (a new Detectors on the reloaded history) does not warn again
    again = health.Detectors(json.loads(json.dumps(h)))
    assert again.at_epoch_end(4, 6.99, 7.0) == [] and again.at_start(4096, 5000) == []


def test_a_non_finite_gradient_is_divergence_even_early():
    d = health.Detectors({})
    fired = d.at_log(_quiet() | {"grad_norm": math.nan}, 0.1)
    assert [w.detector for w in fired] == ["divergence"]


def test_diagnostics_change_no_weight_and_log_health(tiny_config):
    on = pretrain(tiny_config("run.name=on"))
    off = pretrain(tiny_config("run.name=off", "run.diagnostics=false"))
    a = torch.load(on.checkpoint, weights_only=True)
    b = torch.load(off.checkpoint, weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    kinds_on = [r["kind"] for r in read_metrics(on.run_dir)]
    kinds_off = [r["kind"] for r in read_metrics(off.run_dir)]
    assert "health" in kinds_on and "health" not in kinds_off
    rec = next(r for r in read_metrics(on.run_dir) if r["kind"] == "health")
    for name in ("logit_pos_mean", "logit_neg_max", "top1", "top5", "alignment", "uniformity",
                 "eff_rank", "dim_std_ratio", "drift", "queue_age", "queue_fill", "grad_norm",
                 "loss_ratio", "lr", "momentum"):  # fmt: skip
        assert math.isfinite(rec[name]), name
    assert rec["loss_chance"] == pytest.approx(math.log(128 + 1))
    knn = [r for r in read_metrics(on.run_dir) if r["kind"] == "knn"]
    assert all(0 < r["feat_eff_rank_ratio"] <= 1 for r in knn)


def test_momentum_zero_is_caught_live_as_collapse_then_no_learning(tmp_path):
    """The m = 0 ablation at a small scale (24 steps on 256 images): the queries collapse
    (dimension std x sqrt(C) 0.08 against 0.35-0.41 for the default's same run) and the
    loss goes back to its chance value (0.996). The default preset's quietness is checked
    on the measured full runs (:func:`test_the_detectors_on_the_measured_runs`): a run
    this short has hardly begun to learn (0.97-0.98 of chance), too near the threshold
    to say anything."""
    from moco.config import load_config

    from ..conftest import TINY_OVERRIDES, make_idx_dir

    data = make_idx_dir(tmp_path / "data", 256, 64)
    small = [*TINY_OVERRIDES, f"data.source={data}", f"run.out_dir={tmp_path}",
             "optim.batch_size=32", "optim.epochs=3", "optim.lr=0.24", "model.queue_size=64",
             "run.log_every=4", "augment.size=16", "eval.knn_every=0",
             "model.momentum=0"]  # fmt: skip
    run = pretrain(load_config("default", small)).run_dir
    warnings = [r for r in read_metrics(run) if r["kind"] == "warning"]
    assert [w["detector"] for w in warnings] == ["collapse", "no_learning"]
    assert warnings[1]["evidence"]["loss_ratio"] > health.NO_LEARNING_RATIO


MEASURED = {  # run (docs/run-health.md's table) -> the detectors that fire, in order
    "default": [],
    "m0b": ["collapse", "no_learning"],
    "noshuffle": ["bn_cheating"],
    "tau_tiny": ["collapse", "no_learning"],
    "lr_huge": ["divergence", "collapse"],
    "queue_big": ["queue_vs_data"],
}


@pytest.mark.parametrize("run", sorted(MEASURED))
def test_the_detectors_on_the_measured_runs(run):
    """The measured runs behind the thresholds (default preset on the bundled data with
    one change each; their health, train, knn and data records, trimmed to the values
    the detectors read): the default stays quiet, each failing run gets its warnings."""
    import gzip
    from pathlib import Path

    path = Path(__file__).with_name("health_runs.json.gz")
    records = json.loads(gzip.open(path, "rt").read())[run]
    assert [w.detector for _, w in health.replay(records)] == MEASURED[run]
