"""Cost of a MoCo step relative to a plain supervised step on the same encoder and batch.

Method. One encoder architecture (split BN included) and one batch of N random images.
  A  supervised step: a copy of the encoder, cross-entropy on its ``fc`` output against
     random labels < dim, backward, SGD step.
  B  MoCo step: ``moco.engine.step.train_step`` (momentum update, query fwd, shuffled key
     fwd without grad, InfoNCE against the queue, backward, SGD step, enqueue) on two
     pre-made views x_q, x_k. Augmentation is excluded from both sides, so the ratio is
     about the method alone.
  C  the MoCo-only pieces, each timed in isolation as the mean of ``--inner`` calls:
     ``model.momentum_update()``, ``model.enqueue(k)`` and ``info_nce(q, k, queue, tau)``
     on precomputed q, k (forward alone, and forward + backward to q).
  D  the loop's work around the step: fetching a batch from the in-memory loader and
     making the two v2 views on the device (kornia), as shares of step + fetch + views.
Each repeat runs A, B, C back to back after a warm-up, so machine noise hits all sides
alike; the report uses medians over ``--repeats``. CUDA is synchronised around timings.

Reading the output. ``MoCo / supervised`` is the step-time ratio; its floor is about
1.33 = (query fwd+bwd + key fwd) / (fwd+bwd), taking bwd ~ 2 fwd. Above the floor the
excess comes from the shares listed below it (percent of the median MoCo step) and from
the key batch shuffle. Absolute milliseconds are indicative only on a shared CPU. When
another process holds a core, intra-op threads stall on each other and every op costs
far more than its arithmetic (20x measured on 2 busy cores): compare with ``--threads 1``.

    python bench/step_ratio.py [--encoder default|cifar-r18|r50] [--batch 256]
"""

from __future__ import annotations

import moco  # noqa: F401  (first, as the CLI: idle OpenMP threads sleep; see moco/openmp.py)

# isort: split
import argparse
import copy
import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moco.augment.views import PRESETS, build_view_transform
from moco.core.losses import info_nce
from moco.core.moco import MoCo
from moco.data.loader import InMemoryLoader
from moco.encoders.resnet import build_encoder
from moco.engine.host import keep_freed_memory
from moco.engine.step import train_step

DIM, MOMENTUM, TAU = 128, 0.99, 0.2  # m and tau do not change the cost
SGD: dict[str, Any] = {"lr": 0.06, "momentum": 0.9, "weight_decay": 5e-4}
# name -> (build_encoder kwargs, input shape (C, H, W))
ENCODERS: dict[str, tuple[dict[str, Any], tuple[int, int, int]]] = {
    "default": (
        dict(arch="resnet18", mlp=True, cifar_stem=True, in_chans=1, width=0.25, bn_splits=8),
        (1, 28, 28),
    ),
    "cifar-r18": (
        dict(arch="resnet18", mlp=False, cifar_stem=True, in_chans=3, width=1.0, bn_splits=8),
        (3, 32, 32),
    ),
    "r50": (dict(arch="resnet50", mlp=True, in_chans=3, bn_splits=8), (3, 224, 224)),
}


