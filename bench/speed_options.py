"""Each speed option of a MoCo step, on vs off, measured side by side in one run.

Method. One encoder, one batch of N pre-made views, K negatives. Every variant starts
from the same weights and runs ``moco.engine.step.train_step``; variants are timed
round-robin (one step of each per round, after warm-up rounds that also absorb
torch.compile's compilation), medians over ``--repeats``, so machine noise hits all
alike. Options:
  channels_last  encoders and views in NHWC memory format
  bf16           forward under torch.autocast(bfloat16) (no scaler needed)
  fp16           forward under autocast(float16) with a GradScaler (CUDA only)
  compile        torch.compile of the query and key encoders (Module.compile, so the
                 state_dict keys do not change)
  fused_sgd      torch.optim.SGD(fused=True): one kernel for the whole update
  malloc         glibc keeps freed memory in the process (moco.engine.host); toggled
                 before every step of every variant, so the others run with glibc's
                 defaults

Correctness. ``--check-steps`` trains each variant for that many steps from the same
start on real images (the bundled Fashion-MNIST subset, resized and channel-repeated
to the encoder's input) with the v2 augmentation, and reports the mean loss of the last
10 steps. The noise it is compared with is the spread of the baseline over
``--check-seeds`` augmentation seeds; each option runs with the first seed. An option
is kept on by default only where it wins and its loss stays within that spread.

    python bench/speed_options.py [--encoder default|cifar-r18|r50] [--device cuda]
"""

from __future__ import annotations

import moco  # noqa: F401  (first, as the CLI: idle OpenMP threads sleep; see moco/openmp.py)

# isort: split
import argparse
import contextlib
import copy
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from moco.core.moco import MoCo  # noqa: E402
from moco.encoders.resnet import build_encoder  # noqa: E402
from moco.engine.host import keep_freed_memory  # noqa: E402
from moco.engine.step import train_step  # noqa: E402
from step_ratio import DIM, ENCODERS, MOMENTUM, SGD, TAU, timer  # noqa: E402

OPTIONS = ("channels_last", "bf16", "fp16", "compile", "fused_sgd", "malloc")


@dataclass
class Variant:
    name: str
    model: MoCo
    optimizer: torch.optim.Optimizer
    amp: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    channels_last: bool
    malloc: bool

    def views(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def step(self, x_q: torch.Tensor, x_k: torch.Tensor) -> torch.Tensor:
        keep_freed_memory(self.malloc)
        out = train_step(
            self.model, self.optimizer, self.views(x_q), self.views(x_k), self.scaler, self.amp
        )
        return out.loss


def make_variant(name: str, base: MoCo, device: torch.device) -> Variant:
    model = copy.deepcopy(base).to(device).train()
    channels_last = name == "channels_last"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if name == "compile":
        model.encoder_q.compile()
        model.encoder_k.compile()
    extra: dict[str, Any] = {"fused": True} if name == "fused_sgd" else {}
    opt = torch.optim.SGD(model.encoder_q.parameters(), **SGD, **extra)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name)
    scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None
    return Variant(name, model, opt, amp, scaler, channels_last, name == "malloc")


def real_batches(shape: tuple[int, int, int], batch: int, device: torch.device) -> torch.Tensor:
    """The bundled images as uint8 (M, C, H, W) of the encoder's input shape."""
    from moco.data.sources import load_source

    images = load_source("bundled").train_images.float()
    c, h, w = shape
    images = torch.nn.functional.interpolate(images, size=(h, w), mode="bilinear")
    return images.round().clamp(0, 255).to(torch.uint8).expand(-1, c, -1, -1).to(device)


def loss_curve(v: Variant, images: torch.Tensor, batch: int, steps: int, seed: int) -> float:
    """Mean loss of the last 10 of ``steps`` training steps with v2 views (seeded)."""
    from moco.augment.views import PRESETS, build_view_transform

    c, h = images.shape[1], images.shape[2]
    views = build_view_transform(PRESETS["v2"], h, c, (0.5,) * c, (0.25,) * c).to(images.device)
    torch.manual_seed(seed)
    losses = []
    for s in range(steps):
        idx = torch.arange(s * batch, (s + 1) * batch, device=images.device) % len(images)
        x = images[idx]
        losses.append(v.step(views(x), views(x)).detach())
    return float(torch.stack(losses[-10:]).float().mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="default")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--queue", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--check-steps", type=int, default=60, help="0: skip the loss check")
    parser.add_argument("--check-seeds", type=int, default=3, help="baseline seeds (noise)")
    parser.add_argument("--options", default=",".join(OPTIONS), help="comma-separated subset")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    options = [o for o in args.options.split(",") if o]
    if device.type != "cuda" and "fp16" in options:
        options.remove("fp16")  # fp16 autocast with a scaler is a CUDA feature
    kwargs, shape = ENCODERS[args.encoder]
    torch.manual_seed(0)
    base = MoCo(build_encoder(dim=DIM, **kwargs), DIM, args.queue, MOMENTUM, TAU)
    x_q = torch.randn(args.batch, *shape, device=device)
    x_k = torch.randn(args.batch, *shape, device=device)

    names = ["baseline", *options]
    variants = {n: make_variant(n, base, device) for n in names}
    time_it = timer(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.warmup + args.repeats):
        for n, v in variants.items():
            t = time_it(lambda v=v: v.step(x_q, x_k), 1)  # type: ignore[misc]
            if r >= args.warmup:
                times[n].append(t)
    med = {n: statistics.median(ts) for n, ts in times.items()}

    print(f"encoder {args.encoder} {shape}, N={args.batch}, K={args.queue}, ", end="")
    print(f"device={device}, ", end="")
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, repeats={args.repeats}")
    check: dict[str, float] = {}
    spread = 0.0
    if args.check_steps > 0:
        images = real_batches(shape, args.batch, device)
        run = lambda n, seed: loss_curve(  # noqa: E731
            make_variant(n, base, device), images, args.batch, args.check_steps, seed
        )
        seeds = [run("baseline", seed) for seed in range(args.check_seeds)]
        spread = max(seeds) - min(seeds)
        check["baseline"] = seeds[0]
        for n in options:
            check[n] = run(n, 0)
    print(f"{'option':<14} {'step ms':>9} {'off/on speed-up':>16}  {'loss (last 10)':>15}")
    for n in names:
        speed = med["baseline"] / med[n]
        loss = f"{check[n]:.4f}" if n in check else "-"
        print(f"{n:<14} {med[n] * 1e3:9.1f} {speed:15.2f}x  {loss:>15}")
    if check:
        print(
            f"loss after {args.check_steps} steps on real images: baseline over "
            f"{args.check_seeds} seeds {min(seeds):.4f}-{max(seeds):.4f} (spread {spread:.4f}); "
            "an option within that spread of the seed-0 baseline trains the same"
        )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
