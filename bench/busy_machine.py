"""A training step on a quiet machine and on one whose every core is busy elsewhere.

Method. Each setting (thread count and OpenMP wait policy) runs in its own child process,
because the OpenMP runtime reads ``OMP_WAIT_POLICY`` once, when torch loads it. A child
builds the default preset's model (or ``--preset``) and times ``train_step`` on two
random batches: ``--warmup`` untimed steps, then steps until ``--steps`` are timed or
``--budget`` seconds have passed; it reports the median wall and process-CPU time of a
step. "loaded" starts one busy-looping process per core for the child's lifetime
("quiet" none). Settings and conditions are interleaved over ``--rounds`` rounds and
the report gives medians over rounds, each against the quiet single-thread step.

Settings: ``spin``: the OpenMP runtime's default (idle threads spin, GNU OpenMP: 300,000
rounds, before they sleep; set explicitly as ``GOMP_SPINCOUNT=300000``), ``passive``:
``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once), ``spinNk``:
``GOMP_SPINCOUNT=N000`` (spin that many rounds, then sleep), ``moco``: nothing set, so
importing moco chooses by how busy the machine is (``moco/openmp.py``); with 1 thread
or every core. Each child imports moco first, as the ``moco`` command does.

    python bench/busy_machine.py                  # default preset, 2 rounds
    python bench/busy_machine.py --rounds 3 --steps 12
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS: dict[str, tuple[int, dict[str, str]]] = {  # name -> (threads, 0: all; env)
    "spin-1thread": (1, {"GOMP_SPINCOUNT": "300000"}),
    "passive-1thread": (1, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "spin-allcores": (0, {"GOMP_SPINCOUNT": "300000"}),
    "passive-allcores": (0, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "moco-allcores": (0, {}),  # what importing moco chooses for the machine it finds
    "spin1k-allcores": (0, {"GOMP_SPINCOUNT": "1000"}),
    "spin3k-allcores": (0, {"GOMP_SPINCOUNT": "3000"}),
    "spin10k-allcores": (0, {"GOMP_SPINCOUNT": "10000"}),
    "spin100k-allcores": (0, {"GOMP_SPINCOUNT": "100000"}),
}


def child(args: argparse.Namespace) -> None:
    import moco  # noqa: F401  (first, as the CLI: the wait policy, unless the env set one)

    # isort: split
    import torch  # loaded here, after the environment and moco chose the policy

    from moco.config import load_config
    from moco.engine.build import build_model
    from moco.engine.step import train_step

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.preset)
    m, o = cfg.model, cfg.optim
    size, chans = cfg.augment.size, 1 if args.preset == "default" else 3
    torch.manual_seed(0)
    model = build_model(cfg, chans).train()
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=o.lr, momentum=o.momentum)
    x_q = torch.randn(o.batch_size, chans, size, size)
    x_k = torch.randn(o.batch_size, chans, size, size)
    del m
    for _ in range(args.warmup):
        train_step(model, opt, x_q, x_k)
    wall, cpu = [], []
    start = time.perf_counter()
    while len(wall) < args.steps and time.perf_counter() - start < args.budget:
        c0, t0 = time.process_time(), time.perf_counter()
        train_step(model, opt, x_q, x_k)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out = {
        "wall": statistics.median(wall),
        "cpu": statistics.median(cpu),
        "steps": len(wall),
        "threads": torch.get_num_threads(),
        "policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "spincount": os.environ.get("GOMP_SPINCOUNT", "(unset)"),
    }
    print(json.dumps(out))


def run_child(args: argparse.Namespace, threads: int, extra: dict[str, str], loaded: bool) -> dict:
    unset = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(extra)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--threads", str(threads)]
    cmd += ["--preset", args.preset, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--budget", str(args.budget)]
    hogs = []
    if loaded:
        spin = "while True: pass"
        hogs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 1)]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per child")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per child")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds of timed steps")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated")
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    names = args.settings.split(",")
    results: dict[tuple[str, bool], list[dict]] = {}
    print(f"preset {args.preset}, {os.cpu_count()} cores, {args.rounds} rounds", flush=True)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for loaded in (False, True) if r % 2 == 0 else (True, False):
            for name in order:
                threads, extra = SETTINGS[name]
                res = run_child(args, threads, extra, loaded)
                results.setdefault((name, loaded), []).append(res)
                cond = "loaded" if loaded else "quiet"
                print(f"  round {r} {cond:<6} {name:<20} {res['wall'] * 1e3:8.1f} ms", flush=True)
    ref_key = ("passive-1thread", False) if "passive-1thread" in names else (names[0], False)
    ref = statistics.median(x["wall"] for x in results[ref_key])
    print(f"\nmedian step over rounds; ratio to the quiet step of '{ref_key[0]}'")
    print(
        f"{'setting':<20} {'quiet ms':>9} {'ratio':>6} {'loaded ms':>10} {'ratio':>6}  CPU ms q/l"
    )
    for name in names:
        q = statistics.median(x["wall"] for x in results[(name, False)])
        lo = statistics.median(x["wall"] for x in results[(name, True)])
        qc = statistics.median(x["cpu"] for x in results[(name, False)])
        lc = statistics.median(x["cpu"] for x in results[(name, True)])
        print(
            f"{name:<20} {q * 1e3:9.1f} {q / ref:6.2f} {lo * 1e3:10.1f} {lo / ref:6.2f}"
            f"  {qc * 1e3:.0f}/{lc * 1e3:.0f}"
        )


if __name__ == "__main__":
    main()
