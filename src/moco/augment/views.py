"""The paper's view distributions as batched kornia pipelines on uint8 (N, C, H, W) batches.

v1 (MoCo Sec. 4, "Data augmentation"): RandomResizedCrop(scale 0.2-1), RandomGrayscale
p 0.2, ColorJitter(0.4, 0.4, 0.4, 0.4), horizontal flip. v2 (MoCo v2 Sec. 2, following
SimCLR): ColorJitter(0.4, 0.4, 0.4, 0.1) applied with p 0.8, Gaussian blur sigma in
[0.1, 2] with p 0.5, the rest as v1. SimCLR (Chen et al. 2020, Appendix A): crop
scale 0.08-1, colour jitter of strength 1 = (0.8, 0.8, 0.8, 0.2) with p 0.8, grayscale
p 0.2, blur p 0.5. Every op draws its parameters per sample, so one call makes one
independent view of each image of the batch.

The photometric ops (jitter, grayscale, blur, solarize, normalisation) are built by one
function, ``photometric_ops``, shared by ``build_view_transform`` (crop and flip on the
device, for small in-memory images) and ``build_photometric_transform`` (stage 2 of the
two-stage path in ``two_stage.py``, for large images from files, cropped per sample on
the CPU): both paths draw the same photometric distribution from the same code.

Greyscale inputs (one channel): saturation and hue jitter and RandomGrayscale need
colour and are skipped; brightness and contrast jitter, crops, blur and flips apply.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import kornia.augmentation as K
import torch
from torch import nn


@dataclass(frozen=True)
class ViewSpec:
    """One view distribution. ``jitter`` is (brightness, contrast, saturation, hue)."""

    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.4)
    jitter_p: float = 1.0
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    flip_p: float = 0.5
    solarize_p: float = 0.0  # BYOL's solarize (threshold 0.5); 0 in MoCo v1/v2 and SimCLR


PRESETS: dict[str, ViewSpec] = {
    "v1": ViewSpec(),
    "v2": ViewSpec(jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, blur_p=0.5),
    # the official CIFAR-10 demo: v2's jitter and grayscale, no blur
    "demo": ViewSpec(jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8),
    # SimCLR Appendix A: colour distortion of strength 1 and a wider crop scale
    "simclr": ViewSpec(scale=(0.08, 1.0), jitter=(0.8, 0.8, 0.8, 0.2), jitter_p=0.8, blur_p=0.5),
}


def blur_kernel_size(size: int) -> int:
    """Odd kernel of about 10 % of the image side (23 at 224, 3 at 32), as in SimCLR."""
    return max(3, int(0.1 * size)) | 1


class _ToFloat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"augmentations support 1 or 3 channels, got {channels}")


def photometric_ops(spec: ViewSpec, size: int, channels: int) -> list[nn.Module]:
    """The photometric ops of ``spec`` for ``size`` x ``size`` float views, in order.

    Jitter, grayscale, blur, solarize; no crop, flip or normalisation. The single source
    of these ops for both augmentation paths, so they cannot drift apart.
    """
    _check_channels(channels)
    b, c, s, h = spec.jitter
    if channels == 1:
        s, h = 0.0, 0.0  # saturation and hue need colour
    ops: list[nn.Module] = []
    if spec.jitter_p > 0 and any(v > 0 for v in (b, c, s, h)):
        ops.append(K.ColorJitter(b, c, s, h, p=spec.jitter_p))
    if channels == 3 and spec.grayscale_p > 0:
        ops.append(K.RandomGrayscale(p=spec.grayscale_p))
    if spec.blur_p > 0:
        # sigma is given in pixels of a 224 crop (MoCo v2: [0.1, 2]); scale it with the
        # image so a 28-pixel view is blurred as much, relative to its size, as a 224 one
        sigma = (spec.blur_sigma[0] * size / 224, spec.blur_sigma[1] * size / 224)
        k = blur_kernel_size(size)
        ops.append(K.RandomGaussianBlur((k, k), sigma, p=spec.blur_p))
    if spec.solarize_p > 0:
        # BYOL (Grill et al. 2020, Appendix B): x -> 1 - x above 0.5; fixed threshold
        ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=spec.solarize_p))
    return ops


def build_photometric_transform(
    spec: ViewSpec,
    size: int,
    channels: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> nn.Module:
    """uint8 or [0, 1] float (N, C, size, size) crops -> normalised float views.

    Stage 2 of the two-stage path: the crops (and flips) were made per sample on the CPU
    (``two_stage.CropFlip``); this applies the rest of ``spec`` to the whole batch at once.
    """
    ops = [_ToFloat(), *photometric_ops(spec, size, channels)]
    ops.append(K.Normalize(torch.tensor(mean), torch.tensor(std)))
    return nn.Sequential(*ops)


def build_view_transform(
    spec: ViewSpec,
    size: int,
    channels: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> nn.Module:
    """uint8 or [0, 1] float (N, C, H, W) -> normalised float (N, C, size, size) views."""
    _check_channels(channels)
    ops: list[nn.Module] = [
        _ToFloat(),
        K.RandomResizedCrop(
            (size, size), scale=spec.scale, ratio=spec.ratio, cropping_mode="resample"
        ),
        *photometric_ops(spec, size, channels),
    ]
    # the flip goes after the photometric ops, as it always has here, so a given RNG state
    # still gives the same views; flips commute with every photometric op in distribution
    if spec.flip_p > 0:
        ops.append(K.RandomHorizontalFlip(p=spec.flip_p))
    ops.append(K.Normalize(torch.tensor(mean), torch.tensor(std)))
    return nn.Sequential(*ops)


def build_eval_transform(
    size: int, mean: tuple[float, ...], std: tuple[float, ...], input_size: int
) -> nn.Module:
    """Deterministic transform for evaluation: resize (if needed) and normalise."""
    ops: list[nn.Module] = [_ToFloat()]
    if input_size != size:
        ops.append(K.Resize((size, size)))
    ops.append(K.Normalize(torch.tensor(mean), torch.tensor(std)))
    return nn.Sequential(*ops)


def override(spec: ViewSpec, **changes: object) -> ViewSpec:
    """A copy of ``spec`` with some fields replaced (e.g. a gentler crop scale)."""
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]
