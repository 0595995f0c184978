"""One rank of a multi-process test, launched by ``launch_ranks`` (tests/conftest.py).

``python dist_worker.py SCENARIO OUT_DIR`` with RANK / WORLD_SIZE / MASTER_* in the
environment; each scenario saves what it measured to ``OUT_DIR/rank<r>.pt`` for the
test (in the parent process) to compare with a one-process reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from moco import dist

B, STEPS = 16, 3  # global batch, training steps of the equivalence scenario


def tiny_moco(bn_splits: int) -> torch.nn.Module:
    from moco.core.moco import MoCo
    from moco.encoders.resnet import build_encoder

    torch.manual_seed(0)
    enc = build_encoder("resnet18", 16, True, True, 1, 0.125, bn_splits)
    # float64: a float32 rounding difference can flip a ReLU a few steps later, and
    # the comparison should test the algorithm, not the luck of the rounding
    return MoCo(enc, dim=16, queue_size=40, momentum=0.9, temperature=0.2).double()


def batches() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shape = (STEPS, B, 1, 16, 16)
    x_q = torch.randn(shape, generator=g, dtype=torch.float64)
    return x_q, torch.randn(shape, generator=g, dtype=torch.float64)


def train(model: torch.nn.Module, x_q: torch.Tensor, x_k: torch.Tensor) -> dict[str, object]:
    """STEPS MoCo steps on this process's slice of each global batch; what changed."""
    from moco.engine.step import train_step

    w, r = dist.world_size(), dist.rank()
    n = B // w
    query = dist.data_parallel(model.encoder_q, torch.device("cpu"))
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    losses = []
    for s in range(STEPS):
        gen = torch.Generator().manual_seed(100 + s)  # the key shuffle
        out = train_step(
            model, opt, x_q[s, r * n : (r + 1) * n], x_k[s, r * n : (r + 1) * n],
            generator=gen, online={"encoder_q": query},
        )  # fmt: skip
        losses.append(dist.all_reduce_sum_(out.loss.detach().clone()) / w)
    dist.average_bn_stats_(model)
    return {
        "losses": torch.stack(losses),
        "grads": {k: p.grad.clone() for k, p in model.encoder_q.named_parameters()},
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def equivalence(out: Path) -> None:
    x_q, x_k = batches()
    model = tiny_moco(bn_splits=2 // dist.world_size())  # 2 BN groups in all
    torch.save(train(model, x_q, x_k), out / f"rank{dist.rank()}.pt")


def gather(out: Path) -> None:
    r = dist.rank()
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(10 + r)).requires_grad_()
    y = dist.all_gather_grad(x)
    loss = objective(y, r)
    loss.backward()
    torch.save(
        {"x": x.detach(), "y": y.detach(), "grad": x.grad, "nograd": dist.all_gather_nograd(x)},
        out / f"rank{r}.pt",
    )


def objective(y: torch.Tensor, r: int) -> torch.Tensor:
    """Rank r's loss on the gathered tensor: different on every rank, nonlinear."""
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(20 + r))
    return (y * w).sum() + 0.5 * (r + 1) * (y**2).sum() + y[r].prod()


class ToFloat(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double() / 255


def features(out: Path) -> None:
    from moco.eval.features import extract_features

    model = tiny_moco(bn_splits=1).encoder_q.eval()
    images = torch.randint(0, 256, (37, 1, 16, 16), dtype=torch.uint8)
    f = extract_features(model.forward_features, images, ToFloat(), batch_size=8)
    torch.save(
        {"features": f, "images": images, "shard": dist.shard_indices(37)},
        out / f"rank{dist.rank()}.pt",
    )


def on_main_error(out: Path) -> None:
    def fail() -> None:
        raise FileExistsError("only rank 0 ran this")

    try:
        dist.on_main(fail)
    except FileExistsError as err:
        (out / f"rank{dist.rank()}.txt").write_text(str(err))


if __name__ == "__main__":
    torch.set_num_threads(1)
    dist.init_from_env(torch.device("cpu"), timeout_s=60)
    try:
        globals()[sys.argv[1]](Path(sys.argv[2]))
    finally:
        dist.shutdown()
