"""The linear protocol: only the classifier trains, the backbone is unchanged, selection on val."""

import dataclasses

import pytest
import torch

from moco.data.sources import load_source
from moco.encoders.resnet import build_encoder
from moco.eval.linear import PROTOCOLS, train_linear_probe


@pytest.fixture
def small_data(tiny_idx):
    return load_source(str(tiny_idx))


@pytest.mark.parametrize("augment", [False, True])
def test_probe_learns_and_leaves_the_backbone_untouched(small_data, augment):
    enc = build_encoder("resnet18", 16, cifar_stem=True, in_chans=1, width=0.125, bn_splits=2)
    enc.train()  # the probe must switch it to eval mode itself
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    proto = dataclasses.replace(PROTOCOLS["paper"], epochs=15, milestones=(12,), augment=augment,
                                cache_features=not augment, crop_min_scale=0.5, batch_size=32,
                                lr=0.3)  # fmt: skip
    result = train_linear_probe(enc, small_data, proto, 28, (0.28,), (0.35,))
    assert not enc.training
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k  # BN running stats included: eval mode
    assert 1 <= result.best_epoch <= 15 and len(result.curve) == 15
    assert result.test_top1 > 0.3  # 10 classes: chance is 0.1
    assert result.test_top5 >= result.test_top1
    assert result.val_top1 == max(c["val_top1"] for c in result.curve)


def test_cached_features_equal_running_the_backbone_every_step(small_data):
    enc = build_encoder("resnet18", 16, cifar_stem=True, in_chans=1, width=0.125)
    proto = dataclasses.replace(
        PROTOCOLS["small"], epochs=3, milestones=(2,), batch_size=64, lr=1.0
    )
    cached = train_linear_probe(enc, small_data, proto, 28, (0.28,), (0.35,))
    direct = dataclasses.replace(proto, cache_features=False)
    live = train_linear_probe(enc, small_data, direct, 28, (0.28,), (0.35,))
    for a, b in zip(cached.curve, live.curve, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["val_top1"] == pytest.approx(b["val_top1"], abs=1e-6)
    assert cached.test_top1 == pytest.approx(live.test_top1, abs=1e-6)


def test_augmented_features_cannot_be_cached(small_data):
    enc = build_encoder("resnet18", 16, cifar_stem=True, in_chans=1, width=0.125)
    proto = dataclasses.replace(PROTOCOLS["paper"], cache_features=True)
    with pytest.raises(ValueError, match="cache_features needs augment=False"):
        train_linear_probe(enc, small_data, proto, 28, (0.28,), (0.35,))


def test_a_vit_is_probed_through_the_encoder_interface(small_data):
    pytest.importorskip("timm")
    from moco.encoders.vit import build_vit

    enc = build_vit("vit_tiny", in_chans=1, img_size=28, patch_size=7)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    proto = dataclasses.replace(PROTOCOLS["small"], epochs=2, milestones=(1,), batch_size=64)
    result = train_linear_probe(enc, small_data, proto, 28, (0.28,), (0.35,))
    assert len(result.curve) == 2 and 0.0 <= result.test_top1 <= result.test_top5 <= 1.0
    # lr 30 on the raw ViT features hardly trains in 2 epochs (observed test top-1 0.20,
    # val 0.27 then 0.15): no margin over chance is certain, so check the selection is the
    # curve's first best epoch and the top-1 a whole number of the 64 test images
    val = [c["val_top1"] for c in result.curve]
    assert result.best_epoch == val.index(max(val)) + 1 and result.val_top1 == max(val)
    assert len(small_data.test_labels) == 64 and (result.test_top1 * 64).is_integer()
    assert all(torch.equal(v, before[k]) for k, v in enc.state_dict().items())
