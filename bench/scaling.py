"""How a MoCo step's cost grows with the queue size K, the batch N and the image size.

Method. For each sweep, one model per setting, all built from the same weights; the
settings are timed round-robin (one ``train_step`` of each per round, after warm-up
rounds), medians over ``--repeats``, so noise hits every setting alike.
  K      N fixed, K in --queues. The only per-step work that grows with K is the
         (N, K) logits against the queue, fwd and bwd, the method's own arithmetic
         (2 N C K flops each way); it is timed in isolation next to the step, so
         "step - logits" shows whether anything else (a per-step copy of the queue,
         say) grows with K. Flat means within 5 % of the K = --queues[0] step.
  N      K fixed, N in --batches: ms per image (constant when the step is compute
         bound) and the marginal peak memory per image (CUDA: peak allocated; CPU:
         growth of the process's peak RSS between batch sizes, run in increasing N).
  size   the default encoder on square images of --sizes pixels.

    python bench/scaling.py [--encoder default|cifar-r18|r50] [--device cuda]
"""

from __future__ import annotations

import moco  # noqa: F401  (first, as the CLI: idle OpenMP threads sleep; see moco/openmp.py)

# isort: split
import argparse
import copy
import resource
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from moco.core.losses import info_nce  # noqa: E402
from moco.core.moco import MoCo  # noqa: E402
from moco.encoders.resnet import build_encoder  # noqa: E402
from moco.engine.host import keep_freed_memory  # noqa: E402
from moco.engine.step import train_step  # noqa: E402
from step_ratio import DIM, ENCODERS, MOMENTUM, SGD, TAU, timer  # noqa: E402


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def step_fn(model: MoCo, x_q: torch.Tensor, x_k: torch.Tensor):  # type: ignore[no-untyped-def]
    opt = torch.optim.SGD(model.encoder_q.parameters(), **SGD)
    return lambda: train_step(model, opt, x_q, x_k)


def round_robin(fns: dict[object, object], device: torch.device, warmup: int, repeats: int):  # type: ignore[no-untyped-def]
    time_it = timer(device)
    times: dict[object, list[float]] = {k: [] for k in fns}
    for r in range(warmup + repeats):
        for k, fn in fns.items():
            t = time_it(fn, 1)  # type: ignore[arg-type]
            if r >= warmup:
                times[k].append(t)
    return {k: statistics.median(ts) for k, ts in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="default")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--queues", default="4096,16384,65536")
    parser.add_argument("--batches", default="64,128,256")
    parser.add_argument("--sizes", default="28,56,84")
    parser.add_argument("--sweeps", default="K,N,size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as training does on CPU (engine/host.py)
    device = torch.device(args.device)
    kwargs, shape = ENCODERS[args.encoder]
    torch.manual_seed(0)
    encoder = build_encoder(dim=DIM, **kwargs)
    sweeps = args.sweeps.split(",")
    print(f"encoder {args.encoder} {shape}, device={device}, torch {torch.__version__}, ", end="")
    print(f"threads={torch.get_num_threads()}, repeats={args.repeats} (+{args.warmup} warm-up)")

    if "K" in sweeps:
        queues = [int(k) for k in args.queues.split(",")]
        n = args.batch
        x_q, x_k = (torch.randn(n, *shape, device=device) for _ in range(2))
        steps = {
            k: step_fn(MoCo(copy.deepcopy(encoder), DIM, k, MOMENTUM, TAU).to(device), x_q, x_k)
            for k in queues
        }
        q = F.normalize(torch.randn(n, DIM, device=device), dim=1).requires_grad_()
        keys = F.normalize(torch.randn(n, DIM, device=device), dim=1)
        negs = {k: F.normalize(torch.randn(DIM, k, device=device), dim=0) for k in queues}

        def logits(k: int):  # type: ignore[no-untyped-def]
            def run() -> None:
                info_nce(q, keys, negs[k], TAU).loss.backward()
                q.grad = None

            return run

        fns: dict[object, object] = {**steps, **{("loss", k): logits(k) for k in queues}}
        med = round_robin(fns, device, args.warmup, args.repeats)
        base = med[queues[0]]
        print(f"\nK sweep, N={n}:  K   step ms  vs K0   logits fwd+bwd ms   step - logits  vs K0")
        base_rest = base - med[("loss", queues[0])]
        for k in queues:
            rest = med[k] - med[("loss", k)]
            print(
                f"{k:>21} {med[k] * 1e3:9.1f} {med[k] / base:6.3f} {med[('loss', k)] * 1e3:14.1f}"
                f" {rest * 1e3:15.1f} {rest / base_rest:6.3f}"
            )

    if "N" in sweeps:
        batches = sorted(int(b) for b in args.batches.split(","))
        med_n: dict[int, float] = {}
        mem: dict[int, int] = {}
        for n in batches:  # increasing N: the peak only grows
            x_q, x_k = (torch.randn(n, *shape, device=device) for _ in range(2))
            model = MoCo(copy.deepcopy(encoder), DIM, 4096, MOMENTUM, TAU).to(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            med_n[n] = round_robin(
                {n: step_fn(model, x_q, x_k)}, device, args.warmup, args.repeats
            )[n]
            mem[n] = peak_bytes(device)
        print("\nN sweep, K=4096:  N   step ms   ms/image   marginal peak MiB/image")
        for i, n in enumerate(batches):
            marg = "-"
            if i > 0:
                d = (mem[n] - mem[batches[i - 1]]) / (n - batches[i - 1]) / 2**20
                marg = f"{d:.2f}"
            print(f"{n:>18} {med_n[n] * 1e3:9.1f} {med_n[n] * 1e3 / n:10.3f} {marg:>12}")

    if "size" in sweeps and args.encoder == "default":
        sizes = [int(s) for s in args.sizes.split(",")]
        n = args.batch
        fns = {}
        for s in sizes:
            x_q, x_k = (torch.randn(n, shape[0], s, s, device=device) for _ in range(2))
            fns[s] = step_fn(
                MoCo(copy.deepcopy(encoder), DIM, 4096, MOMENTUM, TAU).to(device), x_q, x_k
            )
        med = round_robin(fns, device, args.warmup, args.repeats)
        print(f"\nimage size sweep, N={n}, K=4096: side  step ms  vs pixels of the first")
        for s in sizes:
            px = (s / sizes[0]) ** 2
            print(f"{s:>38} {med[s] * 1e3:8.1f} {med[s] / med[sizes[0]]:6.2f}x  (pixels {px:.1f}x)")


if __name__ == "__main__":
    main()
