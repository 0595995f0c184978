"""A moco checkpoint without training: a freshly built model saved as pre-training saves it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY = ["model.width=0.125", "model.queue_size=128", "augment.size=28"]


@pytest.fixture
def untrained_checkpoint(tmp_path: Path, tiny_idx: Path) -> Path:
    """``run/checkpoint.pth.tar`` of epoch 3 (weights at initialisation) on ``tiny_idx``."""
    from moco.config import load_config, to_yaml
    from moco.engine import checkpoint as ckpt_io
    from moco.engine.build import build_model

    cfg = load_config("default", [*TINY, f"data.source={tiny_idx}"])
    model = build_model(cfg, 1)
    run = tmp_path / "run"
    run.mkdir()
    path = run / "checkpoint.pth.tar"
    torch.save(
        {
            "epoch": 3,
            "arch": cfg.model.arch.value,
            "state_dict": ckpt_io.to_official(model.state_dict()),
            "config": to_yaml(cfg),
            "derived": {"mean": [0.3], "std": [0.35]},
        },
        path,
    )
    return path
