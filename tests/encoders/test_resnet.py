import pytest
import torch
import torchvision

from moco.encoders.resnet import ARCHS, build_encoder, build_resnet


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_state_dict_identical_to_torchvision(arch):
    tv = getattr(torchvision.models, arch)()
    ours = build_resnet(arch)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in tv.state_dict().items()
    }
    ours.load_state_dict(tv.state_dict(), strict=True)
    tv.eval(), ours.eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(ours(x), tv(x), atol=1e-5)


def test_cifar_stem_greyscale_and_width():
    net = build_resnet("resnet18", num_classes=10, cifar_stem=True, in_chans=1, width=0.5)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert net.conv1.in_channels == 1 and net.conv1.out_channels == 32
    assert isinstance(net.maxpool, torch.nn.Identity)
    assert net.feature_dim == 256 and net.layer4[0].conv1.out_channels == 256
    assert net.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, 256)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_heads_v1_and_v2():
    v1 = build_encoder("resnet50", dim=128, mlp=False)
    assert isinstance(v1.fc, torch.nn.Linear) and v1.fc.in_features == 2048
    v2 = build_encoder("resnet50", dim=128, mlp=True)
    assert [type(m).__name__ for m in v2.fc] == ["Linear", "ReLU", "Linear"]
    assert v2.fc[0].out_features == 2048 and v2.fc[2].out_features == 128


def test_unknown_arch_names_choices():
    with pytest.raises(ValueError, match="resnet18"):
        build_resnet("resnet9")
