"""Two-stage views for large images read from files (ImageNet-sized JPEGs).

Why two stages. The batched path (``views.build_view_transform``) needs every image of a
batch in memory at one size; large images from files have different sizes and cost most
in decoding. So the geometric part runs per sample where the image is decoded (stage 1,
``CropFlip``, in DataLoader workers) and shrinks each view to ``size`` x ``size`` uint8;
the photometric part runs once per batch on the device (stage 2,
``views.build_photometric_transform``, the very ops of the batched path).

Stage 1 draws crops exactly as torchvision's ``RandomResizedCrop.get_params`` and
kornia's ``ResizedCropGenerator`` do (MoCo Sec. 4 and SimCLR Appendix A use this crop):
area fraction uniform in ``spec.scale``, aspect ratio log-uniform in ``spec.ratio``, up to
10 attempts, then a centre crop of the whole image clipped to the ratio range. Each view
is then flipped with ``spec.flip_p`` and resized (bilinear, antialiased) to the output.

Reduced-size JPEG decoding. The crops are drawn first, in the original image's
coordinates; if even the smallest crop side is >= ``r * size`` for r in 8, 4, 2, the JPEG
is decoded at 1/r scale by libjpeg's DCT scaling (``Image.draft``), which cuts decoding
time about r^2-fold, and the crop boxes are mapped into the reduced image. Every crop
then still has >= ``size`` pixels per side, so the downscaled view loses (nearly) nothing.

Where the photometric ops run. On a GPU stage 2 runs them batched on the device. For
CPU training (:func:`photometric_in_workers`) stage 1 applies them too, per uint8 view
with Pillow (``CropFlip(..., photometric=True)``, :mod:`moco.augment.pil_views`), which
costs a CPU far less than the batched float ops, and the device stage only normalises
(``views.build_normalize_transform``).

Determinism. ``CropFlip(path, index, epoch)`` draws from a numpy Generator seeded with
``(seed, epoch, index)``: a sample's views depend on nothing else (not on the worker that
made them, nor on the order of loading), so a run is reproducible for any number of
workers, and each epoch gets fresh views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from moco.augment.pil_views import PilPhotometric
from moco.augment.views import ViewSpec

_REDUCTIONS = (8, 4, 2)  # the DCT scalings libjpeg offers (besides 1)


@dataclass(frozen=True)
class CropBox:
    """A crop in pixel coordinates of the full-size image: top ``i``, left ``j``, ``h`` x ``w``."""

    i: int
    j: int
    h: int
    w: int


def sample_crop(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> CropBox:
    """One RandomResizedCrop box, as torchvision's ``get_params`` (and kornia's generator).

    Area fraction ~ U(scale), log aspect ratio (w / h) ~ U(log ratio); 10 attempts, then
    the whole image clipped to the ratio range, centred.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(rng.integers(0, height - h + 1))
            j = int(rng.integers(0, width - w + 1))
            return CropBox(i, j, h, w)
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return CropBox((height - h) // 2, (width - w) // 2, h, w)


def jpeg_reduction(crops: list[CropBox], size: int) -> int:
    """The largest JPEG DCT reduction r (8, 4, 2 or 1) that keeps every crop >= ``size``."""
    smallest = min(min(c.h, c.w) for c in crops)
    return next((r for r in _REDUCTIONS if smallest >= r * size), 1)


def photometric_in_workers(device: torch.device) -> bool:
    """Whether stage 1 applies the photometric ops (per sample, Pillow) for training on
    ``device``: on a CPU, where they cost far less per sample on uint8 than batched in
    float; not on an accelerator, which runs them batched."""
    return device.type == "cpu"


class CropFlip:
    """Stage 1: a file (or an opened PIL image) -> ``n_views`` uint8 (C, size, size) crops.

    Runs per sample on the CPU, in DataLoader workers; stage 2 is
    ``build_photometric_transform(spec, size, ...)`` on the batched crops, or, with
    ``photometric=True``, this applies ``spec``'s photometric ops to each crop
    (:class:`~moco.augment.pil_views.PilPhotometric`) and stage 2 only normalises.
    ``mode`` is the PIL mode of the output ("RGB": C = 3, "L": C = 1). ``seed`` is the
    run's base seed.
    """

    def __init__(
        self,
        spec: ViewSpec,
        size: int,
        n_views: int = 2,
        seed: int = 0,
        mode: str = "RGB",
        reduced_decoding: bool = True,
        photometric: bool = False,
    ) -> None:
        if mode not in ("RGB", "L"):
            raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
        self.spec = spec
        self.size = size
        self.n_views = n_views
        self.seed = seed
        self.mode = mode
        self.reduced_decoding = reduced_decoding
        self.photometric = PilPhotometric(spec, size, mode) if photometric else None

    def generator(self, index: int, epoch: int) -> np.random.Generator:
        """The sample's own generator: a function of (seed, epoch, index) alone."""
        return np.random.default_rng([self.seed, epoch, index])

    def plan(
        self, height: int, width: int, index: int, epoch: int = 0
    ) -> tuple[list[CropBox], list[bool], int]:
        """The crops, flips and JPEG reduction of sample ``index`` at ``epoch``.

        Drawn before decoding, from the image size alone, so the decoder can be told how
        far it may shrink the image.
        """
        rng = self.generator(index, epoch)
        crops = [
            sample_crop(height, width, self.spec.scale, self.spec.ratio, rng)
            for _ in range(self.n_views)
        ]
        flips = [bool(rng.random() < self.spec.flip_p) for _ in range(self.n_views)]
        reduction = jpeg_reduction(crops, self.size) if self.reduced_decoding else 1
        return crops, flips, reduction

    def __call__(
        self, image: str | Path | Image.Image, index: int, epoch: int = 0
    ) -> tuple[torch.Tensor, ...]:
        """``n_views`` uint8 (C, size, size) tensors of sample ``index`` at ``epoch``."""
        if isinstance(image, (str, Path)):
            with Image.open(image) as img:
                return self._views(img, index, epoch)
        return self._views(image, index, epoch)

    def _views(self, img: Image.Image, index: int, epoch: int) -> tuple[torch.Tensor, ...]:
        width, height = img.size
        crops, flips, reduction = self.plan(height, width, index, epoch)
        if reduction > 1 and img.format == "JPEG":
            # draft picks the largest DCT scale whose output is >= the requested size (a
            # no-op on an image already decoded); the boxes below use the size it gives
            img.draft(self.mode, (-(-width // reduction), -(-height // reduction)))
        img = img.convert(self.mode)  # decodes, at the draft scale if one was set
        return self.cut(img, width, height, crops, flips, index, epoch)

    def cut(
        self,
        img: Image.Image,
        width: int,
        height: int,
        crops: list[CropBox],
        flips: list[bool],
        index: int,
        epoch: int = 0,
    ) -> tuple[torch.Tensor, ...]:
        """uint8 (C, size, size) views of ``crops`` / ``flips`` (drawn in a ``width`` x
        ``height`` image) from ``img``: that image decoded at any scale, in ``self.mode``;
        with the photometric ops of sample ``index`` at ``epoch`` when they run here."""
        sx, sy = width / img.size[0], height / img.size[1]
        # the photometric draws: a stream of their own, so the crops are the same either way
        rng = np.random.default_rng([self.seed, epoch, index, 1]) if self.photometric else None
        views = []
        for crop, flip in zip(crops, flips, strict=True):
            box = (crop.j / sx, crop.i / sy, (crop.j + crop.w) / sx, (crop.i + crop.h) / sy)
            view = img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)
            if flip:
                view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if self.photometric is not None and rng is not None:
                view = self.photometric(view, rng)
            x = torch.from_numpy(np.asarray(view).copy())
            views.append(x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1).contiguous())
        return tuple(views)
