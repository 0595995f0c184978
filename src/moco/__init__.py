"""moco: Momentum Contrast (He et al., CVPR 2020), MoCo v2 and v3, SimCLR, and the paper's
end-to-end and memory-bank baselines.

The public Python API::

    from moco import load_config, pretrain
    cfg = load_config("default", overrides=["optim.epochs=2"])
    result = pretrain(cfg)
    print(result.knn_top1, result.knn_top1_init)

The names below are imported when first used, so ``import moco.core`` loads the method
alone (torch and the core), not the engine, data and their dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from moco.openmp import choose_wait_policy
from moco.version import __version__

choose_wait_policy()  # before anything imports torch: see moco/openmp.py

__all__ = ["__version__", "load_config", "pretrain", "resume"]

if TYPE_CHECKING:
    from moco.config import load_config
    from moco.runs.train import pretrain, resume


def __getattr__(name: str) -> Any:
    if name == "load_config":
        from moco.config import load_config

        return load_config
    if name in ("pretrain", "resume"):
        from moco.runs import train

        return getattr(train, name)
    raise AttributeError(f"module 'moco' has no attribute {name!r}")
