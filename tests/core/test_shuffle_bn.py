import copy

import pytest
import torch
import torchvision
from torch import nn

from moco.core.shuffle_bn import batch_shuffle, batch_unshuffle
from moco.encoders.resnet import build_resnet
from moco.layers.split_bn import SplitBatchNorm2d


def _bn_pair(groups, c=5):
    split = SplitBatchNorm2d(c, num_splits=groups, momentum=0.3)
    with torch.no_grad():
        split.weight.normal_()
        split.bias.normal_()
        split.running_mean.normal_()
        split.running_var.uniform_(0.5, 2.0)
    plain = nn.BatchNorm2d(c, momentum=0.3)
    plain.load_state_dict(split.state_dict())
    return split, plain


def test_one_group_is_batchnorm2d():
    split, plain = _bn_pair(1)
    x = torch.randn(8, 5, 4, 4) * 3 + 1
    assert torch.allclose(split(x), plain(x), atol=1e-6)
    for name, buf in plain.state_dict().items():
        assert torch.allclose(split.state_dict()[name].float(), buf.float(), atol=1e-6), name


@pytest.mark.parametrize("groups", [2, 4])
def test_groups_equal_separate_batchnorm_per_chunk(groups):
    split, plain = _bn_pair(groups)
    x = torch.randn(16, 5, 3, 3) * 2 - 1
    per_group = [copy.deepcopy(plain) for _ in range(groups)]
    expected = torch.cat([bn(c) for bn, c in zip(per_group, x.chunk(groups), strict=True)])
    assert torch.allclose(split(x), expected, atol=1e-5)
    mean = torch.stack([bn.running_mean for bn in per_group]).mean(0)
    var = torch.stack([bn.running_var for bn in per_group]).mean(0)
    assert torch.allclose(split.running_mean, mean, atol=1e-6)
    assert torch.allclose(split.running_var, var, atol=1e-6)
    assert split.num_batches_tracked.item() == 1


def test_eval_mode_is_plain_batchnorm():
    split, plain = _bn_pair(4)
    split.eval(), plain.eval()
    x = torch.randn(6, 5, 2, 2)  # 6 is not divisible by 4: eval does not split
    assert torch.allclose(split(x), plain(x), atol=1e-6)


def test_indivisible_batch_is_a_clear_error():
    split, _ = _bn_pair(4)
    with pytest.raises(ValueError, match="not divisible into 4 BN groups"):
        split(torch.randn(6, 5, 2, 2))


def test_split_bn_resnet_state_dict_loads_strictly_into_torchvision():
    ours = build_resnet("resnet18", bn_splits=8)
    assert any(isinstance(m, SplitBatchNorm2d) for m in ours.modules())
    tv = torchvision.models.resnet18()
    tv.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(tv.state_dict(), strict=True)


def test_shuffle_then_unshuffle_is_identity():
    x = torch.arange(10.0)[:, None].repeat(1, 3)
    g = torch.Generator().manual_seed(3)
    shuffled, inverse = batch_shuffle(x, g)
    assert not torch.equal(shuffled, x)
    assert torch.equal(batch_unshuffle(shuffled, inverse), x)


def test_split_batchnorm1d_equals_separate_calls():
    """Two groups of a (2N, C) batch = two calls of BatchNorm1d on each half, outputs and
    running stats (the mean of the two updates)."""
    from moco.layers.split_bn import SplitBatchNorm1d

    torch.manual_seed(0)
    x = torch.randn(12, 5, dtype=torch.float64) * 3 + 1
    split = SplitBatchNorm1d(5, num_splits=2).double()
    ref_a, ref_b = torch.nn.BatchNorm1d(5).double(), torch.nn.BatchNorm1d(5).double()
    out = split(x)
    torch.testing.assert_close(out, torch.cat([ref_a(x[:6]), ref_b(x[6:])]))
    torch.testing.assert_close(split.running_mean, (ref_a.running_mean + ref_b.running_mean) / 2)
    torch.testing.assert_close(split.running_var, (ref_a.running_var + ref_b.running_var) / 2)
    assert set(split.state_dict()) == set(ref_a.state_dict())
