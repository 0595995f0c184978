"""moco: Momentum Contrast (He et al., CVPR 2020), MoCo v2 and v3, SimCLR, and the paper's
end-to-end and memory-bank baselines.

The public Python API::

    from moco import load_config, pretrain
    cfg = load_config("default", overrides=["optim.epochs=2"])
    result = pretrain(cfg)
    print(result.knn_top1, result.knn_top1_init)
"""

__version__ = "0.1.0"

from moco.config import load_config  # noqa: E402
from moco.engine.train import pretrain, resume  # noqa: E402

__all__ = ["__version__", "load_config", "pretrain", "resume"]
