"""Two-view augmentation pipelines, batched on the device (MoCo v1 / v2 presets)."""

from moco.augment.views import PRESETS, ViewSpec, build_eval_transform, build_view_transform

__all__ = ["PRESETS", "ViewSpec", "build_eval_transform", "build_view_transform"]
