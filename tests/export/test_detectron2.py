import re

import pytest
import torch

from moco.core.moco import MoCo
from moco.encoders.resnet import build_encoder
from moco.engine import checkpoint as ckpt_io
from moco.errors import ExportError
from moco.export.detectron2 import load_detectron2, rename, save_detectron2, to_detectron2


def test_rename_table():
    assert rename("conv1.weight") == "stem.conv1.weight"
    assert rename("bn1.running_mean") == "stem.conv1.norm.running_mean"
    assert rename("layer1.0.conv2.weight") == "res2.0.conv2.weight"
    assert rename("layer3.5.bn3.bias") == "res4.5.conv3.norm.bias"
    assert rename("layer4.0.downsample.0.weight") == "res5.0.shortcut.weight"
    assert rename("layer4.0.downsample.1.running_var") == "res5.0.shortcut.norm.running_var"


def test_resnet50_round_trip_through_the_pickle(tmp_path):
    model = MoCo(build_encoder("resnet50", 128, mlp=True), 128, 256)
    obj = to_detectron2(ckpt_io.to_official(model.state_dict()))
    assert obj["__author__"] == "MOCO" and obj["matching_heuristics"] is True
    backbone = {k: v for k, v in model.encoder_q.state_dict().items() if not k.startswith("fc")}
    assert len(obj["model"]) == len(backbone)
    save_detectron2(obj, tmp_path / "r50.pkl")
    loaded = load_detectron2(tmp_path / "r50.pkl")
    for key, value in backbone.items():
        assert torch.equal(torch.from_numpy(loaded[rename(key)]), value), key
    assert sum(k.startswith("res5.") for k in loaded) > 0 and "stem.conv1.weight" in loaded


def _resnet18_state():
    enc = build_encoder("resnet18", 32, mlp=True, cifar_stem=True, in_chans=1, width=0.25)
    return ckpt_io.to_official(MoCo(enc, 32, 64).state_dict())


def test_small_cifar_stem_encoder_exports():
    obj = to_detectron2(_resnet18_state())
    assert obj["model"]["stem.conv1.weight"].shape == (16, 1, 3, 3)
    assert obj["model"]["res5.1.conv2.weight"].shape == (128, 128, 3, 3)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("layer2.0.conv1.weight", torch.zeros(1), "layer2.0.conv1.weight: (1,) vs (32, 16, 3, 3)"),
        ("layer3.1.bn2.running_var", torch.zeros(7), "layer3.1.bn2.running_var: (7,) vs (64,)"),
        ("conv1.weight", torch.zeros(1), "conv1.weight has shape (1,)"),
        ("layer4.1.bn2.bias", None, "missing ['layer4.1.bn2.bias']"),
        ("layer4.2.conv1.weight", torch.zeros(128, 128, 3, 3), "[2, 2, 2, 3] BasicBlocks"),
    ],
)
def test_a_corrupted_checkpoint_is_refused_naming_the_key(key, value, message):
    state = _resnet18_state()
    if value is None:
        del state[f"module.encoder_q.{key}"]
    else:
        state[f"module.encoder_q.{key}"] = value
    with pytest.raises(ExportError, match=re.escape(message)):
        to_detectron2(state)


def test_not_a_resnet_is_named():
    with pytest.raises(ExportError, match="not a ResNet"):
        to_detectron2({"module.encoder_q.blocks.0.attn.qkv.weight": torch.zeros(4, 4)})
