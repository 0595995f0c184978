"""Shared fixtures: tiny IDX datasets cut from the bundled subset, tiny-run configs,
launchers of multi-process tests."""

from __future__ import annotations

import moco  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from moco.config import Config, load_config
from moco.data.idx import write_idx
from moco.data.sources import load_source


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make_idx_dir(root: Path, n_train: int, n_test: int) -> Path:
    """A directory of gzipped IDX files with the first images of the bundled subset."""
    data = load_source("bundled")
    root.mkdir(parents=True, exist_ok=True)
    for prefix, x, y, n in (
        ("train", data.train_images, data.train_labels, n_train),
        ("t10k", data.test_images, data.test_labels, n_test),
    ):
        if n == 0:
            continue
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x[:n, 0].numpy())
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y[:n].numpy().astype(np.uint8))
    return root


@pytest.fixture
def tiny_idx(tmp_path: Path) -> Path:
    return make_idx_dir(tmp_path / "tiny", 256, 64)


# A run of about a second on one core: 4 steps an epoch on ``tiny_idx``, kNN at epochs 0
# and 1. The one copy of these values: tests that pass override strings to the CLI or to
# ``ablate.run_sweep`` spread this tuple, the others take a Config from ``tiny_config``.
TINY_OVERRIDES: tuple[str, ...] = (
    "model.width=0.125", "model.queue_size=128", "model.bn_splits=2", "optim.batch_size=64",
    "optim.epochs=1", "eval.knn_every=1", "eval.knn_k=20", "run.progress=false",
    "run.log_every=2", "run.device=cpu",
)  # fmt: skip


@pytest.fixture
def tiny_config(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., Config]:
    """A factory: ``tiny_config(*overrides, preset="default", data=None)`` is ``preset``
    with ``TINY_OVERRIDES``, runs written to ``tmp_path/<run.name>`` (name ``run`` unless
    overridden), then ``overrides`` (the later value of a key wins). ``data`` is any
    ``data.source`` string; None means the ``tiny_idx`` directory, made on first use."""

    def make(*overrides: str, preset: str = "default", data: str | Path | None = None) -> Config:
        source = request.getfixturevalue("tiny_idx") if data is None else data
        return load_config(
            preset,
            [
                *TINY_OVERRIDES,
                f"data.source={source}",
                f"run.out_dir={tmp_path}",
                "run.name=run",
                *overrides,
            ],
        )

    return make


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """The environment torchrun gives rank ``rank`` of ``world`` on one node."""
    import os

    return {
        **os.environ,
        "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
    }  # fmt: skip


def launch_ranks(
    scenario: str | None,
    out: Path,
    world: int = 2,
    timeout: float = 120,
    worker: str = "dist_worker.py",
) -> None:
    """Run tests/WORKER [SCENARIO] OUT on ``world`` gloo processes; fail on any error."""
    import subprocess
    import sys

    out.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).with_name(worker)
    port = free_port()
    args = [scenario] if scenario is not None else []
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *args, str(out)],
            env=rank_env(r, world, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(world)
    ]
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for r, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"rank {r} of {scenario!r} failed:\n{log}"
