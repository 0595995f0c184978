"""Importing moco chooses the passive OpenMP wait policy, unless too late or overridden."""

import os
import subprocess
import sys

SHOW = "import os, sys; {first}; print(os.environ.get('OMP_WAIT_POLICY', '(unset)'))"


def _policy(first: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = SHOW.format(first=first)
    out = subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_moco_first_makes_idle_openmp_threads_sleep():
    assert _policy("import moco") == "PASSIVE"
    assert _policy("import moco.cli") == "PASSIVE"  # the console script's first import


def test_a_policy_the_user_chose_is_kept():
    assert _policy("import moco", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_nothing_changes_once_torch_has_loaded_its_openmp_runtime():
    assert _policy("import torch; import moco") == "(unset)"
