"""timm ViTs as MoCo encoders: shapes, equivalence with timm, MoCo v3's options, and a
training step of every method with a ViT."""

import sys

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")

from moco.config.schema import ConfigError, load_config  # noqa: E402
from moco.core.moco_v3 import MoCoV3  # noqa: E402
from moco.encoders.vit import VIT_ARCHS, build_vit, sincos_pos_embed_2d  # noqa: E402
from moco.engine.build import build_model  # noqa: E402
from moco.engine.optim import build_optimizer  # noqa: E402
from moco.engine.step import train_step  # noqa: E402


@pytest.mark.parametrize("in_chans", [1, 3])
def test_features_equal_timm_and_its_state_dict_loads_strictly(in_chans):
    net = build_vit("vit_tiny", in_chans=in_chans, img_size=32, patch_size=8, num_classes=10)
    ref = timm.create_model(
        VIT_ARCHS["vit_tiny"], num_classes=0, in_chans=in_chans, img_size=32, patch_size=8
    )
    state = {k.removeprefix("backbone."): v for k, v in net.state_dict().items()}
    fc = {k for k in state if k.startswith("fc.")}
    assert fc == {"fc.weight", "fc.bias"}
    ref.load_state_dict({k: v for k, v in state.items() if k not in fc}, strict=True)
    net.eval(), ref.eval()
    x = torch.randn(2, in_chans, 32, 32)
    feats = net.forward_features(x)
    assert net.feature_dim == 192 and feats.shape == (2, 192)
    torch.testing.assert_close(feats, ref(x))
    torch.testing.assert_close(net(x), net.fc(feats))
    assert net(x).shape == (2, 10)
    # another image size still runs (the position embedding is resampled)
    assert net.forward_features(torch.randn(2, in_chans, 16, 16)).shape == (2, 192)


def test_frozen_patch_embed_gets_no_gradient_and_the_rest_does():
    net = build_vit("vit_tiny", in_chans=3, img_size=32, patch_size=8, freeze_patch_embed=True)
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"backbone.patch_embed.proj.weight", "backbone.patch_embed.proj.bias"}
    net(torch.randn(2, 3, 32, 32)).square().sum().backward()
    for n, p in net.named_parameters():
        assert (p.grad is None) == (n in frozen), n
    names = {id(p) for g in build_optimizer(net.named_parameters(), "adamw", 1e-3, 0.9, 0.1)
             .param_groups for p in g["params"]}  # fmt: skip
    assert not names & {id(p) for p in net.backbone.patch_embed.parameters()}


def test_sincos_position_embedding_is_fixed_and_matches_the_formula():
    net = build_vit("vit_tiny", in_chans=3, img_size=32, patch_size=8, sincos_pos_embed=True)
    pe = net.backbone.pos_embed
    assert not pe.requires_grad and pe.shape == (1, 1 + 16, 192)
    torch.testing.assert_close(pe.detach(), sincos_pos_embed_2d(4, 4, 192))
    d = 192 // 4
    assert torch.equal(pe[0, 0], torch.zeros(192))  # the class token's entry
    # patch (h=0, w=0): sin 0 and cos 1 in each quarter
    torch.testing.assert_close(pe[0, 1, :d], torch.zeros(d))
    torch.testing.assert_close(pe[0, 1, d : 2 * d], torch.ones(d))
    # patch (h=1, w=2) is token 1 + 1 * 4 + 2; frequency 0 is 1: sin(w), cos(w), sin(h), cos(h)
    got = pe.detach()[0, 1 + 4 + 2, [0, d, 2 * d, 3 * d]]
    w, h = torch.tensor(2.0), torch.tensor(1.0)
    torch.testing.assert_close(got, torch.stack([w.sin(), w.cos(), h.sin(), h.cos()]))


def test_missing_timm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match="pip install timm"):
        build_vit("vit_tiny", in_chans=3, img_size=32)


_VIT = ["model.arch=vit_tiny", "model.width=1.0", "model.patch_size=7", "augment.size=28"]


def test_config_checks_patch_size_and_width():
    with pytest.raises(ConfigError, match="divisible by model.patch_size"):
        load_config("moco_v3_small", [*_VIT, "model.patch_size=8"])
    with pytest.raises(ConfigError, match="model.width must be 1"):
        load_config("moco_v3_small", [*_VIT[:1], *_VIT[2:]])  # its width is 0.25


def _assert_step_reaches_every_trainable_parameter(model):
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(not n.startswith("encoder_k.") for n, _ in trainable)
    opt = build_optimizer(model.named_parameters(), "adamw", 1e-3, 0.9, 0.1)
    x = torch.randn(4, 1, 28, 28)
    out = train_step(model, opt, x, x.flip(3), index=torch.arange(4))
    assert torch.isfinite(out.loss)
    missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    zero = [n for n, p in trainable if not p.grad.abs().sum() > 0]
    assert not zero, zero


def test_moco_v3_with_a_vit_takes_a_step_with_every_trainable_parameter_getting_a_gradient():
    cfg = load_config("moco_v3_small", [*_VIT, "model.freeze_patch_embed=true",
                                        "model.hidden_dim=64", "model.bn_splits=2"])  # fmt: skip
    model = build_model(cfg, in_chans=1)
    assert isinstance(model, MoCoV3)
    enc = model.encoder_q
    # official ViT heads: 3-layer projector, 2-layer predictor (Linear-BN-ReLU ... Linear[-BN])
    linears = [m for m in enc.fc if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(192, 64), (64, 64), (64, 128)]
    assert isinstance(enc.fc[-1], nn.BatchNorm1d) and not enc.fc[-1].affine
    assert isinstance(model.predictor[-1], nn.Linear) and len(model.predictor) == 4
    assert not enc.backbone.patch_embed.proj.weight.requires_grad
    before = enc.backbone.patch_embed.proj.weight.detach().clone()
    _assert_step_reaches_every_trainable_parameter(model)
    assert torch.equal(enc.backbone.patch_embed.proj.weight, before)


@pytest.mark.parametrize("method", ["moco", "end_to_end", "memory_bank", "simclr"])
def test_every_method_takes_a_step_with_a_vit(method):
    cfg = load_config("default", [*_VIT, f"model.method={method}", "model.queue_size=64",
                                  "model.mlp=true", "model.bn_splits=1"])  # fmt: skip
    model = build_model(cfg, in_chans=1, num_images=8)
    assert model.encoder_q.fc[0].in_features == 192
    _assert_step_reaches_every_trainable_parameter(model)
