"""One rank of the multi-process tests of the methods beside MoCo (tests/test_dist_methods.py).

``python dist_methods_worker.py OUT_DIR`` with RANK / WORLD_SIZE / MASTER_* in the
environment: trains every method of :data:`METHODS` for a few steps on this process's
slice of each global batch and saves what it measured to ``OUT_DIR/rank<r>.pt``. The
test runs :func:`train_method` in one process for the reference.

The encoders are small float64 MLPs without BN, so one process and two processes must
agree to rounding whatever the key shuffle: what is tested is the gathering (with and
without gradient), the positives' positions in the gathered batch, the shared negative
draw of the memory bank and its update from the gathered batch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from moco import dist

B, STEPS, IN, DIM, NUM_IMAGES = 8, 2, 6, 4, 40


def _encoder() -> nn.Module:
    return nn.Sequential(nn.Linear(IN, 5), nn.Tanh(), nn.Linear(5, DIM))


def _simclr() -> nn.Module:
    from moco.core.simclr import SimCLR

    return SimCLR(_encoder(), 0.5)


def _end_to_end() -> nn.Module:
    from moco.core.end_to_end import EndToEnd

    return EndToEnd(_encoder(), 0.2, shuffle_keys=True)


def _moco_v3() -> nn.Module:
    from moco.core.moco_v3 import MoCoV3

    return MoCoV3(_encoder(), nn.Linear(DIM, DIM), momentum=0.9, temperature=1.0)


def _memory_bank() -> nn.Module:
    from moco.core.memory_bank import MemoryBank

    return MemoryBank(_encoder(), DIM, NUM_IMAGES, num_negatives=10, temperature=0.1)


METHODS: dict[str, Callable[[], nn.Module]] = {
    "simclr": _simclr,
    "end_to_end": _end_to_end,
    "moco_v3": _moco_v3,
    "memory_bank": _memory_bank,
}


def train_method(name: str) -> dict[str, object]:
    """STEPS training steps of method ``name`` on this process's share of each batch."""
    from moco.engine.step import train_step

    torch.manual_seed(0)  # same weights and memory bank on every rank
    model = METHODS[name]().double()
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(STEPS, B, IN, generator=g, dtype=torch.float64)
    x2 = torch.randn(STEPS, B, IN, generator=g, dtype=torch.float64)
    index = torch.stack([torch.randperm(NUM_IMAGES, generator=g)[:B] for _ in range(STEPS)])

    w, r = dist.world_size(), dist.rank()
    mine = slice(r * (B // w), (r + 1) * (B // w))
    online = {
        n: dist.data_parallel(getattr(model, n), torch.device("cpu")) for n in model.online_names
    }
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.1, momentum=0.9)
    losses = []
    for s in range(STEPS):
        out = train_step(
            model, opt, x1[s, mine], x2[s, mine], index=index[s, mine], online=online,
            # key shuffle / negatives: a different seed on each rank, so the results
            # match one process only if rank 0's draw is the one every rank uses
            generator=torch.Generator().manual_seed(100 + s + 1000 * r),
        )  # fmt: skip
        losses.append(dist.all_reduce_sum_(out.loss.detach().clone()) / w)
    return {
        "losses": torch.stack(losses),
        "index": index,
        "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad},
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


if __name__ == "__main__":
    torch.set_num_threads(1)
    dist.init_from_env(torch.device("cpu"), timeout_s=60)
    try:
        result = {name: train_method(name) for name in METHODS}
        torch.save(result, Path(sys.argv[1]) / f"rank{dist.rank()}.pt")
    finally:
        dist.shutdown()
