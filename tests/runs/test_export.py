"""export_checkpoint: the format's map applied to a checkpoint, written, and described."""

import pytest
import torch

from moco.errors import CheckpointError, ExportError
from moco.runs.export import export_checkpoint


def test_torchvision_export_of_an_official_checkpoint(tmp_path):
    from moco.core.moco import MoCo
    from moco.encoders.resnet import build_encoder
    from moco.engine import checkpoint as ckpt_io

    model = MoCo(build_encoder("resnet18", 128, mlp=True), 128, 256)
    ckpt = tmp_path / "official.pth.tar"
    torch.save({"arch": "resnet18", "state_dict": ckpt_io.to_official(model.state_dict())}, ckpt)
    e = export_checkpoint(ckpt, tmp_path / "tv.pth", num_classes=5, fc="drop")
    assert e.fmt == "torchvision" and e.arch == "resnet18" and e.path == tmp_path / "tv.pth"
    state = torch.load(e.path)
    assert len(state) == e.tensors and not any(k.startswith("fc.") for k in state)
    assert torch.equal(state["conv1.weight"], model.encoder_q.conv1.weight)


def test_a_cifar_width_encoder_is_no_torchvision_resnet(untrained_checkpoint, tmp_path):
    with pytest.raises(ExportError, match="shapes differ from torchvision resnet18"):
        export_checkpoint(untrained_checkpoint, tmp_path / "tv.pth")
    assert not (tmp_path / "tv.pth").exists()


def test_detectron2_needs_no_arch_the_others_do(untrained_checkpoint, tmp_path):
    ckpt = torch.load(untrained_checkpoint, weights_only=False)
    del ckpt["arch"]
    bare = tmp_path / "bare.pth.tar"
    torch.save(ckpt, bare)
    e = export_checkpoint(bare, tmp_path / "d2.pkl", "detectron2")
    assert e.arch is None and e.tensors > 0 and e.path.is_file()
    with pytest.raises(CheckpointError, match="does not say its 'arch'"):
        export_checkpoint(bare, tmp_path / "tv.pth")


def test_an_unknown_format_is_an_export_error(untrained_checkpoint, tmp_path):
    with pytest.raises(ExportError, match="unknown export format 'keras'"):
        export_checkpoint(untrained_checkpoint, tmp_path / "x", "keras")
    assert not (tmp_path / "x").exists()