def timer(device: torch.device) -> Callable[[Callable[[], object], int], float]:
    """Return ``time_it(fn, n)``: seconds per call of ``fn`` over ``n`` back-to-back calls."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def time_it(fn: Callable[[], object], n: int = 1) -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        return (time.perf_counter() - t0) / n

    return time_it


def describe(name: str, encoder: nn.Module, shape: tuple[int, int, int]) -> str:
    kwargs = ENCODERS[name][0]
    n_params = sum(p.numel() for p in encoder.parameters())
    opts = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{name}: {opts}, dim={DIM}; input {shape}; {n_params / 1e6:.2f} M params"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="default")
    parser.add_argument("--batch", type=int, default=256, help="N images per step")
    parser.add_argument("--queue", type=int, default=4096, help="K negatives")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds (medians)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--inner", type=int, default=50, help="calls per isolated timing")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's)")
    parser.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="leave glibc's malloc as it is (training keeps freed memory on CPU: engine/host.py)",
    )
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if not args.glibc_defaults:
        keep_freed_memory()

    device = torch.device(args.device)
    kwargs, shape = ENCODERS[args.encoder]
    if args.batch % int(kwargs["bn_splits"]) != 0:
        parser.error(f"--batch must be divisible by bn_splits={kwargs['bn_splits']}")
    torch.manual_seed(0)
    encoder = build_encoder(dim=DIM, **kwargs).to(device)
    supervised = copy.deepcopy(encoder).train()  # same weights, same split BN
    model = MoCo(encoder, DIM, args.queue, MOMENTUM, TAU).to(device).train()
    opt_sup = torch.optim.SGD(supervised.parameters(), **SGD)
    opt_moco = torch.optim.SGD(model.encoder_q.parameters(), **SGD)

    x_q = torch.randn(args.batch, *shape, device=device)
    x_k = torch.randn(args.batch, *shape, device=device)
    labels = torch.randint(0, DIM, (args.batch,), device=device)
    q = F.normalize(torch.randn(args.batch, DIM, device=device), dim=1).requires_grad_()
    k = F.normalize(torch.randn(args.batch, DIM, device=device), dim=1)
    queue = model.get_buffer("queue")  # the live queue: enqueue_ writes it in place

    def supervised_step() -> None:
        loss = F.cross_entropy(supervised(x_q), labels)
        opt_sup.zero_grad(set_to_none=True)
        loss.backward()
        opt_sup.step()

    def loss_forward() -> None:
        with torch.no_grad():
            info_nce(q, k, queue, TAU)

    def loss_forward_backward() -> None:
        info_nce(q, k, queue, TAU).loss.backward()
        q.grad = None

    def key_forward() -> None:  # what MoCo adds to a supervised step, by the method
        with torch.no_grad():
            model.encoder_k(x_k)

    # the loop's work around the step: a batch from the in-memory loader, two views
    raw = torch.randint(0, 256, (4 * args.batch, *shape), dtype=torch.uint8)
    loader = InMemoryLoader(raw, torch.zeros(len(raw), dtype=torch.long), args.batch, device)
    batches = itertools.cycle(list(range(len(loader))))
    order = iter(loader)
    c = shape[0]
    views = build_view_transform(PRESETS["v2"], shape[1], c, (0.5,) * c, (0.25,) * c).to(device)
    images = next(iter(loader))[0]

    def fetch() -> None:
        nonlocal order
        if next(batches) == 0:
            order = iter(loader)
        next(order)

    pieces: dict[str, Callable[[], object]] = {
        "momentum update": model.momentum_update,
        "enqueue": lambda: model.enqueue(k),
        "loss fwd": loss_forward,
        "loss fwd+bwd": loss_forward_backward,
    }
    around: dict[str, Callable[[], object]] = {
        "batch fetch": fetch,
        "2 views (v2)": lambda: (views(images), views(images)),
    }
    time_it = timer(device)
    times: dict[str, list[float]] = {
        "sup": [],
        "moco": [],
        "key fwd": [],
        **{p: [] for p in pieces},
        **{p: [] for p in around},
    }
    for r in range(args.warmup + args.repeats):
        sample = {
            "sup": time_it(supervised_step, 1),
            "moco": time_it(lambda: train_step(model, opt_moco, x_q, x_k), 1),
            "key fwd": time_it(key_forward, 1),
            **{p: time_it(fn, args.inner) for p, fn in pieces.items()},
            **{p: time_it(fn, 3) for p, fn in around.items()},
        }
        if r >= args.warmup:
            for key, t in sample.items():
                times[key].append(t)
    med = {key: statistics.median(ts) for key, ts in times.items()}

    print(f"encoder   {describe(args.encoder, encoder, shape)}")
    print(f"setup     N={args.batch}, K={args.queue}, device={device}, torch {torch.__version__}")
    malloc = "glibc defaults" if args.glibc_defaults else "freed memory kept"
    print(f"          threads={torch.get_num_threads()}, {malloc}, repeats={args.repeats}", end="")
    print(f" (+{args.warmup} warm-up), isolated timings over {args.inner} calls")
    print(f"supervised step  {med['sup'] * 1e3:9.1f} ms  (median)")
    print(f"MoCo step        {med['moco'] * 1e3:9.1f} ms  (median)")
    ratios = sorted(m / s for m, s in zip(times["moco"], times["sup"], strict=True))
    print(
        f"MoCo / supervised  {med['moco'] / med['sup']:.2f}  (floor ~1.33; median of the "
        f"per-round ratios {statistics.median(ratios):.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f})"
    )
    floor = (med["sup"] + med["key fwd"]) / med["sup"]
    print(
        f"measured floor     {floor:.2f}  (supervised step + one no-grad key forward, "
        f"{med['key fwd'] * 1e3:.1f} ms: the method's own cost on this machine)"
    )
    print(f"overhead over it   {med['moco'] / med['sup'] / floor:.2f}x")
    print("share of the MoCo step (isolated, median per call):")
    for p in pieces:
        print(f"  {p:<16} {med[p] * 1e3:8.2f} ms  {100 * med[p] / med['moco']:5.1f} %")
    rest = med["moco"] - med["momentum update"] - med["enqueue"] - med["loss fwd+bwd"]
    print(f"  {'rest':<16} {rest * 1e3:8.2f} ms  {100 * rest / med['moco']:5.1f} %", end="")
    print("  (encoders, SGD, key shuffle)")
    it = med["moco"] + sum(med[p] for p in around)
    print(f"around the step (share of step + fetch + views = {it * 1e3:.1f} ms):")
    for p in around:
        print(f"  {p:<16} {med[p] * 1e3:8.2f} ms  {100 * med[p] / it:5.1f} %")


if __name__ == "__main__":
    main()
