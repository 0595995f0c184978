"""A view distribution's photometric ops on one PIL view, per sample, for CPU training.

The batched photometric stage (``views.build_photometric_transform``, kornia) is what a
GPU should run: one call per batch. On a CPU it costs more than the per-sample
operations Pillow implements in C on uint8 images: at 224 px, colour jitter alone took
about 4 ms per view batched in float, and the whole stage 12-13 ms per image (two
views), against about 3 ms for the same ops here (``bench/peer.py``, augment section).
So for CPU training stage 1 (:class:`~moco.augment.two_stage.CropFlip`) applies them
to each uint8 view right after its crop and flip, in the DataLoader workers, and the
device stage only normalises (:func:`moco.augment.two_stage.photometric_in_workers`).

The ops and their parameters are those of :func:`moco.augment.views.photometric_ops`
(the same :class:`~moco.augment.views.ViewSpec`): colour jitter with probability
``jitter_p``, its four adjustments in a random order with factors drawn as torchvision's
``ColorJitter`` draws them, applied by torchvision's own functional ops on PIL images
(Pillow's ``ImageEnhance`` and an HSV hue shift); grayscale with ``grayscale_p``; a
Gaussian blur with ``blur_p`` and sigma uniform in ``blur_sigma`` scaled by size / 224,
by Pillow's ``GaussianBlur`` (an extended box blur approximating the Gaussian kernel:
the one deliberate difference from the batched stage's exact kernel); solarize with
``solarize_p``. Draws come from the numpy Generator the caller passes, so a sample's
views depend only on its (seed, epoch, index).
"""

from __future__ import annotations

import numpy as np
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter

from moco.augment.views import ViewSpec


class PilPhotometric:
    """``spec``'s jitter, grayscale, blur and solarize on one ``size`` x ``size`` PIL view
    of ``mode`` "RGB" or "L" (greyscale views get brightness and contrast only, as in the
    batched stage)."""

    def __init__(self, spec: ViewSpec, size: int, mode: str = "RGB") -> None:
        if mode not in ("RGB", "L"):
            raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
        self.spec = spec
        self.mode = mode
        b, c, s, h = spec.jitter
        if mode == "L":
            s, h = 0.0, 0.0  # saturation and hue need colour
        self.jitter = (b, c, s, h)
        self.sigma = (spec.blur_sigma[0] * size / 224, spec.blur_sigma[1] * size / 224)

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        spec = self.spec
        if spec.jitter_p > 0 and any(v > 0 for v in self.jitter):
            if rng.random() < spec.jitter_p:
                img = self._jitter(img, rng)
        if self.mode == "RGB" and spec.grayscale_p > 0 and rng.random() < spec.grayscale_p:
            img = TF.rgb_to_grayscale(img, num_output_channels=3)
        if spec.blur_p > 0 and rng.random() < spec.blur_p:
            img = img.filter(ImageFilter.GaussianBlur(rng.uniform(*self.sigma)))
        if spec.solarize_p > 0 and rng.random() < spec.solarize_p:
            img = TF.solarize(img, 128)  # x -> 255 - x from 128 up: BYOL's 0.5 threshold
        return img

    def _jitter(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        """torchvision's ColorJitter: factors uniform in [max(0, 1 - v), 1 + v] (hue
        in [-h, h]), the four ops in a random order, those with strength 0 skipped."""
        b, c, s, h = self.jitter
        for op in rng.permutation(4):
            if op == 0 and b > 0:
                img = TF.adjust_brightness(img, rng.uniform(max(0.0, 1 - b), 1 + b))
            elif op == 1 and c > 0:
                img = TF.adjust_contrast(img, rng.uniform(max(0.0, 1 - c), 1 + c))
            elif op == 2 and s > 0:
                img = TF.adjust_saturation(img, rng.uniform(max(0.0, 1 - s), 1 + s))
            elif op == 3 and h > 0:
                img = TF.adjust_hue(img, rng.uniform(-h, h))
        return img
