import pytest
import torch

from moco.core.moco import MoCo
from moco.encoders.resnet import ARCHS, build_encoder
from moco.engine import checkpoint as ckpt_io
from moco.export import ExportError, infer_spec, load_query_encoder
from moco.export.official import backbone_shapes, infer_arch
from moco.runs.knn import knn_of_checkpoint


@pytest.mark.parametrize(
    ("mlp", "cifar_stem", "in_chans", "width"), [(False, False, 3, 1.0), (True, True, 1, 0.25)]
)
def test_spec_is_read_off_the_shapes(mlp, cifar_stem, in_chans, width):
    enc = build_encoder("resnet18", 64, mlp, cifar_stem, in_chans, width)
    state = ckpt_io.to_official(MoCo(enc, 64, 128).state_dict())
    spec = infer_spec(state, "resnet18")
    assert (spec.dim, spec.mlp, spec.cifar_stem, spec.in_chans, spec.width) == (
        64, mlp, cifar_stem, in_chans, width,
    )  # fmt: skip
    loaded = load_query_encoder(state, "resnet18").eval()
    x = torch.randn(2, in_chans, 28, 28)
    assert torch.allclose(loaded(x), enc.eval()(x), atol=1e-6)


def test_not_a_resnet_is_named():
    with pytest.raises(ExportError, match="no query encoder"):
        infer_spec({"module.other.weight": torch.zeros(1)}, "resnet18")


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_arch_is_read_off_the_blocks(arch):
    with torch.device("meta"):  # shapes only: no memory, no random draws
        enc = build_encoder(arch, 32, mlp=True, width=0.5)
    state = {f"module.encoder_q.{k}": v for k, v in enc.state_dict().items()}
    assert infer_arch(state) == arch
    shapes = backbone_shapes(state, arch)
    assert shapes == {k: v.shape for k, v in enc.state_dict().items() if not k.startswith("fc.")}


def test_a_mis_shaped_official_checkpoint_is_named():
    enc = build_encoder("resnet18", 64, True, cifar_stem=True, in_chans=1, width=0.25)
    state = ckpt_io.to_official(MoCo(enc, 64, 128).state_dict())
    state["module.encoder_q.layer1.1.bn1.weight"] = torch.ones(3)
    with pytest.raises(ExportError, match=r"layer1\.1\.bn1\.weight: \(3,\) vs \(16,\)"):
        load_query_encoder(state, "resnet18")
    with pytest.raises(ExportError, match="key sets differ from the resnet34"):
        load_query_encoder(state, "resnet34")


def test_official_checkpoint_knn_on_our_data(tmp_path, tiny_idx):
    """An official-format file (arch, epoch, state_dict, optimizer; no config) -> our kNN."""
    enc = build_encoder("resnet18", 128, True, cifar_stem=True, in_chans=1, width=0.125)
    official = {
        "epoch": 200,
        "arch": "resnet18",
        "state_dict": ckpt_io.to_official(MoCo(enc, 128, 256).state_dict()),
        "optimizer": {},
    }
    torch.save(official, tmp_path / "checkpoint_0199.pth.tar")
    with pytest.raises(ValueError, match="pass the data"):
        knn_of_checkpoint(tmp_path / "checkpoint_0199.pth.tar", None, k=20)
    record = knn_of_checkpoint(tmp_path / "checkpoint_0199.pth.tar", str(tiny_idx), k=20)
    assert 0.1 < record["top1"] <= 1.0 and record["epoch"] == 200 and record["k"] == 20
