"""LARS against a hand-computed reference; build_optimizer's groups and names."""

import io
import math

import pytest
import torch
from torch import nn

from moco.engine.optim import LARS, build_optimizer


def _reference_lars(w, grads, lr, momentum, wd, eta, exclude):
    """Plain-Python LARS on a list of floats, step by step (You et al. 2017)."""
    w, buf = list(w), [0.0] * len(w)
    for g in grads:
        d = list(g) if exclude else [gi + wd * wi for gi, wi in zip(g, w, strict=True)]
        if not exclude:
            wn = math.sqrt(sum(x * x for x in w))
            dn = math.sqrt(sum(x * x for x in d))
            r = eta * wn / dn if wn > 0 and dn > 0 else 1.0
            d = [r * x for x in d]
        buf = [momentum * b + x for b, x in zip(buf, d, strict=True)]
        w = [wi - lr * b for wi, b in zip(w, buf, strict=True)]
    return w


@pytest.mark.parametrize("exclude", [False, True])
def test_lars_two_steps_equal_a_hand_computed_reference(exclude):
    w0 = [3.0, -4.0]  # ||w|| = 5
    grads = [[0.5, 1.0], [-2.0, 0.25]]
    lr, m, wd, eta = 0.1, 0.9, 0.01, 0.02
    p = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = LARS([{"params": [p], "lars_exclude": exclude}], lr=lr, momentum=m, weight_decay=wd,
               eta=eta)  # fmt: skip
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    want = _reference_lars(w0, grads, lr, m, wd, eta, exclude)
    torch.testing.assert_close(p.detach(), torch.tensor(want, dtype=torch.float64))


def test_lars_first_step_by_hand():
    # w = (3, -4), g = (0, 1), wd 0: d = g, ratio = eta * 5 / 1, step = lr * ratio * g
    p = nn.Parameter(torch.tensor([3.0, -4.0], dtype=torch.float64))
    p.grad = torch.tensor([0.0, 1.0], dtype=torch.float64)
    LARS([p], lr=0.5, momentum=0.9, eta=0.1).step()
    torch.testing.assert_close(
        p.detach(), torch.tensor([3.0, -4.0 - 0.5 * 0.5], dtype=torch.float64)
    )


def test_excluded_group_is_plain_momentum_sgd_without_weight_decay():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(5))
    b = nn.Parameter(a.detach().clone())
    lars = LARS([{"params": [a], "lars_exclude": True, "weight_decay": 0.0}], lr=0.1, momentum=0.9)
    sgd = torch.optim.SGD([b], lr=0.1, momentum=0.9)
    for _ in range(3):
        g = torch.randn(5)
        a.grad, b.grad = g.clone(), g.clone()
        lars.step()
        sgd.step()
    torch.testing.assert_close(a.detach(), b.detach())


@pytest.mark.parametrize(("w", "g"), [([0.0, 0.0], [1.0, 2.0]), ([1.0, 2.0], [0.0, 0.0]),
                                      ([0.0, 0.0], [0.0, 0.0])])  # fmt: skip
def test_zero_weight_or_zero_gradient_stays_finite_with_ratio_one(w, g):
    p = nn.Parameter(torch.tensor(w))
    p.grad = torch.tensor(g)
    LARS([p], lr=0.1, momentum=0.9, weight_decay=0.0).step()
    assert torch.isfinite(p).all()
    # ratio 1 where a norm is zero: the update is the plain SGD step
    torch.testing.assert_close(p.detach(), torch.tensor(w) - 0.1 * torch.tensor(g))


def test_params_without_grad_are_skipped():
    p, q = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    opt = LARS([p, q], lr=0.1)
    opt.step()
    assert torch.equal(q.detach(), torch.ones(3)) and q not in opt.state


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_build_optimizer_lars_excludes_biases_and_norm_parameters():
    net = _Net()
    opt = build_optimizer(net.named_parameters(), "lars", lr=0.3, momentum=0.9, weight_decay=1e-6)
    assert isinstance(opt, LARS)
    names = {id(p): n for n, p in net.named_parameters()}
    adapted, excluded = opt.param_groups
    assert {names[id(p)] for p in adapted["params"]} == {"conv.weight", "fc.weight"}
    assert {names[id(p)] for p in excluded["params"]} == {"conv.bias", "bn.weight", "bn.bias",
                                                          "fc.bias"}  # fmt: skip
    assert not adapted["lars_exclude"] and adapted["weight_decay"] == 1e-6
    assert excluded["lars_exclude"] and excluded["weight_decay"] == 0.0
    assert adapted["lr"] == excluded["lr"] == 0.3


