"""The measurements of the one-shot GPU check (``scripts/gpu_check.sh``), one subcommand
each. Every subcommand prints its figures and the decision they inform (issue 17, items
5 and 7); none changes the library's behaviour. Figures from ``--device cpu`` (the
check's dry run) show only that the code runs.

    python scripts/gpu_probe.py versions
    python scripts/gpu_probe.py sync-audit --amp auto      # host syncs of the training loop
    python scripts/gpu_probe.py tf32 --encoder r50         # fp32 matmul / conv precision
    python scripts/gpu_probe.py cudnn-benchmark --encoder r50
    python scripts/gpu_probe.py lars --encoder r50         # LARS' per-parameter loop
    python scripts/gpu_probe.py scaler --encoder r50       # fp16 GradScaler syncs
    python scripts/gpu_probe.py compile-ddp --encoder r50  # torch.compile before / after DDP
    python scripts/gpu_probe.py epochs                     # one epoch of each variant
    python scripts/gpu_probe.py tf32,lars --limit 60       # several, 60 s at most each

Several comma-separated commands run in one process (one start-up), each stopped after
``--limit`` seconds; a command that fails or runs out of time is reported and the next
one runs. The exit status is 1 when any failed.

Method (timings): one encoder from ``bench/step_ratio.py``'s ENCODERS in a MoCo model, one
batch of N random images, each variant from the same weights; variants timed round-robin,
one step each per round after ``--warmup`` rounds, medians over ``--repeats``, CUDA
synchronised around each step.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import sys
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from moco.core.moco import MoCo  # noqa: E402
from moco.encoders.resnet import build_encoder  # noqa: E402
from moco.engine.step import train_step  # noqa: E402
from step_ratio import DIM, ENCODERS, MOMENTUM, SGD, TAU, timer  # noqa: E402


def model_and_batch(
    args: argparse.Namespace, device: torch.device
) -> tuple[MoCo, torch.Tensor, torch.Tensor]:
    kwargs, shape = ENCODERS[args.encoder]
    torch.manual_seed(0)
    model = MoCo(build_encoder(dim=DIM, **kwargs), DIM, args.queue, MOMENTUM, TAU)
    x_q = torch.randn(args.batch, *shape, device=device)
    x_k = torch.randn(args.batch, *shape, device=device)
    return model.to(device).train(), x_q, x_k


def native_amp(device: torch.device) -> torch.dtype | None:
    from moco.device import amp_dtype, resolve_amp

    return amp_dtype(resolve_amp("auto", device))


def round_robin(
    steps: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> dict[str, float]:
    """Median seconds per call of each of ``steps``, timed in turn, round by round."""
    time_it = timer(device)
    times: dict[str, list[float]] = {n: [] for n in steps}
    for r in range(warmup + repeats):
        for n, fn in steps.items():
            t = time_it(fn, 1)
            if r >= warmup:
                times[n].append(t)
    return {n: statistics.median(ts) for n, ts in times.items()}


def table(med: dict[str, float], base: str, extra: dict[str, str] | None = None) -> None:
    for n, t in med.items():
        note = f"  {extra[n]}" if extra and n in extra else ""
        print(f"  {n:<28} {t * 1e3:9.2f} ms   {med[base] / t:5.2f}x of {base}{note}")


@contextlib.contextmanager
def sync_warnings(device: torch.device) -> Iterator[Counter[str]]:
    """Count the host syncs made inside (``torch.cuda.set_sync_debug_mode('warn')``), keyed
    by the innermost frame in moco (or the caller's frame) and the torch frame below it."""
    found: Counter[str] = Counter()
    if device.type != "cuda":
        yield found  # the sync debug mode exists for CUDA only
        return

    def record(message: Any, category: Any, filename: str, lineno: int, *a: Any) -> None:
        if "synchronizing" not in str(message):
            return
        frames = traceback.extract_stack()[:-1]
        ours = [f for f in frames if "/moco/" in f.filename or "/bench/" in f.filename]
        where = f"{ours[-1].filename.split('/src/')[-1]}:{ours[-1].lineno}" if ours else "?"
        found[f"{where} <- {Path(filename).name}:{lineno}"] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        previous = warnings.showwarning
        warnings.showwarning = record  # type: ignore[assignment]
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = previous


# ----------------------------------------------------------------------- subcommands


def versions(args: argparse.Namespace, device: torch.device) -> None:
    """What the machine runs, and whether amp=auto takes bf16 there (item 5)."""
    import platform

    import moco
    from moco.device import fast_bf16, resolve_amp

    print(f"  python {platform.python_version()}, torch {torch.__version__}, ", end="")
    print(f"moco {moco.__version__}")
    for name in ("torchvision", "kornia", "omegaconf", "timm", "numpy"):
        try:
            module = __import__(name)
            print(f"  {name} {getattr(module, '__version__', '?')}")
        except ImportError as err:
            print(f"  {name}: missing ({err})")
    print(f"  CUDA available: {torch.cuda.is_available()}, devices: {torch.cuda.device_count()}")
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        cap = torch.cuda.get_device_capability(device)
        print(f"  {p.name}: capability {cap[0]}.{cap[1]}, {p.total_memory / 2**30:.1f} GiB")
        print(f"  CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, ", end="")
        print(f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}")
        print(f"  torch.cuda.is_bf16_supported(): {torch.cuda.is_bf16_supported()}")
    print(f"  native bf16 (moco.device.fast_bf16): {fast_bf16(device)}")
    print(f"  optim.amp=auto runs as: {resolve_amp('auto', device)}")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    print(f"  TF32 defaults: matmul {tf32[0]}, cuDNN conv {tf32[1]}; ", end="")
    print(f"cudnn.benchmark {torch.backends.cudnn.benchmark}")


def sync_audit(args: argparse.Namespace, device: torch.device) -> None:
    """Host syncs of whole training epochs (the real loop: moco.engine.train.pretrain,
    monitor off), by place. The loop's own syncs are its log points (every run.log_every
    steps), the epoch's end and the checkpoint; anything counted once per step is a sync
    to remove."""
    from moco.config.schema import load_config
    from moco.engine.train import pretrain

    for amp in args.amp.split(","):
        out = Path(args.out) / f"sync-{amp}"
        overrides = [
            f"run.device={device}", f"optim.amp={amp}", "optim.epochs=1", "eval.knn_every=0",
            "run.progress=false", "run.log_every=1000000", f"run.out_dir={out}",
            "run.name=audit", *args.override,
        ]  # fmt: skip
        cfg = load_config(args.preset, overrides)
        with sync_warnings(device) as found:
            result = pretrain(cfg)
        steps = int(__import__("json").loads((result.run_dir / "derived.json").read_text())[
            "steps_per_epoch"
        ])  # fmt: skip
        total = sum(found.values())
        print(f"  amp={amp}: {total} host syncs in one epoch of {steps} steps ", end="")
        print(f"({total / max(steps, 1):.2f} a step)")
        for where, n in found.most_common(12):
            flag = "  <- every step" if n >= steps else ""
            print(f"    {n:6d}  {where}{flag}")
        if device.type != "cuda":
            print("    (no CUDA: the epoch ran, the sync debug mode exists on CUDA only)")
    print("  decide: remove each per-step sync that is not a log point (scaler: see 'scaler')")


def tf32(args: argparse.Namespace, device: torch.device) -> None:
    """fp32 training step (optim.amp=none) with the fp32 matmul / conv precisions."""
    base, x_q, x_k = model_and_batch(args, device)
    settings = {
        "fp32 (matmul+conv IEEE)": ("highest", False),
        "torch default (conv TF32)": ("highest", True),
        "TF32 matmul+conv": ("high", True),
    }
    models, losses = {}, {}
    for name in settings:
        m = copy.deepcopy(base)
        models[name] = (m, torch.optim.SGD(m.encoder_q.parameters(), **SGD))

    def step(name: str) -> Callable[[], object]:
        def run() -> object:
            precision, conv = settings[name]
            torch.set_float32_matmul_precision(precision)
            torch.backends.cudnn.allow_tf32 = conv
            m, opt = models[name]
            losses[name] = train_step(m, opt, x_q, x_k).loss.detach()
            return losses[name]

        return run

    med = round_robin({n: step(n) for n in settings}, device, args.warmup, args.repeats)
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = True
    table(med, "torch default (conv TF32)", {n: f"loss {float(v):.5f}" for n, v in losses.items()})
    print("  decide: set float32_matmul_precision('high') for amp=none runs if TF32 wins and "
          "the losses stay within the seeds' spread (bench/speed_options.py's check)")  # fmt: skip


def cudnn_benchmark(args: argparse.Namespace, device: torch.device) -> None:
    """cudnn.benchmark off / on: the inputs of a run have one shape (fixed crops)."""
    base, x_q, x_k = model_and_batch(args, device)
    dtype = native_amp(device)
    runs: dict[str, Callable[[], object]] = {}
    for flag in (False, True):
        m = copy.deepcopy(base)
        opt = torch.optim.SGD(m.encoder_q.parameters(), **SGD)

        def run(m: MoCo = m, opt: torch.optim.Optimizer = opt, flag: bool = flag) -> object:
            torch.backends.cudnn.benchmark = flag
            return train_step(m, opt, x_q, x_k, amp_dtype=dtype)

        runs[f"benchmark={flag} amp={dtype}"] = run
    med = round_robin(runs, device, args.warmup + 2, args.repeats)  # + autotuning rounds
    torch.backends.cudnn.benchmark = False
    table(med, f"benchmark=False amp={dtype}")
    print("  decide: set torch.backends.cudnn.benchmark=True in the engine on CUDA (fixed "
          "shapes; the last batch is dropped) if it wins")  # fmt: skip


def lars(args: argparse.Namespace, device: torch.device) -> None:
    """The optimiser step alone on the encoder's parameters with gradients: LARS' Python
    loop over parameters against SGD (foreach) and fused SGD; and its kernel count."""
    from moco.engine.optim import build_optimizer

    model, x_q, x_k = model_and_batch(args, device)
    train_step(model, torch.optim.SGD(model.encoder_q.parameters(), lr=0.0), x_q, x_k)
    named = list(model.encoder_q.named_parameters())
    grads = [p.grad for _, p in named]
    assert all(g is not None for g in grads)
    opts: dict[str, torch.optim.Optimizer] = {
        "sgd (foreach)": build_optimizer(named, "sgd", 0.1, 0.9, 1e-4),
        "lars": build_optimizer(named, "lars", 0.1, 0.9, 1e-6),
    }
    if device.type == "cuda":
        opts["sgd fused"] = torch.optim.SGD([p for _, p in named], lr=0.1, momentum=0.9,
                                            weight_decay=1e-4, fused=True)  # fmt: skip
    med = round_robin({n: o.step for n, o in opts.items()}, device, args.warmup, args.repeats)
    kernels = {n: count_kernels(o.step, device) for n, o in opts.items()}
    whole = round_robin(
        {"step": lambda: train_step(model, opts["sgd (foreach)"], x_q, x_k)},
        device, args.warmup, args.repeats,
    )["step"]  # fmt: skip
    table(med, "sgd (foreach)", {n: f"{kernels[n]} kernels/ops" for n in opts})
    print(f"  {len(named)} parameter tensors; a whole SGD training step: {whole * 1e3:.2f} ms; "
          f"LARS' step is {med['lars'] / whole:.1%} of it")  # fmt: skip
    print("  decide: vectorise LARS (torch._foreach_norm / _foreach_mul_) if that share "
          "matters (SimCLR / MoCo v3 ResNet presets)")  # fmt: skip


def count_kernels(fn: Callable[[], object], device: torch.device) -> int:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    kind = "cuda" if device.type == "cuda" else "cpu"
    return sum(
        e.count
        for e in prof.key_averages()
        if str(getattr(e, "device_type", "")).lower().endswith(kind)
    )


def scaler(args: argparse.Namespace, device: torch.device) -> None:
    """fp16 with a GradScaler: host syncs and time per step, SGD foreach against fused
    SGD (which reads the scale and found-inf on the device, with no .item())."""
    base, x_q, x_k = model_and_batch(args, device)
    extras: dict[str, dict[str, Any]] = {"sgd (foreach)": {}}
    if device.type == "cuda":
        extras["sgd fused"] = {"fused": True}
    parts: dict[str, tuple[MoCo, torch.optim.Optimizer, torch.amp.GradScaler]] = {}
    for n, extra in extras.items():
        m = copy.deepcopy(base)
        opt = torch.optim.SGD(m.encoder_q.parameters(), **SGD, **extra)
        parts[n] = (m, opt, torch.amp.GradScaler(device.type))

    def step(n: str) -> Callable[[], object]:
        m, opt, sc = parts[n]
        return lambda: train_step(m, opt, x_q, x_k, sc, torch.float16)

    med = round_robin({n: step(n) for n in parts}, device, args.warmup, args.repeats)
    syncs = {}
    for n in parts:
        with sync_warnings(device) as found:
            for _ in range(3):
                step(n)()
        syncs[n] = f"{sum(found.values()) / 3:.1f} syncs/step" + (
            f" at {found.most_common(1)[0][0]}" if found else ""
        )
    table(med, "sgd (foreach)", syncs)
    print("  decide: fused SGD under fp16 if it removes the per-step sync and wins "
          "(bench/speed_options.py's fused_sgd checks the loss)")  # fmt: skip


def compile_ddp(args: argparse.Namespace, device: torch.device) -> None:
    """torch.compile of the query encoder before DDP wraps it (the engine's order today)
    against compiling the DDP wrapper (DDPOptimizer splits the graph at bucket
    boundaries so backward overlaps the all-reduce). On one process the all-reduce is
    trivial: this checks that both run and what each costs to compile; the overlap
    itself needs 2 or more GPUs (the same script under torchrun)."""
    import inspect
    import time

    import torch.distributed as torch_dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    if not torch_dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend, rank=0, world_size=1)
    base, x_q, x_k = model_and_batch(args, device)
    ids = [device.index or 0] if device.type == "cuda" else None
    # as moco.dist.data_parallel: newer torch renames broadcast_buffers
    key = (
        "forward_sync_buffers"
        if "forward_sync_buffers" in inspect.signature(DDP).parameters
        else "broadcast_buffers"
    )
    ddp_options = {key: False}
    dtype = native_amp(device)
    runs: dict[str, Callable[[], object]] = {}
    first: dict[str, float] = {}
    for order in ("compile, then DDP", "DDP, then compile"):
        m = copy.deepcopy(base)
        if order.startswith("compile"):
            m.encoder_q.compile(backend=args.backend)
            online = DDP(m.encoder_q, device_ids=ids, **ddp_options)
        else:
            wrapped = DDP(m.encoder_q, device_ids=ids, **ddp_options)
            online = torch.compile(wrapped, backend=args.backend)  # type: ignore[assignment]
        opt = torch.optim.SGD(m.encoder_q.parameters(), **SGD)

        def run(m: MoCo = m, opt: torch.optim.Optimizer = opt, online: Any = online) -> object:
            return train_step(m, opt, x_q, x_k, amp_dtype=dtype, online={"encoder_q": online})

        t0 = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        first[order] = time.perf_counter() - t0
        runs[order] = run
    med = round_robin(runs, device, args.warmup, args.repeats)
    notes = {n: f"first step (compiles) {t:.1f} s" for n, t in first.items()}
    table(med, "compile, then DDP", notes)
    torch_dist.destroy_process_group()
    print("  decide: compile after wrapping in DDP if it runs and is not slower here; "
          "measure the overlap on 2+ GPUs (torchrun) before changing engine/train.py")  # fmt: skip


