"""Two-view augmentation pipelines (MoCo v1 / v2, SimCLR presets).

Batched on the device for in-memory images (``build_view_transform``); for large images
from files, crop and flip per sample on the CPU (``CropFlip``) and apply the same
photometric ops batched on the device (``build_photometric_transform``).
"""

from moco.augment.two_stage import CropBox, CropFlip, jpeg_reduction, sample_crop
from moco.augment.views import (
    PRESETS,
    ViewSpec,
    build_eval_transform,
    build_photometric_transform,
    build_view_transform,
    photometric_ops,
)

__all__ = [
    "PRESETS",
    "CropBox",
    "CropFlip",
    "ViewSpec",
    "build_eval_transform",
    "build_photometric_transform",
    "build_view_transform",
    "jpeg_reduction",
    "photometric_ops",
    "sample_crop",
]
