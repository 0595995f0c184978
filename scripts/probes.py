"""Probes of the issue "Checkpoints anyone can open safely, and runs that survive anything a
cluster does to them", run as subprocesses against a source tree; prints a Markdown table.

Every probe runs ``python -m moco ...`` (this interpreter, ``PYTHONPATH=SRC/src``,
``OMP_NUM_THREADS=1``) in a scratch directory on tiny runs: the bundled Fashion-MNIST
cut down to a few hundred images, ``model.width=0.125``, batch 32, K 64, one or two
epochs. Each row says what the command exited with, the first line of what it said (the
error line, a traceback's exception line, or its last output line), whether data was
lost or harm done (a payload that ran, a checkpoint or result gone, an edit discarded),
and whether the behaviour is the one the issue asks for (``yes``; ``NO``; ``skip`` where
the probe could not be set up here, e.g. no permission to mount a tmpfs).

Usage::

    python scripts/probes.py                      # the tree this script is in
    python scripts/probes.py --src /tmp/before --out scripts/probes-before.md
    python scripts/probes.py --only pickle,sigterm --keep /tmp/probe-work

Run it with the project's venv python (torch, torchvision, numpy, Pillow); it imports
nothing of moco itself. The disk-full probe mounts a tmpfs (root only; skipped when the
mount is refused) and unmounts it afterwards.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parents[1]

# A tiny run: ~16 steps an epoch on the 512-image cut, no kNN monitor unless asked for.
TINY = [
    "model.width=0.125",
    "optim.batch_size=32",
    "model.queue_size=64",
    "optim.epochs=1",
    "eval.knn_every=0",
    "eval.knn_k=20",
    "run.progress=false",
]


@dataclass
class Done:
    """What a finished command left: exit status and its two streams."""

    rc: int | None  # None: still running when it was given up on
    out: str
    err: str


@dataclass
class Row:
    probe: str
    rc: str
    message: str
    harm: str  # "no", "n/a", or what was lost / what ran
    ok: bool | None  # None: skipped (the note says why)


class Payload:
    """Unpickling this creates the file ``marker`` (a crafted checkpoint's code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "a"))


# --------------------------------------------------------------------------- the harness


class Harness:
    def __init__(self, src: Path, work: Path, timeout: float) -> None:
        self.src = src
        self.work = work
        self.timeout = timeout
        self.env = {
            **os.environ,
            "PYTHONPATH": str(src / "src"),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        for key in (
            "RANK",
            "LOCAL_RANK",
            "WORLD_SIZE",
            "LOCAL_WORLD_SIZE",
            "MASTER_ADDR",
            "MASTER_PORT",
            "TORCHELASTIC_RESTART_COUNT",
            "TORCHELASTIC_MAX_RESTARTS",
        ):
            self.env.pop(key, None)  # one process, whatever launched this script
        self.tiny = work / "data" / "tiny"  # 512 train / 128 test
        self.long = work / "data" / "long"  # 2048 train / 256 test: 64 steps an epoch
        self.runs = work / "runs"
        self.base: Path | None = None  # a finished run that the evaluation probes read
        self.started: list[subprocess.Popen[bytes]] = []  # background runs, ended at exit

    # ---- running commands

    def moco(self, *args: str, timeout: float | None = None) -> Done:
        return self.python("-m", "moco", *args, timeout=timeout)

    def python(self, *args: str, timeout: float | None = None) -> Done:
        try:
            p = subprocess.run(
                [sys.executable, *args],
                cwd=self.work,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout or self.timeout,
            )
        except subprocess.TimeoutExpired as err:
            return Done(None, _text(err.stdout), _text(err.stderr) + "\n(timed out)")
        return Done(p.returncode, p.stdout, p.stderr)

    def start(self, *args: str, name: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
        """``moco ARGS`` in the background, its streams to files (read them after)."""
        out, err = self.work / f"{name}.out", self.work / f"{name}.err"
        with out.open("wb") as o, err.open("wb") as e:
            p = subprocess.Popen(
                [sys.executable, "-m", "moco", *args],
                cwd=self.work,
                env=self.env,
                stdout=o,
                stderr=e,
            )
        self.started.append(p)
        return p, out, err

    def pretrain_argv(
        self, *overrides: str, data: Path | None = None, out: Path | None = None, name: str = ""
    ) -> list[str]:
        """``pretrain`` of a tiny run on ``data`` (the 512-image cut) into ``out``
        (``runs/``), named ``name`` (none: the timestamp), then ``overrides``."""
        named = [f"run.name={name}"] if name else []
        where = ["--data", str(data or self.tiny), "--out", str(out or self.runs)]
        return ["pretrain", *where, *TINY, *named, *overrides]

    def pretrain(self, *overrides: str, data: Path | None = None, name: str) -> Done:
        return self.moco(*self.pretrain_argv(*overrides, data=data, name=name))

    def checkpoint(self, path: Path) -> dict[str, Any] | str:
        """The tree's own loader on ``path``: {epoch, step} or why it cannot be read."""
        code = (
            "import json, sys\n"
            "from moco.engine.checkpoint import load\n"
            "c = load(sys.argv[1])\n"
            "print(json.dumps({'epoch': c.get('epoch'), 'step': c.get('step')}))\n"
        )
        if not path.exists():
            return f"{path.name} does not exist"
        d = self.python("-c", code, str(path))
        if d.rc != 0:
            return f"not loadable: {message(d)}"
        return dict(json.loads(d.out.strip().splitlines()[-1]))

    # ---- data

    def make_data(self) -> None:
        bundled = self.src / "src" / "moco" / "data" / "bundled"
        x = _read_idx(bundled / "train-images-idx3-ubyte.gz")
        y = _read_idx(bundled / "train-labels-idx1-ubyte.gz")
        tx = _read_idx(bundled / "t10k-images-idx3-ubyte.gz")
        ty = _read_idx(bundled / "t10k-labels-idx1-ubyte.gz")
        for root, n, m in ((self.tiny, 512, 128), (self.long, 2048, 256)):
            root.mkdir(parents=True, exist_ok=True)
            _write_idx(root / "train-images-idx3-ubyte.gz", x[:n])
            _write_idx(root / "train-labels-idx1-ubyte.gz", y[:n])
            _write_idx(root / "t10k-images-idx3-ubyte.gz", tx[:m])
            _write_idx(root / "t10k-labels-idx1-ubyte.gz", ty[:m])

    def make_base(self) -> Row:
        d = self.pretrain(name="base")
        ok = d.rc == 0 and (self.runs / "base" / "checkpoint.pth.tar").exists()
        self.base = self.runs / "base" if ok else None
        return Row("setup: tiny base run (1 epoch)", rc(d), message(d), "n/a", ok)


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else b


def _read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _write_idx(path: Path, a: np.ndarray) -> None:
    head = bytes([0, 0, 8, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape)
    path.write_bytes(gzip.compress(head + np.ascontiguousarray(a, np.uint8).tobytes()))


def rc(d: Done) -> str:
    return "timeout" if d.rc is None else str(d.rc)


def message(d: Done) -> str:
    """The line a user reads: a traceback's exception line, the error line, else the
    last line of output."""
    err = [ln for ln in d.err.splitlines() if ln.strip()]
    out = [ln for ln in d.out.splitlines() if ln.strip()]
    tracebacks = [i for i, ln in enumerate(err) if ln.startswith("Traceback")]
    if tracebacks:  # the exception's first line: the first unindented line of the last one
        after = [ln for ln in err[tracebacks[-1] + 1 :] if not ln.startswith(" ")]
        return "traceback: " + (after[0] if after else err[-1]).strip()
    for ln in err:
        if "error:" in ln or "Error" in ln:
            return ln.strip()
    if d.rc not in (0, None) and err:
        return err[0].strip()
    if out:
        return out[-1].strip()
    return err[-1].strip() if err else "(no output)"


def clean(d: Done) -> bool:
    """A failure the way a user mistake should fail: no traceback."""
    return "Traceback" not in d.err


def _wait_for(cond: Callable[[], bool], timeout: float, poll: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(poll)
    return False


def _train_steps(metrics: Path) -> list[int]:
    steps = []
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r.get("kind") == "train":
                steps.append(int(r["step"]))
    return steps


def _finish(p: subprocess.Popen[bytes], out: Path, err: Path, timeout: float) -> Done:
    try:
        code: int | None = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        code = None
    return Done(code, out.read_text(errors="replace"), err.read_text(errors="replace"))


# ------------------------------------------------------------------------------- probes


def probe_pickle(h: Harness) -> list[Row]:
    """A checkpoint whose unpickling runs code (creates a marker file), through every
    command that opens one: the payload must not run, the command must refuse it."""
    import torch

    rows = []
    evil_dir = h.work / "evil"
    evil_dir.mkdir(exist_ok=True)
    cases = {  # each token formatted apart, so paths with spaces stay one argument
        "knn": "knn {f} --data {tiny} --k 5",
        "lincls": "lincls {f} --data {tiny} --protocol small --epochs 1",
        "finetune": "finetune {f} --data {tiny} --epochs 1",
        "embed": "embed {f} --data {tiny} --out {work}/evil-embed",
        "export": "export {f} --out {work}/evil-export.pth",
        "pretrain --resume FILE": "pretrain --resume {f}",
        "pretrain --resume RUNDIR": "pretrain --resume {run}",
    }
    for i, (name, template) in enumerate(cases.items()):
        marker = evil_dir / f"PAYLOAD-RAN-{i}"
        run_dir = evil_dir / f"run{i}"  # looks like a run directory
        run_dir.mkdir(exist_ok=True)
        (run_dir / "config.yaml").write_text("preset: default\n")
        (run_dir / "metrics.jsonl").write_text("")
        f = run_dir / "checkpoint.pth.tar"
        torch.save(
            {"epoch": 1, "arch": "resnet18", "state_dict": {}, "payload": Payload(marker)}, f
        )
        names = {"f": f, "run": run_dir, "tiny": h.tiny, "work": h.work}
        d = h.moco(*(token.format(**names) for token in template.split()))
        ran = marker.exists()
        harm = "payload RAN (marker file created)" if ran else "no"
        rows.append(
            Row(
                f"crafted pickle: {name}",
                rc(d),
                message(d),
                harm,
                not ran and d.rc == 1 and clean(d),
            )
        )
    return rows


def probe_official_resume(h: Harness) -> list[Row]:
    """``pretrain --resume`` of an official main_moco.py checkpoint (no ``config``)."""
    import torch
    import torchvision

    q = torchvision.models.resnet18(num_classes=128).state_dict()
    sd = {f"module.encoder_q.{k}": v for k, v in q.items()}
    sd |= {f"module.encoder_k.{k}": v.clone() for k, v in q.items()}
    sd["module.queue"] = torch.nn.functional.normalize(torch.randn(128, 4096), dim=0)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    f = h.work / "official.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": sd, "optimizer": {}}, f)
    d = h.moco("pretrain", "--resume", str(f))
    return [
        Row("pretrain --resume official.pth.tar", rc(d), message(d), "n/a", d.rc == 1 and clean(d))
    ]


def probe_sigterm(h: Harness) -> list[Row]:
    """SIGTERM mid-epoch (after the first logged step): is there a checkpoint of the step
    it stopped at, and does the message name the resume command?"""
    name = "sigterm"
    run = h.runs / name
    argv = h.pretrain_argv("optim.epochs=2", "run.log_every=1", data=h.long, name=name)
    p, out, err = h.start(*argv, name=name)
    seen = _wait_for(
        lambda: bool(_train_steps(run / "metrics.jsonl")) or p.poll() is not None, h.timeout
    )
    if not seen or p.poll() is not None:
        d = _finish(p, out, err, 5)
        return [Row("SIGTERM mid-epoch", rc(d), message(d), "n/a (no step was logged)", None)]
    time.sleep(0.3)  # a few more steps
    at_kill = max(_train_steps(run / "metrics.jsonl"))
    p.send_signal(signal.SIGTERM)
    d = _finish(p, out, err, 120)
    ck = h.checkpoint(run / "checkpoint.pth.tar")
    said = d.out + d.err
    names_resume = "--resume" in said
    if isinstance(ck, str):
        return [Row("SIGTERM mid-epoch", rc(d), message(d), f"yes: {ck}", False)]
    step = int(ck.get("step") or 0)
    lost = (
        f"no: checkpoint at step {step} (last logged step {at_kill})"
        if step >= at_kill
        else f"yes: checkpoint at step {step}, {at_kill - step}+ logged steps lost"
    )
    hint = "" if names_resume else " [message names no --resume]"
    return [
        Row("SIGTERM mid-epoch", rc(d), message(d) + hint, lost, step >= at_kill and names_resume)
    ]


def probe_kill_before_checkpoint(h: Harness) -> list[Row]:
    """SIGKILL before the run's first checkpoint, at two moments: as soon as anything is
    in the run directory, and once its config.yaml is written (during the kNN of the
    random init, which comes first with eval.knn_every=1). Then ``--resume RUNDIR`` on
    one copy of what was left, and the same command again on another."""

    def written(run: Path) -> bool:
        f = run / "config.yaml"
        return f.is_file() and f.stat().st_size > 0

    moments: list[tuple[str, Callable[[Path], bool]]] = [
        ("as the run directory appears", lambda run: run.is_dir() and any(run.iterdir())),
        ("after config.yaml is written", written),
    ]
    return [_kill_before_checkpoint(h, i, what, cond) for i, (what, cond) in enumerate(moments)]


def _kill_before_checkpoint(h: Harness, i: int, what: str, cond: Callable[[Path], bool]) -> Row:
    probe = f"SIGKILL before the first checkpoint ({what}), then --resume / re-run"
    name = f"kill{i}"
    run = h.runs / name
    ckpt = run / "checkpoint.pth.tar"
    argv = h.pretrain_argv("eval.knn_every=1", data=h.long, name=name)
    p, out, err = h.start(*argv, name=name)
    hit = _wait_for(lambda: cond(run) or p.poll() is not None, h.timeout, poll=0.002)
    window = hit and p.poll() is None and not ckpt.exists()
    p.kill()
    _finish(p, out, err, 30)
    if not run.is_dir():
        return Row(probe, "-", "no run directory appeared", "n/a", None)
    left = ", ".join(sorted(f.name for f in run.iterdir()))
    note = f"[left: {left}]" if window else "[missed: a checkpoint was already there]"
    other = h.work / "runs-copy"
    shutil.copytree(run, other / name)
    resumed = h.moco("pretrain", "--resume", str(run))
    again = h.moco(*h.pretrain_argv("eval.knn_every=1", data=h.long, out=other, name=name))
    msg = f"{note} --resume: {message(resumed)} \u2016 re-run: {message(again)}"
    usable = resumed.rc == 0 or again.rc == 0
    harm = "no" if usable else "yes: the run directory can be neither resumed nor re-run"
    ok = usable and clean(resumed) and clean(again)
    return Row(probe, f"{rc(resumed)} / {rc(again)}", msg, harm, ok)


def probe_same_second(h: Harness) -> list[Row]:
    """Two runs started together without run.name: do they share a directory?"""
    out_dir = h.work / "runs-same"
    for attempt in range(3):
        shutil.rmtree(out_dir, ignore_errors=True)
        argv = h.pretrain_argv(out=out_dir)  # no run.name
        procs = [h.start(*argv, name=f"same{attempt}-{i}") for i in range(2)]
        done = [_finish(*p, timeout=h.timeout) for p in procs]
        dirs = [_run_dir_of(d) for d in done]
        stamps = [re.search(r"\d{8}-\d{6}$", x or "") for x in dirs]
        if all(stamps) and dirs[0] != dirs[1] and attempt < 2:
            continue  # two different seconds: the probe did not happen, try again
        break
    codes = f"{rc(done[0])} / {rc(done[1])}"
    msgs = " | ".join(message(d) for d in done)
    if dirs[0] and dirs[0] == dirs[1]:
        harm = f"yes: both wrote {Path(dirs[0]).name}"
        return [Row("two runs in the same second, no run.name", codes, msgs, harm, False)]
    if None in dirs:
        return [
            Row(
                "two runs in the same second, no run.name",
                codes,
                msgs,
                "one run did not start (see message)",
                False,
            )
        ]
    names = ", ".join(Path(x).name for x in dirs if x)
    ok = all(d.rc == 0 for d in done)
    return [
        Row("two runs in the same second, no run.name", codes, f"directories {names}", "no", ok)
    ]


def _run_dir_of(d: Done) -> str | None:
    m = re.search(r"^(?:run|resuming) (\S+?):", d.out + "\n" + d.err, re.M)
    if m is None:
        m = re.search(r"run directory (\S+)\s*$", d.out, re.M)
    return m.group(1) if m else None


def probe_disk_full(h: Harness) -> list[Row]:
    """A run on a tmpfs that holds one checkpoint and a half: the second save fails."""
    if h.base is None:
        return [Row("disk full (tmpfs)", "-", "no base run", "n/a", None)]
    size = (h.base / "checkpoint.pth.tar").stat().st_size
    mnt = h.work / "full"
    mnt.mkdir()
    limit = int(size * 1.5) + 256 * 1024
    m = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={limit}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if m.returncode != 0:
        why = (m.stderr.strip().splitlines() or ["mount failed"])[0]
        return [
            Row("disk full (tmpfs)", "-", f"skipped: cannot mount a tmpfs ({why})", "n/a", None)
        ]
    try:
        d = h.moco(*h.pretrain_argv("optim.epochs=2", out=mnt, name="full"))
        ck = h.checkpoint(mnt / "full" / "checkpoint.pth.tar")
        stale = [p.name for p in (mnt / "full").glob("*") if "tmp" in p.name.lower()]
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
    if isinstance(ck, str):
        harm = f"yes: {ck}"
    else:
        harm = f"no: checkpoint of epoch {ck['epoch']} loads"
    if stale:
        harm += f"; temporaries left: {', '.join(stale)}"
    said = "space" in message(d).lower()  # says what happened, not torch's zip writer
    ok = d.rc == 1 and clean(d) and said and not isinstance(ck, str) and not stale
    return [Row(f"disk full (tmpfs of {limit // 1024} KiB)", rc(d), message(d), harm, ok)]


def probe_metrics_duplicates(h: Harness) -> list[Row]:
    """SIGKILL in epoch 2 (after epoch 1's checkpoint), resume: is any step logged twice?"""
    name = "dup"
    run = h.runs / name
    argv = h.pretrain_argv("optim.epochs=2", "run.log_every=1", data=h.long, name=name)
    p, out, err = h.start(*argv, name=name)
    steps_per_epoch = 2048 // 32
    target = steps_per_epoch + 5
    reached = _wait_for(
        lambda: (
            max(_train_steps(run / "metrics.jsonl"), default=0) >= target or p.poll() is not None
        ),
        h.timeout,
    )
    if not reached or p.poll() is not None:
        d = _finish(p, out, err, 5)
        return [
            Row(
                "metrics.jsonl after SIGKILL + resume",
                rc(d),
                message(d),
                "n/a (run ended before the kill)",
                None,
            )
        ]
    p.kill()
    _finish(p, out, err, 30)
    d = h.moco("pretrain", "--resume", str(run))
    steps = _train_steps(run / "metrics.jsonl")
    twice = sorted({s for s in steps if steps.count(s) > 1})
    shown = f"{len(twice)} steps logged twice" + (f" ({twice[0]}..{twice[-1]})" if twice else "")
    harm = f"yes: {shown}" if twice else "no"
    return [
        Row(
            "metrics.jsonl after SIGKILL + resume",
            rc(d),
            f"{message(d)}; {shown}",
            harm,
            d.rc == 0 and not twice,
        )
    ]


def probe_eval_args(h: Harness) -> list[Row]:
    """Nonsense evaluation arguments: refused at once, and no result file written."""
    if h.base is None:
        return [Row("evaluation arguments", "-", "no base run", "n/a", None)]
    base = str(h.base)
    cases = [
        ("knn --k 0", ["knn", base, "--k", "0"]),
        ("knn --t 0", ["knn", base, "--k", "5", "--t", "0"]),
        ("knn --k -5", ["knn", base, "--k", "-5"]),
        (
            "lincls --lr nan",
            ["lincls", base, "--protocol", "small", "--epochs", "2", "--lr", "nan"],
        ),
        ("lincls --epochs 0", ["lincls", base, "--protocol", "small", "--epochs", "0"]),
        ("finetune --epochs 0", ["finetune", base, "--epochs", "0"]),
        ("finetune --lr -1", ["finetune", base, "--epochs", "1", "--lr", "-1"]),
        ("finetune --batch-size 0", ["finetune", base, "--epochs", "1", "--batch-size", "0"]),
    ]
    rows = []
    for name, argv in cases:
        before = {p: p.stat().st_mtime_ns for p in h.base.glob("*.json")}
        d = h.moco(*argv)
        wrote = [p.name for p in h.base.glob("*.json") if before.get(p) != p.stat().st_mtime_ns]
        harm = f"wrote {', '.join(wrote)}" if wrote else "no"
        flag = name.split()[1]  # the message must name it, not speak of torch internals
        named = flag in message(d) or f"{flag[2:].replace('-', '_')} must" in message(d)
        ok = d.rc not in (0, None) and clean(d) and not wrote and named
        rows.append(Row(name, rc(d), message(d), harm, ok))
    return rows


def probe_result_names(h: Harness) -> list[Row]:
    """knn --t 0.05, then knn --features head (same k): both results kept?"""
    if h.base is None:
        return [Row("result file names", "-", "no base run", "n/a", None)]
    base = str(h.base)
    for p in h.base.glob("knn-*.json"):
        p.unlink()
    a = h.moco("knn", base, "--k", "7", "--t", "0.05")
    b = h.moco("knn", base, "--k", "7", "--features", "head")
    records = [json.loads(p.read_text()) for p in h.base.glob("knn-*.json")]
    first = [r for r in records if r.get("t") == 0.05 and r.get("features") == "backbone"]
    second = [r for r in records if r.get("t") == 0.1 and r.get("features") == "head"]
    names = ", ".join(sorted(p.name for p in h.base.glob("knn-*.json")))
    harm = "no" if first else "yes: the --t 0.05 result was replaced by the --features head one"
    return [
        Row(
            "knn --t 0.05, then --features head (same k)",
            f"{rc(a)} / {rc(b)}",
            f"files: {names}",
            harm,
            bool(first and second) and a.rc == b.rc == 0,
        )
    ]


def probe_tiny_temperature(h: Harness) -> list[Row]:
    """model.temperature=1e-9: what final pretext accuracy does the run report? (Within
    two epochs of 64 steps the embeddings collapse: every logit equal, loss ln(K + 1).)"""
    d = h.pretrain("model.temperature=1e-9", "optim.epochs=2", data=h.long, name="tau")
    last = re.findall(r"loss (\S+) pretext acc (\S+)", d.out)
    if d.rc != 0:
        return [Row("model.temperature=1e-9", rc(d), message(d), "n/a", clean(d))]
    loss, acc = last[-1] if last else ("?", "nan")
    ok = float(acc) < 0.999
    harm = "n/a" if ok else "a collapsed run reported as solving the pretext task"
    said = f"final epoch: loss {loss}, pretext acc {acc}"
    return [Row("model.temperature=1e-9 (2 epochs x 64 steps)", rc(d), said, harm, ok)]


def probe_momentum(h: Harness) -> list[Row]:
    d = h.pretrain("optim.momentum=1.5", name="momentum")
    ran = (h.runs / "momentum").exists()
    harm = "ran anyway (run directory written)" if ran else "no"
    ok = d.rc == 1 and clean(d) and "optim.momentum" in message(d) and not ran
    return [Row("optim.momentum=1.5", rc(d), message(d), harm, ok)]


def probe_one_image_class(h: Harness) -> list[Row]:
    """A folder source whose class 'c' has one image: where does that image go?"""
    root = h.work / "onecls"
    rng = np.random.default_rng(0)
    from PIL import Image

    for cls, n in (("a", 12), ("b", 12), ("c", 1)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(
                root / cls / f"{i}.png"
            )
    code = (
        "import sys, torch\n"
        "from moco.data.sources import load_source\n"
        "d = load_source(sys.argv[1], 0.1, 0, load_size=28)\n"
        "tr = torch.bincount(d.train_labels, minlength=3).tolist()\n"
        "te = torch.bincount(d.test_labels, minlength=3).tolist()\n"
        "print(f'train per class {tr}, held out {te}; {d.held_out}')\n"
    )
    d = h.python("-c", code, f"folder:{root}")
    if d.rc != 0:
        named = "class" in message(d) and "1 image" in message(d)
        return [Row("one image in a class (folder:)", rc(d), message(d), "n/a", named and clean(d))]
    line = d.out.strip().splitlines()[-1]
    m = re.search(r"train per class \[\d+, \d+, (\d+)\]", line)
    in_train = bool(m and int(m.group(1)) >= 1)
    said = "1 image" in line
    harm = "no" if in_train else "yes: class c's only image is held out, none in training"
    return [Row("one image in a class (folder:)", rc(d), line, harm, in_train and said)]


def probe_edited_config(h: Harness) -> list[Row]:
    """Edit a finished run's config.yaml (optim.epochs 1 -> 2), then --resume RUNDIR."""
    d0 = h.pretrain(name="edit")
    run = h.runs / "edit"
    cfg = run / "config.yaml"
    if d0.rc != 0 or not cfg.exists():
        return [Row("hand-edited config.yaml, then --resume", rc(d0), message(d0), "n/a", None)]
    text = cfg.read_text()
    edited, n = re.subn(r"(?m)^(optim:\n(?:[ ]+.*\n)*?[ ]+epochs: )1$", r"\g<1>2", text)
    if n != 1:
        return [
            Row(
                "hand-edited config.yaml, then --resume",
                "-",
                "could not find optim.epochs in config.yaml",
                "n/a",
                None,
            )
        ]
    cfg.write_text(edited)
    d = h.moco("pretrain", "--resume", str(run))
    ck = h.checkpoint(run / "checkpoint.pth.tar")
    epoch = ck.get("epoch") if isinstance(ck, dict) else None
    # where the edit is now: config.yaml itself, or a copy kept aside under another name
    holders = [f.name for f in run.iterdir() if f.is_file() and f.read_bytes() == edited.encode()]
    notes = [ln for ln in (d.out + d.err).splitlines() if "config.yaml" in ln]
    said = notes[0].strip() if notes else message(d)
    probe = "hand-edited config.yaml (optim.epochs 1->2), then --resume"
    if d.rc == 0 and epoch == 2:
        return [Row(probe, rc(d), said, "no: the edit was applied (trained to epoch 2)", True)]
    if d.rc == 0:
        if not holders:
            harm = f"yes: the edit was overwritten, nothing said (epoch {epoch})"
        else:
            harm = f"no: the edit is in {', '.join(holders)}; the run went on (epoch {epoch})"
        return [Row(probe, rc(d), said, harm, bool(holders and notes))]
    harm = f"no (refused; the edit is in {', '.join(holders)})" if holders else "yes: edit gone"
    return [Row(probe, rc(d), said, harm, bool(holders) and clean(d) and bool(notes))]


PROBES: dict[str, Callable[[Harness], list[Row]]] = {
    "pickle": probe_pickle,
    "official": probe_official_resume,
    "sigterm": probe_sigterm,
    "kill": probe_kill_before_checkpoint,
    "same-second": probe_same_second,
    "disk-full": probe_disk_full,
    "metrics": probe_metrics_duplicates,
    "eval-args": probe_eval_args,
    "names": probe_result_names,
    "temperature": probe_tiny_temperature,
    "momentum": probe_momentum,
    "one-image": probe_one_image_class,
    "config-edit": probe_edited_config,
}


# ------------------------------------------------------------------------------- output


def table(rows: list[Row]) -> str:
    def cell(s: str) -> str:
        s = s.replace("|", "\\|").replace("\n", " ")
        return s if len(s) <= 300 else s[:297] + "..."

    lines = ["| probe | exit | message | data lost / harm | as asked |", "|---|---|---|---|---|"]
    for r in rows:
        ok = "skip" if r.ok is None else ("yes" if r.ok else "**NO**")
        lines.append(f"| {cell(r.probe)} | {r.rc} | {cell(r.message)} | {cell(r.harm)} | {ok} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=HERE, help="source tree (with src/moco)")
    ap.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    ap.add_argument("--only", help=f"comma-separated probes of: {', '.join(PROBES)}")
    ap.add_argument("--keep", type=Path, help="work directory to keep (default: a temporary)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per command")
    args = ap.parse_args(argv)
    src = args.src.resolve()
    if not (src / "src" / "moco" / "__init__.py").exists():
        ap.error(f"{src} holds no src/moco")
    chosen = list(PROBES) if not args.only else args.only.split(",")
    unknown = [c for c in chosen if c not in PROBES]
    if unknown:
        ap.error(f"unknown probes {unknown}; known: {', '.join(PROBES)}")
    if args.keep:
        shutil.rmtree(args.keep, ignore_errors=True)
        args.keep.mkdir(parents=True)
        work = args.keep.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="moco-probes-"))
    h = Harness(src, work, args.timeout)
    where = h.python("-c", "import moco; print(moco.__file__, moco.__version__)")
    if not where.out.startswith(str(src / "src" / "moco")):
        print(f"moco is not imported from {src}: {where.out or where.err}", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    try:
        h.make_data()
        rows = [h.make_base()]
        for name in chosen:
            print(f"probe {name} ...", file=sys.stderr, flush=True)
            try:
                rows += PROBES[name](h)
            except Exception as err:  # noqa: BLE001 - a broken probe is a row, not the end
                rows.append(Row(name, "-", f"probe failed: {type(err).__name__}: {err}", "?", None))
    finally:
        for p in h.started:  # a probe that broke off may have left its run going
            if p.poll() is None:
                p.kill()
                p.wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for r in rows:  # paths relative to the scratch directory: shorter, and alike run to run
        r.message, r.harm = (
            x.replace(f"{work}/", "").replace(str(work), ".") for x in (r.message, r.harm)
        )
    commit = subprocess.run(
        ["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()  # read-only
    at = f"HEAD {commit}, files as on disk; " if commit else ""
    head = (
        f"Probes against `{src}` ({at}moco {where.out.split()[-1]}), "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {time.monotonic() - t0:.0f} s; "
        f"{sum(r.ok is True for r in rows)} as asked, {sum(r.ok is False for r in rows)} not, "
        f"{sum(r.ok is None for r in rows)} skipped.\n\n"
    )
    text = head + table(rows) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
