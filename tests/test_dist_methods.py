"""End-to-end, SimCLR, MoCo v3 and the memory bank: 2 gloo processes equal 1 process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import free_port, rank_env
from .dist_methods_worker import METHODS, train_method

TOL = {"rtol": 1e-9, "atol": 1e-12}  # float64


def _launch(out: Path, world: int = 2, timeout: float = 120) -> list[dict[str, dict]]:
    """tests/dist_methods_worker.py on ``world`` gloo processes; each rank's results."""
    out.mkdir(parents=True, exist_ok=True)
    worker = Path(__file__).with_name("dist_methods_worker.py")
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(out)],
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
        assert p.returncode == 0, f"rank {r} failed:\n{log}"
    return [torch.load(out / f"rank{r}.pt") for r in range(world)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, dict]]:
    return _launch(tmp_path_factory.mktemp("dist_methods"))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(METHODS))
def test_two_processes_equal_one_process(two_ranks, name):
    """Losses of every step, the DDP-averaged gradients of the last step and the whole
    state (weights, key encoder, memory bank) after it."""
    ref = train_method(name)
    ranks = [two_ranks[r][name] for r in range(2)]
    for r in range(2):
        torch.testing.assert_close(ranks[r]["losses"], ref["losses"], **TOL)
        assert ranks[r]["grads"].keys() == ref["grads"].keys()
        for k, g in ref["grads"].items():
            torch.testing.assert_close(ranks[r]["grads"][k], g, **TOL)
        assert ranks[r]["state"].keys() == ref["state"].keys()
        for k, v in ref["state"].items():
            torch.testing.assert_close(ranks[r]["state"][k], v, **TOL)


@pytest.mark.slow
def test_memory_bank_is_identical_on_every_rank(two_ranks):
    banks = [two_ranks[r]["memory_bank"]["state"]["bank"] for r in range(2)]
    assert torch.equal(banks[0], banks[1])  # gathered updates, never broadcast
    torch.manual_seed(0)
    initial = METHODS["memory_bank"]().double().bank
    changed = (banks[0] != initial).any(dim=1).nonzero().flatten()
    seen = two_ranks[0]["memory_bank"]["index"].flatten().unique()  # both global batches
    assert changed.tolist() == seen.tolist()  # every rank's images written, no other
