import pytest
import torch

from moco.augment.views import PRESETS, blur_kernel_size, build_eval_transform, build_view_transform


def _names(t):
    return [type(m).__name__ for m in t]


def test_v1_and_v2_ops_for_colour():
    v1 = build_view_transform(PRESETS["v1"], 32, 3, (0.5,) * 3, (0.25,) * 3)
    assert _names(v1)[1:] == [
        "RandomResizedCrop",
        "ColorJitter",
        "RandomGrayscale",
        "RandomHorizontalFlip",
        "Normalize",
    ]
    v2 = build_view_transform(PRESETS["v2"], 32, 3, (0.5,) * 3, (0.25,) * 3)
    assert "RandomGaussianBlur" in _names(v2)


def test_greyscale_skips_colour_ops():
    t = build_view_transform(PRESETS["v2"], 28, 1, (0.5,), (0.25,))
    assert "RandomGrayscale" not in _names(t)
    jitter = t[_names(t).index("ColorJitter")]
    assert jitter.saturation == 0 and jitter.hue == 0 and jitter.brightness == 0.4


def test_views_are_random_per_sample_and_reproducible():
    x = (torch.rand(16, 1, 28, 28) * 255).to(torch.uint8)
    t = build_view_transform(PRESETS["v2"], 24, 1, (0.5,), (0.25,))
    torch.manual_seed(1)
    a = t(x)
    b = t(x)
    torch.manual_seed(1)
    assert torch.equal(a, t(x))
    assert a.shape == (16, 1, 24, 24) and a.dtype == torch.float32
    assert not torch.allclose(a, b)


def test_crop_scale_distribution_is_respected():
    # a single bright pixel per image; the crop area fraction shows in how much it grows
    t = build_view_transform(PRESETS["v1"], 32, 1, (0.0,), (1.0,))
    crop = t[1]
    params = crop.forward_parameters(torch.Size((4000, 1, 32, 32)))
    src = params["src"]
    w = src[:, 1, 0] - src[:, 0, 0] + 1
    h = src[:, 2, 1] - src[:, 1, 1] + 1
    area = (w * h) / (32 * 32)
    assert area.min() >= 0.2 - 0.03 and area.max() <= 1.0 + 1e-6
    assert 0.5 < area.mean() < 0.7  # uniform area in [0.2, 1] before ratio clipping


def test_eval_transform_normalises():
    x = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    t = build_eval_transform(28, (0.5,), (0.25,), 28)
    assert torch.allclose(t(x), torch.full((2, 1, 28, 28), 2.0))


@pytest.mark.parametrize(("size", "k"), [(224, 23), (32, 3), (28, 3)])
def test_blur_kernel_about_a_tenth_of_the_side(size, k):
    assert blur_kernel_size(size) == k
