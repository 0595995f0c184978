"""The OpenMP wait policy, chosen before PyTorch loads its OpenMP runtime.

PyTorch's CPU ops run on OpenMP threads that, by default, spin for a while at the end of
each parallel region before they sleep. On a quiet machine that saves a wake-up; on a
machine whose cores are busy elsewhere (a shared workstation, a CI runner, two training
processes on two cores) the spinning threads take the cores from the threads doing the
work, and a training step of the default preset was measured 20-30x slower
(``bench/busy_machine.py``; figures in docs/performance.md). ``OMP_WAIT_POLICY=PASSIVE``
makes idle threads sleep at once. The runtime reads the variable once, when it is loaded
(on ``import torch``), so :func:`prefer_passive_waiting` runs when the ``moco`` package is
imported, before anything of ours imports torch. A value the user set is kept
(``OMP_WAIT_POLICY=ACTIVE moco pretrain`` restores spinning); when torch was imported
before ``moco``, it is too late and nothing changes.
"""

from __future__ import annotations

import os
import sys

POLICY = "PASSIVE"


def prefer_passive_waiting() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose one or torch is loaded
    already. Returns whether the variable now says PASSIVE for this process."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", POLICY)
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == POLICY
