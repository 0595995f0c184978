import copy

import pytest
import torch
from torch import nn

from moco.core.moco import MoCo
from moco.core.momentum import momentum_update
from moco.encoders.resnet import build_encoder
from moco.engine.step import train_step


def _pair():
    q = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    k = copy.deepcopy(q)
    for p in k.parameters():
        p.data.normal_()
    k[1].running_mean.fill_(7.0)
    return q, k


@pytest.mark.parametrize("m", [0.0, 0.5, 0.9, 0.999, 1.0])
def test_exact_values(m):
    q, k = _pair()
    before = [p.clone() for p in k.parameters()]
    momentum_update(k, q, m)
    for pk, p0, pq in zip(k.parameters(), before, q.parameters(), strict=True):
        exact = m * p0.double() + (1 - m) * pq.double()  # float64 reference
        assert torch.allclose(pk.double(), exact, rtol=3e-7, atol=1e-9)  # a float32 ulp or so
    if m == 0.0:
        assert all(torch.equal(a, b) for a, b in zip(k.parameters(), q.parameters(), strict=True))
    if m == 1.0:
        assert all(torch.equal(a, b) for a, b in zip(k.parameters(), before, strict=True))
    assert torch.all(k[1].running_mean == 7.0)  # BN buffers are not averaged


def test_rejects_momentum_outside_unit_interval():
    q, k = _pair()
    with pytest.raises(ValueError, match="momentum"):
        momentum_update(k, q, 1.5)


def test_key_encoder_starts_as_copy_and_never_gets_gradients():
    model = MoCo(build_encoder("resnet18", 8, cifar_stem=True, in_chans=1, width=0.125), 8, 32)
    for pk, pq in zip(model.encoder_k.parameters(), model.encoder_q.parameters(), strict=True):
        assert torch.equal(pk, pq) and pk.data_ptr() != pq.data_ptr()
        assert not pk.requires_grad
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.1)
    x = torch.randn(8, 1, 16, 16)
    train_step(model, opt, x, x + 0.1)
    assert all(p.grad is None for p in model.encoder_k.parameters())
    assert all(p.grad is not None for p in model.encoder_q.parameters())
