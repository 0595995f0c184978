"""Building blocks the encoders and the methods share, torch only: split BN and the
projection heads. They know nothing of the methods that use them."""

from moco.layers.heads import build_head, build_mlp
from moco.layers.split_bn import (
    SplitBatchNorm1d,
    SplitBatchNorm2d,
    convert_to_split_bn,
    interleave_groups,
)

__all__ = [
    "SplitBatchNorm1d",
    "SplitBatchNorm2d",
    "build_head",
    "build_mlp",
    "convert_to_split_bn",
    "interleave_groups",
]
