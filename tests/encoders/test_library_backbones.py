"""torchvision / timm classification models as encoders (model.arch=LIBRARY:NAME): a
training step, split BN on every BN layer, the note for BN-free networks, greyscale
stems, small images, strict round trips into the library's own constructor."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

timm = pytest.importorskip("timm")

from moco.config import load_config  # noqa: E402
from moco.encoders.base import as_encoder  # noqa: E402
from moco.encoders.library import LibraryEncoder, classifier_name  # noqa: E402
from moco.engine.build import build_model  # noqa: E402
from moco.engine.optim import build_optimizer  # noqa: E402
from moco.engine.step import train_step  # noqa: E402
from moco.errors import ConfigError, ExportError  # noqa: E402
from moco.export.timm import to_timm  # noqa: E402
from moco.export.torchvision import to_torchvision  # noqa: E402
from moco.layers.split_bn import GroupedBatchNorm, convert_to_split_bn  # noqa: E402

SMALL = ["model.queue_size=64", "optim.batch_size=8", "model.bn_splits=2", "augment.size=32"]


def _model(arch: str, *extra: str, in_chans: int = 1):
    cfg = load_config("default", [f"model.arch={arch}", *SMALL, *extra])
    return build_model(cfg, in_chans)


def _batch_norms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _randomise_bn_stats(module: nn.Module) -> None:
    """Running statistics other than 0 / 1, so that eval-mode outputs are not ~0."""
    g = torch.Generator().manual_seed(1)
    for bn in _batch_norms(module):
        if bn.running_mean is not None:
            bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g) * 0.1)
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)


@pytest.mark.parametrize(
    "arch, in_chans, has_bn",
    [
        ("torchvision:mobilenet_v3_small", 1, True),  # BN, depthwise convs, greyscale stem
        ("timm:convnext_atto", 3, False),  # LayerNorm only
        ("timm:resnet10t", 1, True),  # timm's ResNet, greyscale through in_chans=
    ],
)
def test_a_training_step_runs_and_every_bn_layer_is_split(arch, in_chans, has_bn, capsys):
    model = _model(arch, in_chans=in_chans)
    enc = model.encoder_q
    as_encoder(enc)
    assert isinstance(enc, LibraryEncoder)
    x = torch.randn(8, in_chans, 32, 32)
    assert enc.forward_features(x).shape == (8, enc.feature_dim)
    for name in ("encoder_q", "encoder_k"):
        bns = _batch_norms(getattr(model, name).backbone)
        assert bool(bns) == has_bn
        assert all(isinstance(bn, GroupedBatchNorm) and bn.num_splits == 2 for bn in bns), name
    note = capsys.readouterr().out
    assert ("shuffling BN is not needed" in note) == (not has_bn)
    opt = build_optimizer(model.named_parameters(), "sgd", 0.1, 0.9, 1e-4)
    before = {k: v.clone() for k, v in model.encoder_q.state_dict().items()}
    out = train_step(model, opt, x, x.flip(3))
    assert torch.isfinite(out.loss)
    trainable = [(n, p) for n, p in model.encoder_q.named_parameters() if p.requires_grad]
    assert all(p.grad is not None for _, p in trainable)
    after = model.encoder_q.state_dict()  # the step moved the weights, names kept
    assert after.keys() == before.keys()
    assert any(not torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize(
    "arch",
    [
        "torchvision:mobilenet_v3_small",
        "timm:resnet10t",
        "timm:mobilenetv3_small_050",  # timm's fused BatchNormAct2d layers
    ],
)
def test_split_bn_equals_bn_of_each_group_apart(arch):
    enc = _model(arch).encoder_q.train()
    ref = copy.deepcopy(enc)
    assert convert_to_split_bn(ref, 1) == len(_batch_norms(ref)) > 0  # plain BN now
    first, second = ref, copy.deepcopy(ref)  # one plain-BN model per group, same start
    x = torch.randn(8, 1, 32, 32)
    out = enc(x)
    expected = torch.cat([first(x[:4]), second(x[4:])])
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    # the running statistics are the mean of the two groups' updates
    for bn, a, b in zip(*map(_batch_norms, (enc, first, second)), strict=True):
        mean = (a.running_mean + b.running_mean) / 2
        torch.testing.assert_close(bn.running_mean, mean, atol=1e-5, rtol=1e-4)


def _checkpoint_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith("encoder_q.")}


@pytest.mark.parametrize("fc", ["init", "drop"])
def test_torchvision_round_trip_is_strict_and_gives_the_same_features(fc):
    name = "mobilenet_v3_small"
    model = _model(f"torchvision:{name}", in_chans=3)
    enc = model.encoder_q.eval()
    _randomise_bn_stats(enc)
    state = to_torchvision(_checkpoint_state(model), f"torchvision:{name}", 10, fc, 32)
    ref = torchvision.models.get_model(name, num_classes=10)
    head = classifier_name(ref)
    if fc == "init":
        ref.load_state_dict(state, strict=True)
    else:
        missing = set(ref.load_state_dict(state, strict=False).missing_keys)
        assert missing == {f"{head}.weight", f"{head}.bias"}
    setattr(ref.get_submodule(head.rpartition(".")[0]), head.rpartition(".")[2], nn.Identity())
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(ref.eval()(x), enc.forward_features(x))


def test_torchvision_cannot_hold_a_greyscale_stem():
    model = _model("torchvision:mobilenet_v3_small", in_chans=1)
    with pytest.raises(ExportError, match="input channels"):
        to_torchvision(_checkpoint_state(model), "torchvision:mobilenet_v3_small", 10)
    with pytest.raises(ExportError, match="not a torchvision model"):
        to_torchvision(_checkpoint_state(model), "timm:resnet10t", 10)


@pytest.mark.parametrize("arch, in_chans", [("timm:convnext_atto", 3), ("timm:resnet10t", 1)])
def test_timm_round_trip_is_strict_and_gives_the_same_features(arch, in_chans):
    model = _model(arch, in_chans=in_chans)
    enc = model.encoder_q.eval()
    _randomise_bn_stats(enc)
    name = arch.partition(":")[2]
    state = to_timm(_checkpoint_state(model), arch, 0, in_chans, 32)
    ref = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
    ref.load_state_dict(state, strict=True)
    x = torch.randn(3, in_chans, 32, 32)
    torch.testing.assert_close(ref.eval()(x), enc.forward_features(x))
    with_head = to_timm(_checkpoint_state(model), arch, 7, in_chans, 32)
    timm.create_model(name, num_classes=7, in_chans=in_chans).load_state_dict(with_head)


def test_a_timm_vit_takes_small_images_through_its_img_size_option():
    enc = LibraryEncoder("timm:vit_tiny_patch16_224", 16, in_chans=1, img_size=32)
    assert enc.feature_dim == 192
    assert enc(torch.randn(2, 1, 32, 32)).shape == (2, 16)


def test_errors_name_the_model_and_say_how_to_list_names():
    with pytest.raises(ConfigError, match=r"mobilenet_v3_small.*list_models"):
        _model("torchvision:mobilenet_v3_smal")
    with pytest.raises(ConfigError, match=r"convnext_atto.*list_models"):
        _model("timm:convnext_attoo")
    with pytest.raises(ConfigError, match=r"timm:convnext_atto cannot take 1-channel 28x28"):
        _model("timm:convnext_atto", "augment.size=28")
    with pytest.raises(ConfigError, match=r"model.arch.*torchvision:NAME"):
        load_config("default", ["model.arch=keras:foo"])
    with pytest.raises(ConfigError, match="model.width scales our ResNets only"):
        load_config("default", ["model.arch=timm:resnet10t", "model.width=0.5"])
