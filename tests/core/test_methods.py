"""The methods beside MoCo (issue 6) against independent recomputations.

Each method runs both views through one call with twice the BN groups of one view; the
references run each view through its own call on a copy with half the groups (what the
official code of each method does), and compute the losses with Python loops.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from moco.core.end_to_end import EndToEnd
from moco.core.memory_bank import MemoryBank
from moco.core.method import ContrastiveMethod
from moco.core.moco import MoCo
from moco.core.moco_v3 import MoCoV3
from moco.core.simclr import SimCLR
from moco.encoders.resnet import build_encoder
from moco.engine.step import train_step
from moco.layers.heads import build_head, build_mlp
from moco.layers.split_bn import SplitBatchNorm1d, SplitBatchNorm2d

N, DIM = 8, 16
TOL = {"rtol": 1e-9, "atol": 1e-12}  # float64 throughout the equivalence tests


def _encoder(bn_splits: int = 1) -> nn.Module:
    return build_encoder(
        "resnet18", DIM, mlp=True, cifar_stem=True, in_chans=1, width=0.125, bn_splits=bn_splits
    )


def _v3_parts(bn_splits: int = 1) -> tuple[nn.Module, nn.Module]:
    enc = _encoder(bn_splits)
    enc.fc = build_mlp(enc.feature_dim, 32, DIM, 2, last_bn=True, bn_splits=bn_splits)
    return enc, build_mlp(DIM, 32, DIM, 2, last_bn=False, bn_splits=bn_splits)


def _views(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    shape = (N, 1, 16, 16)
    return torch.randn(shape, generator=g, dtype=dtype), torch.randn(
        shape, generator=g, dtype=dtype
    )


def _one_view_copy(module: nn.Module) -> nn.Module:
    """A copy with half the BN groups: what one view sees in a call of its own."""
    twin = copy.deepcopy(module)
    for m in twin.modules():
        if isinstance(m, SplitBatchNorm2d | SplitBatchNorm1d):
            assert m.num_splits % 2 == 0
            m.num_splits //= 2
    return twin


def _ce_loop(q: torch.Tensor, keys: torch.Tensor, targets: list[int], tau: float) -> torch.Tensor:
    """mean_i -log softmax(q_i . keys_j / tau)[targets[i]], one query at a time."""
    losses = []
    for i in range(q.shape[0]):
        logits = torch.stack([q[i] @ keys[j] for j in range(keys.shape[0])]) / tau
        losses.append(torch.logsumexp(logits, 0) - logits[targets[i]])
    return torch.stack(losses).mean()


def _grads(module: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters() if p.requires_grad]


def _assert_same_grads(a: nn.Module, b: nn.Module) -> None:
    for ga, gb in zip(_grads(a), _grads(b), strict=True):
        torch.testing.assert_close(ga, gb, **TOL)


# ---------------------------------------------------------------------- end-to-end


def test_end_to_end_with_shuffled_keys_equals_two_calls_and_a_loop_reference():
    tau = 0.2
    model = EndToEnd(_encoder(bn_splits=4), tau).double()  # 2 BN groups per view
    twin = _one_view_copy(model.encoder_q)
    x_q, x_k = _views()
    out = model(x_q, x_k, generator=torch.Generator().manual_seed(3))
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))

    q = F.normalize(twin(x_q), dim=1)
    k = F.normalize(twin(x_k[perm]), dim=1)[torch.argsort(perm)]  # keys with gradient
    ref = _ce_loop(q, k, list(range(N)), tau)
    torch.testing.assert_close(out.loss, ref, **TOL)
    torch.testing.assert_close(out.q, q, **TOL)
    torch.testing.assert_close(out.k, k.detach(), **TOL)
    assert not out.k.requires_grad and out.correct.shape == (N,)
    out.loss.backward()
    ref.backward()  # the keys' gradient flows into the encoder as well as the queries'
    _assert_same_grads(model.encoder_q, twin)


def test_end_to_end_shuffle_changes_nothing_without_a_bn_group_effect():
    # one BN group per view: a permutation inside the key view leaves its statistics as
    # they are, so shuffled and unshuffled keys give the same loss and gradients
    shuffled = EndToEnd(_encoder(bn_splits=2), 0.3).double()
    plain = copy.deepcopy(shuffled)
    plain.shuffle_keys = False
    x_q, x_k = _views()
    a = shuffled(x_q, x_k, generator=torch.Generator().manual_seed(5))
    b = plain(x_q, x_k)
    torch.testing.assert_close(a.loss, b.loss, **TOL)
    torch.testing.assert_close(a.k, b.k, **TOL)
    assert torch.equal(a.correct, b.correct)
    a.loss.backward()
    b.loss.backward()
    _assert_same_grads(shuffled.encoder_q, plain.encoder_q)


# ------------------------------------------------------------------------- SimCLR


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_simclr_equals_two_calls_and_a_loop_nt_xent(tau):
    model = SimCLR(_encoder(bn_splits=2), tau).double()
    twin = _one_view_copy(model.encoder_q)
    x_q, x_k = _views()
    out = model(x_q, x_k)

    z = torch.cat([F.normalize(twin(x_q), dim=1), F.normalize(twin(x_k), dim=1)])  # (2N, C)
    losses = []
    for a in range(2 * N):  # each of the 2N views against the 2N - 1 others
        others = [b for b in range(2 * N) if b != a]
        logits = torch.stack([z[a] @ z[b] for b in others]) / tau
        twin_pos = others.index((a + N) % (2 * N))
        losses.append(torch.logsumexp(logits, 0) - logits[twin_pos])
    ref = torch.stack(losses).mean()
    torch.testing.assert_close(out.loss, ref, **TOL)
    torch.testing.assert_close(out.q, z[:N], **TOL)
    assert out.correct.shape == (2 * N,) and out.k.shape == (0, DIM)
    out.loss.backward()
    ref.backward()
    _assert_same_grads(model.encoder_q, twin)


# ------------------------------------------------------------------------ MoCo v3


def test_build_mlp_is_moco_v3s_official_mlp():
    proj = build_mlp(64, 128, 32, 2)
    assert [type(m) for m in proj] == [
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Linear,
        nn.BatchNorm1d,
    ]
    assert all(m.bias is None for m in proj if isinstance(m, nn.Linear))
    assert proj[1].affine and not proj[4].affine  # the last BN has no affine parameters
    assert (proj[0].in_features, proj[0].out_features, proj[3].out_features) == (64, 128, 32)
    pred = build_mlp(32, 128, 32, 2, last_bn=False)
    assert isinstance(pred[-1], nn.Linear)
    assert len(build_mlp(8, 16, 4, 3)) == 8 and len(build_mlp(8, 16, 4, 1, last_bn=False)) == 1
    split = build_mlp(64, 128, 32, 2, bn_splits=4)
    assert isinstance(split[1], SplitBatchNorm1d) and split[1].num_splits == 4
    assert split.state_dict().keys() == proj.state_dict().keys()  # same checkpoint keys


def test_v2_head_hidden_width_defaults_to_the_input_width():
    head = build_head(64, 16, mlp=True)
    assert [tuple(m.weight.shape) for m in head if isinstance(m, nn.Linear)] == [(64, 64), (16, 64)]
    head = build_head(64, 16, mlp=True, hidden_dim=32)
    assert [tuple(m.weight.shape) for m in head if isinstance(m, nn.Linear)] == [(32, 64), (16, 32)]


def test_split_batchnorm1d_normalises_each_group_as_a_call_of_its_own():
    bn = SplitBatchNorm1d(5, num_splits=2).double()
    plain = nn.BatchNorm1d(5).double()
    with torch.no_grad():
        bn.weight.uniform_()
        bn.bias.uniform_()
    plain.load_state_dict(bn.state_dict())
    x = torch.randn(8, 5, dtype=torch.float64)
    y = bn(x)
    torch.testing.assert_close(y[:4], plain(x[:4]), **TOL)
    torch.testing.assert_close(y[4:], plain(x[4:]), **TOL)
    # running stats: the mean over groups of each group's update
    ref = nn.BatchNorm1d(5).double()
    mean = torch.stack([x[:4].mean(0), x[4:].mean(0)]).mean(0)
    torch.testing.assert_close(bn.running_mean, 0.1 * mean, **TOL)
    bn.eval()
    ref.load_state_dict(bn.state_dict())
    ref.eval()
    torch.testing.assert_close(bn(x), ref(x), **TOL)


@pytest.mark.parametrize("tau", [1.0, 0.2])
def test_moco_v3_equals_two_calls_and_the_2tau_scaled_symmetric_loss(tau):
    enc, pred = _v3_parts(bn_splits=4)
    model = MoCoV3(enc, pred, momentum=0.99, temperature=tau).double()
    with torch.no_grad():  # a key encoder that differs from the query encoder
        for p in model.encoder_k.parameters():
            p.add_(0.05 * torch.randn_like(p))
    f_q, f_p, f_k = (_one_view_copy(m) for m in (model.encoder_q, model.predictor, model.encoder_k))
    x_q, x_k = _views()
    out = model(x_q, x_k)

    q1, q2 = (F.normalize(f_p(f_q(x)), dim=1) for x in (x_q, x_k))
    with torch.no_grad():
        k1, k2 = (F.normalize(f_k(x), dim=1) for x in (x_q, x_k))
    own = list(range(N))
    ctr = _ce_loop(q1, k2, own, tau) + _ce_loop(q2, k1, own, tau)
    ref = 2 * tau * ctr  # MoCo v3 Algorithm 1: ctr(q1, k2) + ctr(q2, k1), each x 2 tau
    torch.testing.assert_close(out.loss, ref, **TOL)
    torch.testing.assert_close(out.k, torch.cat([k2, k1]), **TOL)
    assert out.correct.shape == (2 * N,) and torch.isfinite(out.loss)
    out.loss.backward()
    ref.backward()
    _assert_same_grads(model.encoder_q, f_q)
    _assert_same_grads(model.predictor, f_p)


def test_moco_v3_at_identical_init_has_the_2tau_scale():
    x_q, x_k = _views(torch.float32)
    losses = {}
    for tau in (0.2, 1.0):
        torch.manual_seed(1)
        enc, pred = _v3_parts(bn_splits=2)
        model = MoCoV3(enc, pred, momentum=0.99, temperature=tau)
        for a, b in zip(model.encoder_k.parameters(), model.encoder_q.parameters(), strict=True):
            assert torch.equal(a, b) and not a.requires_grad
        out = model(x_q, x_k)
        assert torch.isfinite(out.loss)
        losses[tau] = out.loss.item() / (2 * tau)
        # each ctr is a cross-entropy over N keys: between 0 and about ln N for random
        # features (both views together: about 2 ln N)
        assert 0 < losses[tau] < 2 * math.log(N) + 2
    # the predictor has no momentum twin: the key encoder is backbone + projector only
    assert not any(k.startswith("encoder_k.") and "predictor" in k for k in model.state_dict())
    assert len(list(model.encoder_k.parameters())) == len(list(model.encoder_q.parameters()))
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {
        "encoder_q",
        "predictor",
    }


# --------------------------------------------------------------------- memory bank


def _bank(**kw: float) -> MemoryBank:
    args = {"dim": DIM, "num_images": 30, "num_negatives": 12, "temperature": 0.1}
    return MemoryBank(_encoder(bn_splits=2), **{**args, **kw}).double()  # type: ignore[arg-type]


def test_memory_bank_loss_uses_the_own_entry_and_sampled_negatives():
    model = _bank()
    x_q, _ = _views()
    index = torch.tensor([3, 0, 29, 7, 8, 15, 16, 21])
    bank0 = model.bank.clone()
    x_k = torch.full_like(x_q, float("nan"))  # never encoded: the positive is stored
    out = model(x_q, x_k, index=index, generator=torch.Generator().manual_seed(4))
    neg = torch.randint(30, (12,), generator=torch.Generator().manual_seed(4))

    q = F.normalize(model.encoder_q(x_q), dim=1)  # bn_splits=2: N in its 2 groups
    keys = torch.cat([bank0[index], bank0[neg]])  # row i: image i's own entry; then K
    losses = []
    for i in range(N):
        cand = [i] + list(range(N, N + 12))
        logits = torch.stack([q[i] @ keys[j] for j in cand]) / 0.1
        losses.append(torch.logsumexp(logits, 0) - logits[0])
    torch.testing.assert_close(out.loss, torch.stack(losses).mean(), **TOL)
    assert torch.equal(out.k, bank0[index])  # the positive is the image's own entry
    assert torch.equal(model.bank, bank0)  # forward changes no state
    assert model.queue_size == 12


def test_memory_bank_needs_the_indices():
    model = _bank()
    x_q, x_k = _views()
    with pytest.raises(ValueError, match="index"):
        model(x_q, x_k)
    out = model(x_q, x_k, index=torch.arange(N))
    with pytest.raises(ValueError, match="index"):
        model.after_step(out)
    with pytest.raises(ValueError, match="index must be"):
        model(x_q, x_k, index=torch.arange(N - 1))


@pytest.mark.parametrize("m", [0.5, 0.2])
def test_memory_bank_update_is_the_normalised_momentum_average_of_the_seen_rows(m):
    model = _bank(bank_momentum=m)
    bank0 = model.bank.clone()
    index = torch.tensor([5, 1, 20])
    q = F.normalize(torch.randn(3, DIM, dtype=torch.float64), dim=1)
    out = model(*_views(), index=torch.arange(N))._replace(q=q)
    model.after_step(out, index)
    for row in range(30):
        if row in index.tolist():
            i = index.tolist().index(row)
            v = m * bank0[row] + (1 - m) * q[i]
            torch.testing.assert_close(model.bank[row], v / v.norm(), **TOL)
        else:
            assert torch.equal(model.bank[row], bank0[row])  # untouched
    torch.testing.assert_close(model.bank.norm(dim=1), torch.ones(30, dtype=torch.float64))


def test_memory_bank_draws_negatives_uniformly_with_replacement():
    model = MemoryBank(nn.Identity(), dim=4, num_images=10, num_negatives=1000, temperature=0.1)
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([model.draw_negatives(g) for _ in range(20)])  # 20000 draws
    counts = torch.bincount(draws, minlength=10).double()
    chi2 = ((counts - 2000) ** 2 / 2000).sum().item()
    assert chi2 < 27.88  # chi-square with 9 degrees of freedom, p = 0.001
    first = model.draw_negatives(torch.Generator().manual_seed(0))
    assert len(first.unique()) < len(first)  # with replacement: 1000 draws of 10
    assert torch.equal(first, model.draw_negatives(torch.Generator().manual_seed(0)))


def test_memory_bank_is_a_unit_norm_buffer_in_the_state_dict():
    model = _bank()
    assert model.bank.shape == (30, DIM)
    torch.testing.assert_close(model.bank.norm(dim=1), torch.ones(30, dtype=torch.float64))
    state = model.state_dict()
    assert "bank" in state and not any(k.startswith("encoder_k") for k in state)
    other = _bank()
    assert not torch.equal(other.bank, model.bank)
    other.load_state_dict(state)
    assert torch.equal(other.bank, model.bank)


# ------------------------------------------------------------------ symmetric MoCo


def test_symmetric_moco_loss_is_both_directions_against_one_queue_and_enqueues_2n():
    tau = 0.2
    model = MoCo(
        _encoder(bn_splits=4), dim=DIM, queue_size=40, momentum=0.9, temperature=tau,
        symmetric=True,
    ).double()  # fmt: skip
    f_q, f_k = _one_view_copy(model.encoder_q), copy.deepcopy(model.encoder_k)
    queue0 = model.queue.clone()
    x_q, x_k = _views()
    gen = torch.Generator().manual_seed(9)
    out = model(x_q, x_k, generator=gen)

    g = torch.Generator().manual_seed(9)  # the key encoder shuffles x_k, then x_q
    p2, p1 = torch.randperm(N, generator=g), torch.randperm(N, generator=g)
    q1, q2 = F.normalize(f_q(x_q), dim=1), F.normalize(f_q(x_k), dim=1)
    with torch.no_grad():
        k2 = F.normalize(f_k(x_k[p2]), dim=1)[torch.argsort(p2)]
        k1 = F.normalize(f_k(x_q[p1]), dim=1)[torch.argsort(p1)]
    ref = 0
    for q, k in ((q1, k2), (q2, k1)):  # Eq. 1 against the same queue, by hand
        keys = torch.cat([k, queue0.t()])
        ref = ref + _ce_loop_with_positive(q, keys, tau)
    torch.testing.assert_close(out.loss, ref, **TOL)
    assert out.correct.shape == (2 * N,)
    model.after_step(out)
    assert model.queue_ptr.item() == 2 * N
    torch.testing.assert_close(model.queue[:, : 2 * N], torch.cat([k2, k1]).t(), **TOL)
    assert torch.equal(model.queue[:, 2 * N :], queue0[:, 2 * N :])


def _ce_loop_with_positive(q: torch.Tensor, keys: torch.Tensor, tau: float) -> torch.Tensor:
    """keys: (N + K, C), the N positives first, then the queue."""
    n = q.shape[0]
    losses = []
    for i in range(n):
        logits = torch.stack([q[i] @ keys[j] for j in [i, *range(n, keys.shape[0])]]) / tau
        losses.append(torch.logsumexp(logits, 0) - logits[0])
    return torch.stack(losses).mean()


# ------------------------------------------------------------- training through the engine


def _method(name: str) -> ContrastiveMethod:
    if name == "end_to_end":
        return EndToEnd(_encoder(bn_splits=4), 0.2)
    if name == "simclr":
        return SimCLR(_encoder(bn_splits=4), 0.5)
    if name == "memory_bank":
        return MemoryBank(_encoder(bn_splits=2), DIM, 40, 16, 0.1)
    if name == "moco_v3":
        enc, pred = _v3_parts(bn_splits=4)
        return MoCoV3(enc, pred, momentum=0.9, temperature=1.0)
    if name == "moco_symmetric":
        return MoCo(_encoder(bn_splits=4), DIM, 32, 0.9, 0.2, symmetric=True)
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name", ["end_to_end", "simclr", "memory_bank", "moco_v3", "moco_symmetric"]
)
def test_every_method_trains_through_train_step(name):
    model = _method(name)
    has_key_encoder = hasattr(model, "encoder_k")
    if has_key_encoder:
        with torch.no_grad():  # make the momentum update visible
            for p in model.encoder_k.parameters():
                p.add_(0.01 * torch.randn_like(p))
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert bool(frozen) == has_key_encoder
    opt = torch.optim.SGD(trainable, lr=0.05, momentum=0.9)
    x_q, x_k = _views(torch.float32)
    for step in range(3):
        index = torch.arange(N) + N * step
        k0 = [p.clone() for p in getattr(model, "encoder_k", nn.Identity()).parameters()]
        q0 = [p.clone() for p in model.encoder_q.parameters()]
        bank0 = model.bank.clone() if isinstance(model, MemoryBank) else None
        out = train_step(model, opt, x_q, x_k, index=index)
        assert torch.isfinite(out.loss) and out.q.shape == (N, DIM)
        for name_, p in model.named_parameters():
            if p.requires_grad:
                assert p.grad is not None, name_
                assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name_
            else:
                assert p.grad is None, name_
        if has_key_encoder:  # the key encoder moves only by the EMA of Eq. 2
            m = model.momentum
            for pk, k, q in zip(model.encoder_k.parameters(), k0, q0, strict=True):
                torch.testing.assert_close(pk, m * k + (1 - m) * q, rtol=1e-6, atol=1e-7)
        if bank0 is not None:
            changed = (model.bank != bank0).any(dim=1).nonzero().flatten()
            assert changed.tolist() == index.tolist()
