"""``moco export --format onnx | safetensors``: the ONNX encoder gives PyTorch's pooled
features at another batch size (dynamic batch axis), checked with onnxruntime; the
safetensors file loads strictly into the library's own model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort  # in the test extra: these tests run in CI, never skipped
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from moco.cli import main
from moco.config import load_config, to_yaml
from moco.engine.build import build_model
from moco.errors import ExportError
from moco.runs.export import export_checkpoint

timm = pytest.importorskip("timm")


def _checkpoint(tmp_path: Path, arch: str, in_chans: int, size: int) -> tuple[Path, nn.Module]:
    """A checkpoint as pre-training writes it (untrained weights, BN statistics made
    non-trivial), and its query encoder in eval mode."""
    cfg = load_config(
        "default",
        [f"model.arch={arch}", f"augment.size={size}", "model.queue_size=64"],
    )
    model = build_model(cfg, in_chans)
    g = torch.Generator().manual_seed(1)
    for bn in model.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.running_mean is not None:
            bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g) * 0.1)
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(
        {
            "epoch": 1,
            "arch": cfg.model.arch.value,
            "state_dict": model.state_dict(),
            "config": to_yaml(cfg),
            "derived": {"mean": [0.3] * in_chans, "std": [0.3] * in_chans, "in_chans": in_chans},
        },
        path,
    )
    return path, model.encoder_q.eval()


@pytest.mark.parametrize(
    "arch, in_chans, size",
    [("torchvision:mobilenet_v3_small", 1, 32), ("timm:convnext_atto", 3, 32), ("resnet18", 1, 28)],
)
def test_onnx_features_equal_pytorch_at_another_batch_size(tmp_path, capsys, arch, in_chans, size):
    ckpt, encoder = _checkpoint(tmp_path, arch, in_chans, size)
    out = tmp_path / "encoder.onnx"
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    assert "dynamic batch (ONNX)" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, outp.name) == ("images", "features")
    for batch in (5, 1):  # exported with a batch of 2
        x = torch.randn(batch, in_chans, size, size)
        (got,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            expected = encoder.forward_features(x).numpy()
        assert got.shape == (batch, encoder.feature_dim)
        assert np.abs(got - expected).max() < 1e-4


def test_safetensors_backbone_loads_strictly_into_timm(tmp_path):
    ckpt, encoder = _checkpoint(tmp_path, "timm:resnet10t", 1, 32)
    out = tmp_path / "backbone.safetensors"
    e = export_checkpoint(ckpt, out, "safetensors")
    tensors = load_file(str(out))
    assert e.tensors == len(tensors) and not any(
        k.startswith(("fc.", "backbone.")) for k in tensors
    )
    net = timm.create_model("resnet10t", pretrained=False, num_classes=0, in_chans=1)
    net.load_state_dict(tensors, strict=True)
    x = torch.randn(3, 1, 32, 32)
    torch.testing.assert_close(net.eval()(x), encoder.forward_features(x))


def test_export_formats_refuse_the_other_library(tmp_path):
    ckpt, _ = _checkpoint(tmp_path, "timm:resnet10t", 1, 32)
    with pytest.raises(ExportError, match="not a torchvision model"):
        export_checkpoint(ckpt, tmp_path / "x.pth", "torchvision")
    with pytest.raises(ExportError, match="unknown export format"):
        export_checkpoint(ckpt, tmp_path / "x.pth", "keras")