def test_build_optimizer_sgd_decays_every_trainable_parameter():
    net = _Net()
    opt = build_optimizer(net.named_parameters(), "sgd", lr=0.03, momentum=0.9, weight_decay=1e-4)
    assert type(opt) is torch.optim.SGD and len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert group["weight_decay"] == 1e-4 and group["momentum"] == 0.9
    trainable = [p for n, p in net.named_parameters() if not n.startswith("frozen.")]
    assert [id(p) for p in group["params"]] == [id(p) for p in trainable]


def test_build_optimizer_accepts_the_config_enum_and_names_the_allowed_ones():
    from moco.config.schema import Optimizer

    net = _Net()
    assert isinstance(build_optimizer(net.named_parameters(), Optimizer.lars, 0.1, 0.9, 0.0), LARS)
    with pytest.raises(ValueError, match="unknown optimizer 'adam'; allowed: sgd, lars, adamw"):
        build_optimizer(net.named_parameters(), "adam", 0.1, 0.9, 0.0)


def test_lars_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)

    def make():
        net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
        return net, build_optimizer(net.named_parameters(), "lars", 0.5, 0.9, 1e-4)

    a, opt_a = make()
    b, opt_b = make()
    x = torch.randn(8, 4)

    def step(net, opt):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()

    step(a, opt_a)
    step(a, opt_a)
    saved = io.BytesIO()  # through torch.save, as a checkpoint (no shared tensors)
    torch.save({"model": a.state_dict(), "optimizer": opt_a.state_dict()}, saved)
    saved.seek(0)
    state = torch.load(saved)
    b.load_state_dict(state["model"])
    opt_b.load_state_dict(state["optimizer"])
    assert opt_b.param_groups[1]["lars_exclude"] and opt_b.param_groups[0]["eta"] == 0.001
    step(a, opt_a)
    step(b, opt_b)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_build_optimizer_adamw_decays_weights_only():
    net = _Net()
    opt = build_optimizer(net.named_parameters(), "adamw", lr=1.5e-4, momentum=0.9,
                          weight_decay=0.1)  # fmt: skip
    assert type(opt) is torch.optim.AdamW
    names = {id(p): n for n, p in net.named_parameters()}
    decayed, excluded = opt.param_groups
    assert {names[id(p)] for p in decayed["params"]} == {"conv.weight", "fc.weight"}
    assert {names[id(p)] for p in excluded["params"]} == {"conv.bias", "bn.weight", "bn.bias",
                                                          "fc.bias"}  # fmt: skip
    assert decayed["weight_decay"] == 0.1 and excluded["weight_decay"] == 0.0
    assert decayed["lr"] == excluded["lr"] == 1.5e-4
    assert "lars_exclude" not in decayed and "lars_exclude" not in excluded


def test_adamw_first_step_by_hand():
    # Adam's first step is lr * g / (|g| + eps) ~ lr * sign(g); AdamW first shrinks the
    # decayed weight by (1 - lr * wd), the excluded bias not at all
    lr, wd = 0.1, 0.5
    w = nn.Parameter(torch.tensor([[1.0, -2.0]], dtype=torch.float64))
    b = nn.Parameter(torch.tensor([3.0, -4.0], dtype=torch.float64))
    opt = build_optimizer([("w", w), ("b", b)], "adamw", lr, 0.9, wd)
    w.grad = torch.tensor([[0.5, -3.0]], dtype=torch.float64)
    b.grad = torch.tensor([-0.25, 2.0], dtype=torch.float64)
    opt.step()
    want_w = torch.tensor([[1.0, -2.0]], dtype=torch.float64) * (1 - lr * wd) - lr * torch.tensor(
        [[1.0, -1.0]], dtype=torch.float64
    )
    want_b = torch.tensor([3.0 + lr, -4.0 - lr], dtype=torch.float64)
    torch.testing.assert_close(w.detach(), want_w, rtol=0, atol=1e-6)
    torch.testing.assert_close(b.detach(), want_b, rtol=0, atol=1e-6)


def test_adamw_excluded_group_equals_adam_without_weight_decay():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(5))
    c = nn.Parameter(a.detach().clone())
    adamw = build_optimizer([("bias", a)], "adamw", 0.01, 0.9, 0.1)
    adam = torch.optim.Adam([c], lr=0.01)
    for _ in range(3):
        g = torch.randn(5)
        a.grad, c.grad = g.clone(), g.clone()
        adamw.step()
        adam.step()
    torch.testing.assert_close(a.detach(), c.detach())


def test_build_optimizer_adamw_from_the_config_enum_skips_frozen_parameters():
    from moco.config.schema import Optimizer

    net = _Net()
    opt = build_optimizer(net.named_parameters(), Optimizer.adamw, 1e-3, 0.9, 0.05)
    assert isinstance(opt, torch.optim.AdamW)
    kept = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not kept & {id(p) for p in net.frozen.parameters()}
    assert len(kept) == 6
