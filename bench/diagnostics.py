"""Cost of the run-health diagnostics (docs/run-health.md) as a share of training time.

Method. The default preset's encoder (ResNet-18 x0.25, CIFAR stem, MLP head, 8 BN
splits), MoCo with K = 1024, N = 64 pre-made 28x28 views (augmentation excluded, so the
share is of the step alone, an upper bound of the share of the loop). One timed round is
two blocks of ``--log-every`` steps of ``moco.engine.step.train_step``, back to back in
the same process on the same model:
  A  plain steps (``run.diagnostics=false``);
  B  the same steps, the last one measured as the loop measures a logged step:
     ``health.measure_step`` in train_step's ``inspect`` (after the optimiser step,
     before the enqueue), the values read to the host in one copy, the method's state
     values and the step detectors.
  C  the measuring alone (measure_step and the read-back), ``--inner`` calls on the
     last step's output, timed in the same round: C / (log_every x the plain step) is
     the same share, free of the step's own noise (the better figure on a busy CPU).
The order of A and B alternates round by round, so drift of the machine hits both
alike; the report is the median over ``--repeats`` of B / A - 1 and of C's share.

    python bench/diagnostics.py [--repeats 15] [--log-every 10] [--threads 1]
"""

from __future__ import annotations

import moco  # noqa: F401  (first, as the CLI: idle OpenMP threads sleep; see moco/openmp.py)

# isort: split
import argparse
import statistics
import time

import torch

from moco.core.method import StepOutput
from moco.core.moco import MoCo
from moco.encoders.resnet import build_encoder
from moco.engine import health
from moco.engine.host import keep_freed_memory
from moco.engine.step import train_step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (medians)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--log-every", type=int, default=10, help="run.log_every (default 10)")
    parser.add_argument("--inner", type=int, default=5, help="calls per timing of C")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--queue", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's)")
    parser.add_argument("--amp", choices=["none", "bf16"], default="none")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    torch.manual_seed(0)
    enc = build_encoder("resnet18", 128, mlp=True, cifar_stem=True, in_chans=1, width=0.25,
                        bn_splits=8)  # fmt: skip
    model = MoCo(enc, 128, args.queue, 0.99, 0.2).train()
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.015, momentum=0.9,
                          weight_decay=5e-4)  # fmt: skip
    trainable = [p for p in model.parameters() if p.requires_grad]
    x_q, x_k = torch.randn(args.batch, 1, 28, 28), torch.randn(args.batch, 1, 28, 28)
    amp = torch.bfloat16 if args.amp == "bf16" else None
    detectors = health.Detectors({})
    step_count = [0]

    def plain_block() -> None:
        for _ in range(args.log_every):
            train_step(model, opt, x_q, x_k, amp_dtype=amp)
            step_count[0] += 1

    diag: dict[str, torch.Tensor] = {}

    def inspect(out: StepOutput) -> None:
        diag.update(health.measure_step(model, out, trainable))

    def measured_block() -> None:
        for i in range(args.log_every):
            last = i == args.log_every - 1
            out = train_step(model, opt, x_q, x_k, amp_dtype=amp, inspect=inspect if last else None)
            step_count[0] += 1
        last_out[:] = [out]
        values = health.read(diag)
        values |= health.state_values(model, step_count[0], len(out.k), 78, 5000)
        values |= {"loss_chance": model.chance_loss(args.batch)}
        detectors.at_log(values, 2.0)
        diag.clear()

    last_out: list[StepOutput] = []

    def measure_alone() -> None:
        for _ in range(args.inner):
            health.read(health.measure_step(model, last_out[0], trainable))

    def time_it(fn: object) -> float:
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        return time.perf_counter() - t0

    ratios, plain, measured, alone = [], [], [], []
    for r in range(args.warmup + args.repeats):
        if r % 2 == 0:
            a, b = time_it(plain_block), time_it(measured_block)
        else:
            b, a = time_it(measured_block), time_it(plain_block)
        if r >= args.warmup:
            ratios.append(b / a - 1)
            plain.append(a / args.log_every)
            measured.append(b - a)
            alone.append(time_it(measure_alone) / args.inner / a)
    step = statistics.median(plain)
    print(f"setup     default encoder, N={args.batch}, K={args.queue}, amp={args.amp}, "
          f"threads={torch.get_num_threads()}, log_every={args.log_every}, "
          f"repeats={args.repeats} (+{args.warmup} warm-up)")  # fmt: skip
    print(f"step      {step * 1e3:8.1f} ms (median, plain)")
    print(f"measuring {statistics.median(measured) * 1e3:8.1f} ms a logged step (median of B - A)")
    lo, hi = min(ratios), max(ratios)
    print(f"overhead  {statistics.median(ratios):+.2%} of training time (median of B/A - 1; "
          f"range {lo:+.2%} .. {hi:+.2%})")  # fmt: skip
    c = statistics.median(alone)
    print(f"isolated  {c:+.2%} of training time (median of C / A: measuring alone, "
          f"{c * step * args.log_every * 1e3:.1f} ms a logged step)")  # fmt: skip


if __name__ == "__main__":
    main()
