"""End-to-end, SimCLR, MoCo v3 and the memory bank: 2 gloo processes equal 1 process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .conftest import launch_ranks
from .dist_methods_worker import METHODS, train_method

TOL = {"rtol": 1e-9, "atol": 1e-12}  # float64


def _launch(out: Path, world: int = 2) -> list[dict[str, dict]]:
    """tests/dist_methods_worker.py on ``world`` gloo processes; each rank's results."""
    launch_ranks(None, out, world, worker="dist_methods_worker.py")
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
