"""interleave_groups: the same split BN through views, reordering the batch once."""

import copy

import pytest
import torch
import torchvision
from torch import nn

from moco.encoders.resnet import build_resnet
from moco.layers import build_mlp, convert_to_split_bn, interleave_groups
from moco.layers.split_bn import SplitBatchNorm2d, deinterleave, interleave, stop_interleaving


def test_interleave_puts_row_i_of_chunk_j_at_i_g_plus_j_and_back():
    x = torch.arange(12).view(12, 1)
    y = interleave(x, 3)  # chunks [0..3], [4..7], [8..11]
    assert y.flatten().tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    assert torch.equal(deinterleave(y, 3), x)


@pytest.mark.parametrize("groups", [2, 4])
def test_a_hooked_resnet_equals_the_copying_one_outputs_grads_and_running_stats(groups):
    torch.manual_seed(0)
    plain = build_resnet("resnet18", 16, cifar_stem=True, bn_splits=groups).double()
    hooked = copy.deepcopy(plain)
    assert interleave_groups(hooked) == 20
    x = torch.randn(8, 3, 16, 16, dtype=torch.float64)
    out_p, out_h = plain(x), hooked(x)
    torch.testing.assert_close(out_h, out_p, rtol=1e-12, atol=1e-12)
    out_p.square().sum().backward()
    out_h.square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), hooked.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-12, msg=name)
    for (name, a), b in zip(plain.named_buffers(), hooked.buffers(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=name)


def test_each_chunk_is_normalised_alone_not_the_strided_rows():
    """The groups stay the input's contiguous chunks: a chunk's output does not depend
    on the other chunk's samples."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), SplitBatchNorm2d(4, num_splits=2))
    interleave_groups(net)
    x = torch.randn(8, 3, 2, 2)
    y = x.clone()
    y[4:] = torch.randn(4, 3, 2, 2) * 5 + 3  # change chunk 1 only
    assert torch.equal(net(x)[:4], net(y)[:4])
    assert not torch.allclose(net(x)[4:], net(y)[4:])


def test_state_dict_is_unchanged_and_a_deep_copy_keeps_working():
    net = build_resnet("resnet18", 10, bn_splits=4)
    keys = list(net.state_dict())
    interleave_groups(net)
    assert list(net.state_dict()) == keys
    torchvision.models.resnet18(num_classes=10).load_state_dict(net.state_dict(), strict=True)
    twin = copy.deepcopy(net)  # the momentum encoder is made this way
    x = torch.randn(8, 3, 32, 32)
    torch.testing.assert_close(twin(x), net(x))
    for m in twin.modules():  # the copy's hooks read the copy's layers
        if isinstance(m, SplitBatchNorm2d):
            m.num_splits = 1
    twin(torch.randn(5, 3, 32, 32))  # one group: any batch size, no reordering


def test_eval_mode_and_indivisible_batches():
    net = build_mlp(6, 8, 4, 2, bn_splits=4)
    interleave_groups(net)
    with pytest.raises(ValueError, match="not divisible into 4 BN groups"):
        net(torch.randn(6, 6))
    net.eval()
    assert net(torch.randn(6, 6)).shape == (6, 4)


def test_applying_twice_inside_one_module_is_refused():
    net = build_mlp(6, 8, 4, 2, bn_splits=2)
    interleave_groups(net)
    with pytest.raises(ValueError, match="already applied"):
        interleave_groups(nn.Sequential(net))
    assert interleave_groups(nn.Linear(3, 3)) == 0


def test_converted_library_model_is_interleaved_exactly():
    torch.manual_seed(2)
    net = torchvision.models.mobilenet_v3_small(num_classes=8, dropout=0.0).double()
    assert convert_to_split_bn(net, 2) > 0
    hooked = copy.deepcopy(net)
    interleave_groups(hooked)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(hooked(x), net(x), rtol=1e-12, atol=1e-12)


def test_stop_interleaving_returns_to_contiguous_chunks_with_the_same_output():
    torch.manual_seed(3)
    net = build_resnet("resnet18", 16, cifar_stem=True, bn_splits=4).double()
    ref = copy.deepcopy(net)
    interleave_groups(net)
    twin = copy.deepcopy(net)  # as the key encoder is made
    assert stop_interleaving(nn.ModuleDict({"a": net, "b": twin})) == 2
    assert stop_interleaving(net) == 0  # once
    assert not any(getattr(m, "interleaved", False) for m in net.modules())
    x = torch.randn(8, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(net(x), ref(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(twin(x), net(x), rtol=1e-12, atol=1e-12)
