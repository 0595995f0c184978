import pytest
import torch

from moco.core.moco import MoCo
from moco.encoders.resnet import build_encoder
from moco.engine import checkpoint as ckpt_io
from moco.export import ExportError
from moco.export.timm import to_timm

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("num_classes", [0, 10])
def test_timm_resnet_loads_strictly_and_matches_features(num_classes):
    model = MoCo(build_encoder("resnet18", 128, mlp=True), 128, 256).eval()
    net = timm.create_model("resnet18", pretrained=False, num_classes=num_classes).eval()
    net.load_state_dict(to_timm(ckpt_io.to_official(model.state_dict()), "resnet18", num_classes))
    x = torch.randn(2, 3, 64, 64)
    feats = net.forward_head(net.forward_features(x), pre_logits=True)
    assert torch.allclose(feats, model.encoder_q.forward_features(x), atol=1e-5)


def test_timm_refuses_what_it_cannot_hold():
    model = MoCo(build_encoder("resnet18", 128, cifar_stem=True, in_chans=1), 128, 256)
    with pytest.raises(ExportError, match="shapes differ"):
        to_timm(ckpt_io.to_official(model.state_dict()), "resnet18")
