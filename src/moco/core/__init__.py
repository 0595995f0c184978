"""The method, torch only: it knows nothing of data, configs or the command line."""

from moco.core.heads import build_head
from moco.core.losses import info_nce, info_nce_logits
from moco.core.method import ContrastiveMethod, StepOutput
from moco.core.model import MoCo
from moco.core.momentum import momentum_update
from moco.core.queue import enqueue_, init_queue
from moco.core.shuffle_bn import SplitBatchNorm2d, batch_shuffle, batch_unshuffle

__all__ = [
    "MoCo",
    "SplitBatchNorm2d",
    "ContrastiveMethod",
    "StepOutput",
    "batch_shuffle",
    "batch_unshuffle",
    "build_head",
    "enqueue_",
    "info_nce",
    "info_nce_logits",
    "init_queue",
    "momentum_update",
]
