"""Importing moco chooses the OpenMP wait policy for the machine it finds, unless the
user chose one or torch was loaded first."""

import os
import subprocess
import sys
import time

from moco.openmp import BUSY_CORES, POLICY, busy_cores, policy_for

SHOW = "import os, sys; {first}; print(os.environ.get('OMP_WAIT_POLICY', '(unset)'))"
SPIN = "while True: pass"


def _policy(first: str, **env: str) -> str:
    unset = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    base = {k: v for k, v in os.environ.items() if k not in unset}
    code = SHOW.format(first=first)
    out = subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_idle_threads_sleep_when_others_keep_the_cores_busy():
    hogs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.5)
        assert busy_cores() >= BUSY_CORES
        assert _policy("import moco") == POLICY
        assert _policy("import moco.cli") == POLICY  # the console script's first import
        # what the user chose is kept, busy or not
        assert _policy("import moco", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
        assert _policy("import moco", GOMP_SPINCOUNT="1000") == "(unset)"
        # torch first: its OpenMP runtime has read its settings, too late to change them
        assert _policy("import torch; import moco") == "(unset)"
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def test_a_quiet_machine_keeps_the_spinning_default():
    assert policy_for(0.0) is None and policy_for(BUSY_CORES / 2) is None
    assert policy_for(BUSY_CORES) == POLICY and policy_for(2.0) == POLICY
    assert policy_for(None) is None  # cannot tell: the runtime's default
    measured = busy_cores(samples=3)
    assert measured is None or measured >= 0.0
