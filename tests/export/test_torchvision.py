import pytest
import torch
import torchvision

from moco.core.moco import MoCo
from moco.encoders.resnet import build_encoder
from moco.engine import checkpoint as ckpt_io
from moco.export import ExportError, encoder_state, to_torchvision


def _checkpoint_state(arch="resnet18", mlp=True, **kw):
    model = MoCo(build_encoder(arch, 128, mlp=mlp, bn_splits=4, **kw), 128, 256)
    return model, ckpt_io.to_official(model.state_dict())


@pytest.mark.parametrize("mlp", [False, True])
def test_export_loads_strictly_and_computes_the_same_features(mlp):
    model, state = _checkpoint_state(mlp=mlp)
    tv = torchvision.models.resnet18(num_classes=10)
    tv.load_state_dict(to_torchvision(state, "resnet18", num_classes=10), strict=True)
    tv.eval(), model.eval()
    x = torch.randn(2, 3, 64, 64)
    tv.fc = torch.nn.Identity()
    assert torch.allclose(tv(x), model.encoder_q.forward_features(x), atol=1e-5)


def test_drop_fc_and_official_prefixes():
    _, state = _checkpoint_state()
    out = to_torchvision(state, "resnet18", fc="drop")
    assert not any(k.startswith("fc") for k in out)
    plain = {k.removeprefix("module."): v for k, v in state.items()}  # no DDP prefix
    assert encoder_state(plain).keys() == encoder_state(state).keys()


def test_shapes_torchvision_cannot_hold_are_named():
    _, state = _checkpoint_state(cifar_stem=True, in_chans=1)
    with pytest.raises(ExportError, match="conv1.weight"):
        to_torchvision(state, "resnet18")
    _, state = _checkpoint_state()
    with pytest.raises(ExportError, match="key sets differ"):
        to_torchvision(state, "resnet34")
    with pytest.raises(ExportError, match="no query encoder"):
        to_torchvision({"weight": torch.zeros(1)}, "resnet18")
