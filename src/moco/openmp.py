"""The OpenMP wait policy, chosen before PyTorch loads its OpenMP runtime.

PyTorch's CPU ops run on OpenMP threads that, by default, spin for a while at the end of
each parallel region before they sleep. On a quiet machine that saves a wake-up per
region; on a machine whose cores are busy elsewhere (a shared workstation, a CI runner,
two training processes on two cores) the spinning threads take the cores from the
threads doing the work. ``OMP_WAIT_POLICY=PASSIVE`` makes idle threads sleep at once,
which costs a quiet machine a wake-up per region. Measured on the 2-core CI machine
(``bench/busy_machine.py``, docs/performance.md): a default-preset step takes 125-140 ms
quiet and 530-610 ms with both cores busy elsewhere when threads spin, and 155-160 ms
quiet and 275-295 ms busy when they sleep.

So the choice follows the machine: :func:`choose_wait_policy` counts the other tasks
ready to run (the kernel's run queue, sampled for 20 ms) and sets
``OMP_WAIT_POLICY=PASSIVE`` when on average at least half a core is taken, leaving the
spinning default on a quiet machine. The runtime reads the variable once, when it is loaded (on
``import torch``), so this runs when the ``moco`` package is imported, before anything
of ours imports torch. A value the user set (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``)
is kept; when torch was imported before ``moco``, it is too late and nothing changes. A
machine that gets busy after the start keeps the policy chosen at the start.
"""

from __future__ import annotations

import os
import sys
import time

POLICY = "PASSIVE"
BUSY_CORES = 0.5  # others' use, in cores, from which idle threads should sleep
_USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def busy_cores(samples: int = 10, gap: float = 0.002) -> float | None:
    """How many other tasks are ready to run, on average over ``samples`` looks at the
    kernel's run queue (``/proc/loadavg``'s running count, less this process) ``gap``
    seconds apart: about how many cores other processes keep busy right now. None where
    it cannot be read."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        counts.append(running - 1)  # this process is running while it reads
        if i + 1 < samples:
            time.sleep(gap)
    return max(0.0, sum(counts) / len(counts))


def policy_for(busy: float | None) -> str | None:
    """The wait policy to set for ``busy`` cores taken elsewhere (None: the default)."""
    return POLICY if busy is not None and busy >= BUSY_CORES else None


def choose_wait_policy() -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` if the CPUs are busy elsewhere, unless the user
    chose a policy or torch is loaded already. Returns the policy now in force for this
    process's OpenMP runtime (None: the runtime's default, spinning)."""
    if "torch" in sys.modules or any(k in os.environ for k in _USER_SETTINGS):
        return os.environ.get("OMP_WAIT_POLICY")
    policy = policy_for(busy_cores())
    if policy is not None:
        os.environ["OMP_WAIT_POLICY"] = policy
    return policy
