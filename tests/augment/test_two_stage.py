"""The two-stage path (CropFlip per sample + batched photometric ops) draws the same
views as the fully batched path (build_view_transform)."""

import math

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from moco.augment.two_stage import CropFlip, jpeg_reduction, sample_crop
from moco.augment.views import (
    PRESETS,
    ViewSpec,
    build_photometric_transform,
    build_view_transform,
    override,
)

H, W = 375, 500  # an ImageNet-like 4:3 image
N = 4000
# two-sample KS critical value at alpha = 1e-3 for n = m = 4000: 1.95 * sqrt(2 / n) = 0.044.
# Both samplers are seeded, so the statistic is fixed; the bound says a real mismatch
# (e.g. uniform instead of log-uniform ratio, or a different scale range) would fail.
KS_MAX = 1.95 * math.sqrt(2 / N)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: max |F_a - F_b| (numpy, no scipy needed)."""
    grid = np.concatenate([a, b])
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def _smooth_image(h: int, w: int, mode: str = "RGB") -> Image.Image:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127 + 100 * np.sin(x / 37.0) * np.cos(y / 53.0)
    g = 255 * x / w
    b = 255 * y / h
    a = np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(a)
    return img.convert(mode)


def _stage1_boxes(spec: ViewSpec) -> np.ndarray:
    stage1 = CropFlip(spec, 32, n_views=2)
    boxes = [c for idx in range(N // 2) for c in stage1.plan(H, W, idx)[0]]
    return np.array([(c.h, c.w, c.j + c.w / 2) for c in boxes], dtype=np.float64)


def _kornia_boxes(spec: ViewSpec) -> np.ndarray:
    crop = build_view_transform(spec, 32, 3, (0.5,) * 3, (0.25,) * 3)[1]
    torch.manual_seed(0)
    src = crop.forward_parameters(torch.Size((N, 3, H, W)))["src"].double()
    w = src[:, 1, 0] - src[:, 0, 0] + 1
    h = src[:, 2, 1] - src[:, 1, 1] + 1
    return torch.stack([h, w, src[:, 0, 0] + w / 2], 1).numpy()


@pytest.mark.parametrize("scale", [(0.2, 1.0), (0.08, 1.0)], ids=["v1", "simclr"])
def test_crop_boxes_match_kornia_distribution(scale):
    spec = override(PRESETS["v1"], scale=scale)
    ours, theirs = _stage1_boxes(spec), _kornia_boxes(spec)
    for name, f in {
        "area scale": lambda b: b[:, 0] * b[:, 1] / (H * W),
        "log aspect ratio": lambda b: np.log(b[:, 1] / b[:, 0]),
        "centre x / W": lambda b: b[:, 2] / W,
    }.items():
        assert ks_statistic(f(ours), f(theirs)) < KS_MAX, name
    area = ours[:, 0] * ours[:, 1] / (H * W)
    assert area.min() >= scale[0] - 0.01 and area.max() <= 1.0
    ratio = ours[:, 1] / ours[:, 0]
    assert ratio.min() > 3 / 4 - 0.02 and ratio.max() < 4 / 3 + 0.02


def test_crop_falls_back_to_centre_like_torchvision():
    # a 10:1 strip: no attempt fits the ratio range, so the crop is the centred max-ratio box
    rng = np.random.default_rng(0)
    box = sample_crop(10, 100, (0.9, 1.0), (3 / 4, 4 / 3), rng)
    assert (box.h, box.w) == (10, 13) and box.i == 0 and box.j == (100 - 13) // 2


def _without_crop_flip(t: torch.nn.Module) -> list[torch.nn.Module]:
    skip = ("RandomResizedCrop", "RandomHorizontalFlip")
    return [m for m in t if type(m).__name__ not in skip]


@pytest.mark.parametrize("preset", ["v1", "v2", "demo", "simclr"])
@pytest.mark.parametrize("channels", [1, 3])
def test_photometric_stage_is_the_batched_paths_ops(preset, channels):
    spec = PRESETS[preset]
    mean, std = (0.4,) * channels, (0.2,) * channels
    stage2 = build_photometric_transform(spec, 224, channels, mean, std)
    batched = _without_crop_flip(build_view_transform(spec, 224, channels, mean, std))
    assert [type(m) for m in stage2] == [type(m) for m in batched]
    assert [repr(m) for m in stage2] == [repr(m) for m in batched]  # kornia reprs hold params
    for a, b in zip(stage2, batched, strict=True):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert ka == kb and torch.equal(va, vb)


def test_jitter_factors_are_uniform_in_range():
    stage2 = build_photometric_transform(PRESETS["v2"], 224, 3, (0.5,) * 3, (0.25,) * 3)
    jitter = stage2[1]
    assert type(jitter).__name__ == "ColorJitter"
    torch.manual_seed(0)
    params = jitter.forward_parameters(torch.Size((N, 3, 8, 8)))
    q = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
    expected = 0.6 + 0.8 * q  # U(1 - 0.4, 1 + 0.4)
    # a quantile's standard deviation is <= 0.8 * sqrt(0.25 / N) = 0.0063; allow ~5 of them
    for key in ("brightness_factor", "contrast_factor", "saturation_factor"):
        f = params[key].double()
        assert f.min() >= 0.6 and f.max() <= 1.4, key
        assert torch.allclose(torch.quantile(f, q), expected, atol=0.03), key
    applied = params["batch_prob"].float().mean().item()
    assert abs(applied - 0.8) < 0.03  # jitter_p, binomial sd 0.0063


def test_flip_rate_and_flip_mirrors(tmp_path):
    stage1 = CropFlip(PRESETS["v2"], 32)
    flips = [f for idx in range(N // 2) for f in stage1.plan(H, W, idx)[1]]
    assert abs(np.mean(flips) - 0.5) < 0.03  # binomial sd 0.0079
    # a whole-image crop: a flipped view is exactly the mirror of an unflipped one
    path = tmp_path / "im.png"
    _smooth_image(48, 64).save(path)
    whole = override(PRESETS["v2"], scale=(1.0, 1.0), ratio=(64 / 48, 64 / 48))
    plain = CropFlip(override(whole, flip_p=0.0), 32)(path, 0)[0]
    flipped = CropFlip(override(whole, flip_p=1.0), 32)(path, 0)[0]
    assert torch.equal(flipped, plain.flip(-1))


@pytest.mark.parametrize(
    ("height", "width", "size", "reductions"),
    [(600, 800, 64, {2, 4, 8}), (1200, 1600, 224, {1, 2, 4})],
)
def test_reduction_is_the_largest_that_keeps_every_crop_big_enough(height, width, size, reductions):
    stage1 = CropFlip(PRESETS["simclr"], size)
    seen = set()
    for idx in range(500):
        crops, _, r = stage1.plan(height, width, idx)
        side = min(min(c.h, c.w) for c in crops)
        assert side >= r * size
        assert r == 8 or side < 2 * r * size
        seen.add(r)
    assert seen == reductions
    assert jpeg_reduction([sample_crop(100, 100, (1, 1), (1, 1), np.random.default_rng())], 64) == 1


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_reduced_jpeg_decoding_gives_nearly_the_same_views(tmp_path, monkeypatch, mode):
    path = tmp_path / "smooth.jpg"
    _smooth_image(600, 800, mode).save(path, quality=95)
    drafted: list[tuple[int, int]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):  # record the decoded size libjpeg was asked for
        out = original(self, mode, size)
        drafted.append(self.size)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    spec = override(PRESETS["v2"], scale=(0.3, 1.0))
    fast, full = (
        CropFlip(spec, 64, mode=mode),
        CropFlip(spec, 64, mode=mode, reduced_decoding=False),
    )
    reductions, diffs = [], []
    for idx in range(12):
        drafted.clear()
        a, b = fast(path, idx), full(path, idx)
        r = fast.plan(600, 800, idx)[2]
        reductions.append(r)
        # the decoder shrank the image exactly when, and as far as, the crops allowed
        assert drafted == ([(800 // r, 600 // r)] if r > 1 else [])
        for va, vb in zip(a, b, strict=True):
            assert va.shape == vb.shape == ((3 if mode == "RGB" else 1), 64, 64)
            diffs.append((va.float() - vb.float()).abs().mean().item())
    assert max(reductions) >= 4  # the test exercises real reductions
    assert max(diffs) < 2.0  # of 255: DCT scaling vs antialiased resize of the same crop


def test_png_is_decoded_at_full_size(tmp_path):
    path = tmp_path / "smooth.png"
    _smooth_image(600, 800).save(path)
    spec = override(PRESETS["v2"], scale=(0.3, 1.0))
    for idx in range(4):
        a = CropFlip(spec, 64)(path, idx)
        b = CropFlip(spec, 64, reduced_decoding=False)(path, idx)
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_views_depend_only_on_seed_epoch_index(tmp_path):
    path = tmp_path / "im.jpg"
    _smooth_image(120, 160).save(path)
    spec = PRESETS["v2"]
    ref = CropFlip(spec, 32, seed=7)(path, 3, epoch=1)
    other = CropFlip(spec, 32, seed=7)  # a fresh "worker" that saw other samples first
    for idx in range(3):
        other(path, idx)
    assert all(torch.equal(x, y) for x, y in zip(ref, other(path, 3, epoch=1), strict=True))
    for seed, idx, epoch in [(8, 3, 1), (7, 4, 1), (7, 3, 2)]:
        views = CropFlip(spec, 32, seed=seed)(path, idx, epoch=epoch)
        assert not torch.equal(views[0], ref[0])
    assert not torch.equal(ref[0], ref[1])  # two different views of one sample


def test_two_stages_compose_to_normalised_views(tmp_path):
    paths = []
    for k in range(4):
        paths.append(tmp_path / f"{k}.jpg")
        _smooth_image(90 + 10 * k, 120).save(paths[-1])
    spec = PRESETS["simclr"]
    stage1 = CropFlip(spec, 32)
    stage2 = build_photometric_transform(spec, 32, 3, (0.5,) * 3, (0.25,) * 3)
    views = [stage1(p, k) for k, p in enumerate(paths)]
    batch = torch.stack([v[0] for v in views])
    assert batch.dtype == torch.uint8 and batch.shape == (4, 3, 32, 32)
    out = stage2(batch)
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= -2.0 - 1e-5 and out.max() <= 2.0 + 1e-5  # (x - 0.5) / 0.25, x in [0, 1]


def test_presets_and_solarize():
    assert PRESETS["v1"] == ViewSpec()
    assert PRESETS["simclr"].scale == (0.08, 1.0) and PRESETS["simclr"].jitter == (
        0.8,
        0.8,
        0.8,
        0.2,
    )
    assert all(PRESETS[p].solarize_p == 0 for p in PRESETS)
    spec = override(PRESETS["v2"], solarize_p=1.0)
    t = build_photometric_transform(spec, 32, 1, (0.0,), (1.0,))
    assert "RandomSolarize" in [type(m).__name__ for m in t]
    x = torch.tensor([0.2, 0.8]).view(1, 1, 1, 2).expand(1, 1, 32, 2).contiguous()
    only = torch.nn.Sequential(t[0], t[-2], t[-1])  # to float, solarize, normalise
    y = only(x)
    assert torch.allclose(y[0, 0, 0], torch.tensor([0.2, 0.2]))  # 0.8 -> 1 - 0.8
