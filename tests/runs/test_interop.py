"""Our checkpoints open as the official tools open them, on the installed PyTorch.

One short pre-training run of a ResNet-50 (the official architecture, 7x7 stem, MLP
head) on 16 colour images of 32 px writes a real checkpoint. It is then read:

- with plain ``torch.load(path, weights_only=True)`` (and with torch's default, which
  is what ``main_lincls.py`` and the detection converter call);
- as ``main_lincls.py`` reads it: keep ``module.encoder_q.*`` but ``fc``, strip the
  prefix, ``load_state_dict(strict=False)`` into ``torchvision.models.<arch>()``;
  missing exactly ``fc.weight`` / ``fc.bias``, nothing unexpected;
- as ``detection/convert-pretrain-to-detectron2.py`` reads it: its renaming gives the
  very arrays of our detectron2 export.

The torchvision and timm exports of the same checkpoint load with ``weights_only=True``
too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from moco.config import load_config
from moco.engine import train as engine
from moco.export.detectron2 import load_detectron2, to_detectron2
from moco.runs.export import export_checkpoint

ENC = "module.encoder_q."


@pytest.fixture(scope="module")
def r50_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``checkpoint.pth.tar`` of a one-step ResNet-50 MoCo v2 run on 16 RGB 32 px images."""
    root = tmp_path_factory.mktemp("interop")
    rng = np.random.default_rng(0)
    for i in range(16):
        folder = root / "images" / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    cfg = load_config(
        "moco_v2_imagenet",
        [
            f"data.source=folder:{root / 'images'}", "augment.size=32", "data.load_size=32",
            "optim.batch_size=8", "optim.epochs=1", "model.queue_size=16", "model.bn_splits=2",
            "eval.knn_every=0", "run.progress=false", f"run.out_dir={root}", "run.name=r50",
            "run.device=cpu", "data.holdout_fraction=0.25",
        ],
    )  # fmt: skip
    return engine.pretrain(cfg).checkpoint


def _main_lincls_load(path: Path) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """main_lincls.py's loading of ``--pretrained``, line for line (its comments kept)."""
    checkpoint = torch.load(path, map_location="cpu")  # torch's default weights_only
    model = torchvision.models.__dict__[checkpoint["arch"]]()
    # rename moco pre-trained keys
    state_dict = checkpoint["state_dict"]
    for k in list(state_dict.keys()):
        # retain only encoder_q up to before the embedding layer
        if k.startswith("module.encoder_q") and not k.startswith("module.encoder_q.fc"):
            # remove prefix
            state_dict[k[len("module.encoder_q.") :]] = state_dict[k]
        # delete renamed or unused k
        del state_dict[k]
    msg = model.load_state_dict(state_dict, strict=False)
    return model, msg, checkpoint


def _detectron2_converter(path: Path) -> dict[str, np.ndarray]:
    """detection/convert-pretrain-to-detectron2.py's renaming, line for line."""
    obj = torch.load(path, map_location="cpu")["state_dict"]
    newmodel = {}
    for k, v in obj.items():
        if not k.startswith("module.encoder_q."):
            continue
        k = k.replace("module.encoder_q.", "")
        if "layer" not in k:
            k = "stem." + k
        for t in [1, 2, 3, 4]:
            k = k.replace(f"layer{t}", f"res{t + 1}")
        for t in [1, 2, 3]:
            k = k.replace(f"bn{t}", f"conv{t}.norm")
        k = k.replace("downsample.0", "shortcut")
        k = k.replace("downsample.1", "shortcut.norm")
        newmodel[k] = v.numpy()
    return newmodel


def test_the_checkpoint_is_tensors_and_plain_data(r50_checkpoint):
    ckpt = torch.load(r50_checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["arch"] == "resnet50" and ckpt["epoch"] == 1 and ckpt["step"] == 1
    assert {"optimizer", "rng", "rng_per_rank", "config", "derived", "version"} <= set(ckpt)
    assert ckpt["state_dict"][ENC + "conv1.weight"].shape == (64, 3, 7, 7)
    assert ckpt["state_dict"][ENC + "fc.0.weight"].shape == (2048, 2048)  # v2 MLP head
    assert torch.load(r50_checkpoint, map_location="cpu").keys() == ckpt.keys()  # default


def test_main_lincls_reads_our_checkpoint(r50_checkpoint):
    model, msg, checkpoint = _main_lincls_load(r50_checkpoint)
    assert set(msg.missing_keys) == {"fc.weight", "fc.bias"}
    assert msg.unexpected_keys == []
    ours = torch.load(r50_checkpoint, weights_only=True)["state_dict"]
    for k, v in model.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(v, ours[ENC + k]), k
    # and the network computes what our encoder computes (same features, eval mode)
    from moco.runs.load import load_for_eval

    encoder = load_for_eval(r50_checkpoint).encoder.eval()
    model.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), encoder.forward_features(x))


def test_the_detection_converter_reads_our_checkpoint(r50_checkpoint, tmp_path):
    theirs = _detectron2_converter(r50_checkpoint)
    ours = to_detectron2(torch.load(r50_checkpoint, weights_only=True)["state_dict"])["model"]
    # the converter keeps the projection head (detectron2 ignores unmatched names); the
    # backbone is the same arrays under the same names as our export
    head = {k for k in theirs if k.startswith("stem.fc.")}
    assert head == {"stem.fc.0.weight", "stem.fc.0.bias", "stem.fc.2.weight", "stem.fc.2.bias"}
    assert theirs.keys() - head == ours.keys()
    assert all(np.array_equal(theirs[k], ours[k]) for k in ours)
    e = export_checkpoint(r50_checkpoint, tmp_path / "d2.pkl", "detectron2")
    written = load_detectron2(e.path)
    assert written.keys() == ours.keys()
    assert all(np.array_equal(written[k], v) for k, v in ours.items())


@pytest.mark.parametrize("fmt", ["torchvision", "timm"])
def test_the_exports_are_tensors_only(r50_checkpoint, tmp_path, fmt):
    e = export_checkpoint(r50_checkpoint, tmp_path / f"{fmt}.pth", fmt, num_classes=10)
    state = torch.load(e.path, map_location="cpu", weights_only=True)
    assert len(state) == e.tensors and state["fc.weight"].shape == (10, 2048)
    ours = torch.load(r50_checkpoint, weights_only=True)["state_dict"]
    assert torch.equal(state["layer4.2.conv3.weight"], ours[ENC + "layer4.2.conv3.weight"])
    net = torchvision.models.resnet50(num_classes=10)
    net.load_state_dict(state, strict=True)
