import dataclasses

import pytest
import torch
from torch import nn

from moco.data.sources import load_source
from moco.encoders.resnet import build_encoder
from moco.eval.finetune import FinetuneProtocol, classifier_model, finetune
from moco.layers.split_bn import SplitBatchNorm2d


def _encoder():
    return build_encoder("resnet18", 16, mlp=True, cifar_stem=True, in_chans=1, width=0.125,
                         bn_splits=4)  # fmt: skip


def test_classifier_model_normalises_features_and_uses_global_bn():
    enc = _encoder()
    net = classifier_model(enc, 10, norm_features=True)
    assert isinstance(net.fc[0], nn.BatchNorm1d) and net.fc[1].out_features == 10
    assert all(m.num_splits == 1 for m in net.modules() if isinstance(m, SplitBatchNorm2d))
    assert all(m.num_splits == 4 for m in enc.modules() if isinstance(m, SplitBatchNorm2d))
    assert isinstance(classifier_model(enc, 3, norm_features=False).fc, nn.Linear)


def test_every_parameter_trains_and_the_source_encoder_is_untouched(tiny_idx):
    data = load_source(str(tiny_idx))
    enc = _encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    proto = dataclasses.replace(FinetuneProtocol(), epochs=6, batch_size=32, lr=0.2)
    result = finetune(enc, data, proto, 28, (0.28,), (0.35,))
    assert all(torch.equal(v, before[k]) for k, v in enc.state_dict().items())
    assert len(result.curve) == 6 and 1 <= result.best_epoch <= 6
    assert result.test_top1 > 0.3 and result.test_top5 >= result.test_top1  # chance: 0.1

    net = classifier_model(enc, 10, True)
    x = torch.randn(8, 1, 28, 28)
    torch.nn.functional.cross_entropy(net(x), torch.arange(8)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_a_vit_gets_a_head_of_its_feature_width():
    pytest.importorskip("timm")
    from moco.encoders.vit import build_vit

    vit = build_vit("vit_tiny", in_chans=1, img_size=28, patch_size=7)
    net = classifier_model(vit, 10, norm_features=True)
    assert net.fc[0].num_features == vit.feature_dim == 192 and net.fc[1].out_features == 10
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