# One epoch of each: (preset, overrides) over the check's common overrides (--override).
# The variants of the default preset change one setting; moco_v3 and simclr are their
# small presets; the ViT is MoCo v3's on 28 px images (patches of 7).
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "fp16": ("default", ["optim.amp=fp16"]),
    "fp32": ("default", ["optim.amp=none"]),
    "channels_last": ("default", ["run.channels_last=true"]),
    "symmetric": ("default", ["model.symmetric=true"]),
    "end_to_end": ("default", ["model.method=end_to_end"]),
    "memory_bank": ("default", ["model.method=memory_bank"]),
    "moco_v3": ("moco_v3_small", []),
    "simclr": ("simclr_small", []),
    "vit": ("moco_v3_small", ["model.arch=vit_tiny", "model.width=1.0", "model.patch_size=7"]),
    # last: compiling takes longest, and --limit may not stop it (inductor's compile
    # workers hold the main thread)
    "compile": ("default", ["run.compile=true"]),
}


def epochs(args: argparse.Namespace, device: torch.device) -> None:
    """One epoch of each variant (``--only``: a subset) through the library's pretrain
    (kNN monitor at epochs 0 and 1), each stopped after ``--limit`` seconds; a failure
    is printed and the next variant runs."""
    import json
    import time

    from moco import pretrain
    from moco.config.schema import load_config
    from moco.engine.metrics import read_metrics

    names = args.only.split(",") if args.only else list(VARIANTS)
    failed = []
    for name in names:
        preset, extra = VARIANTS[name]
        if "optim.amp=fp16" in extra and device.type != "cuda":
            print(f"  {name:<14} skipped: CUDA only")
            continue
        overrides = [
            f"run.device={device}", "optim.epochs=1", "eval.knn_every=1", "run.progress=false",
            f"run.out_dir={Path(args.out) / 'epochs'}", f"run.name={name}", *args.override,
            *extra,
        ]  # fmt: skip
        t0 = time.perf_counter()
        try:
            with time_limit(args.limit):
                result = pretrain(load_config(preset, overrides))
        except Exception as err:  # noqa: BLE001 - reported; the next variant runs
            failed.append(name)
            first = str(err).splitlines()[0] if str(err) else ""
            took = time.perf_counter() - t0
            print(f"  {name:<14} FAILED after {took:.1f} s: {type(err).__name__}: {first}")
            traceback.print_exc(limit=-3)
            continue
        derived = json.loads((result.run_dir / "derived.json").read_text())
        train = [r for r in read_metrics(result.run_dir) if r["kind"] == "train"]
        loss = train[-1]["loss"] if train else float("nan")
        ips = train[-1].get("images_per_s", float("nan")) if train else float("nan")
        print(f"  {name:<14} ok {time.perf_counter() - t0:6.1f} s  amp {derived['amp']:<4} "
              f"loss {loss:.4f}  kNN {result.knn_top1_init:.3f} -> {result.knn_top1:.3f}  "
              f"{ips:.0f} img/s")  # fmt: skip
    if failed:
        raise RuntimeError(f"variants failed: {', '.join(failed)}")


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (0: no limit)."""
    import signal

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"stopped after the {seconds:.0f} s limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


COMMANDS: dict[str, Callable[[argparse.Namespace, torch.device], None]] = {
    "versions": versions,
    "sync-audit": sync_audit,
    "tf32": tf32,
    "cudnn-benchmark": cudnn_benchmark,
    "lars": lars,
    "scaler": scaler,
    "compile-ddp": compile_ddp,
    "epochs": epochs,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commands", help=f"comma-separated: {', '.join(COMMANDS)}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="r50")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--queue", type=int, default=65536)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--amp", default="auto,fp16", help="sync-audit: optim.amp values")
    parser.add_argument("--preset", default="default", help="sync-audit: the preset")
    parser.add_argument("--override", action="append", default=[], help="sync-audit: KEY=V")
    parser.add_argument("--out", default="gpu_check_runs", help="sync-audit: run directory")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--limit", type=float, default=0, help="seconds per command (0: none)")
    parser.add_argument("--only", default="", help="epochs: comma-separated variants")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    commands = [c for c in args.commands.split(",") if c]
    unknown = sorted(set(commands) - set(COMMANDS))
    if unknown or any(v not in VARIANTS for v in args.only.split(",") if v):
        parser.error(f"unknown: {unknown or args.only}; commands {', '.join(COMMANDS)}, "
                     f"variants {', '.join(VARIANTS)}")  # fmt: skip
    failed = []
    for command in commands:
        sizes = f", encoder {args.encoder}, N={args.batch}, K={args.queue}"
        timed = command not in ("versions", "sync-audit", "epochs")
        print(f"[{command}] device {device}{sizes if timed else ''}, torch {torch.__version__}")
        try:
            limit = 0 if command == "epochs" else args.limit  # epochs: a limit per variant
            with time_limit(limit):
                COMMANDS[command](args, device)
        except Exception:  # noqa: BLE001 - reported; the next command runs
            failed.append(command)
            traceback.print_exc()
        sys.stdout.flush()
    if failed:
        print(f"failed: {', '.join(failed)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
