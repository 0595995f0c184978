"""The method, torch only: it knows nothing of data, configs or the command line."""

from moco.core.end_to_end import EndToEnd
from moco.core.losses import batch_contrastive, info_nce, info_nce_logits, nt_xent
from moco.core.memory_bank import MemoryBank
from moco.core.method import ContrastiveMethod, MethodOptions, StepOutput
from moco.core.moco import MoCo
from moco.core.moco_v3 import MoCoV3
from moco.core.momentum import momentum_update
from moco.core.queue import enqueue_, init_queue
from moco.core.registry import METHODS, method_class
from moco.core.shuffle_bn import (
    SplitBatchNorm1d,
    SplitBatchNorm2d,
    batch_shuffle,
    batch_unshuffle,
)
from moco.core.simclr import SimCLR
from moco.layers.heads import build_head, build_mlp

__all__ = [
    "METHODS",
    "MethodOptions",
    "method_class",
    "MoCo",
    "MoCoV3",
    "EndToEnd",
    "MemoryBank",
    "SimCLR",
    "SplitBatchNorm1d",
    "SplitBatchNorm2d",
    "ContrastiveMethod",
    "StepOutput",
    "batch_contrastive",
    "batch_shuffle",
    "batch_unshuffle",
    "build_head",
    "build_mlp",
    "enqueue_",
    "info_nce",
    "info_nce_logits",
    "init_queue",
    "momentum_update",
    "nt_xent",
]
