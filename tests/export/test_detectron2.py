import torch

from moco.core.moco import MoCo
from moco.encoders.resnet import build_encoder
from moco.engine import checkpoint as ckpt_io
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
