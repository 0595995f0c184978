"""Process-level settings of the host CPU that the training loop applies.

glibc serves allocations above a threshold (128 KiB, raised dynamically up to 32 MiB)
with fresh ``mmap`` pages and gives them back to the OS when freed, and it trims the
heap top above another threshold. A training step allocates and frees the same
activation-sized tensors every step, so on a CPU each step pays for zero-filling
page faults on memory it just returned: on the 2-core machine this project is tested
on that is about a third of the step (bench/speed_options.py, option ``malloc``).
Keeping freed memory in the process removes it, at the price of holding on to up to
``trim_mib`` of freed memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)
MMAP_THRESHOLD_MAX = 32 << 20  # the largest value glibc accepts on 64-bit


def keep_freed_memory(enable: bool = True, trim_mib: int = 1024) -> bool:
    """Serve tensors up to 32 MiB from the heap and keep up to ``trim_mib`` MiB of freed
    memory (``enable``), or restore glibc's defaults. Returns False where the C library
    is not glibc (macOS, musl): nothing changes there."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mmap_threshold, trim = (MMAP_THRESHOLD_MAX, trim_mib << 20) if enable else (128 << 10,) * 2
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold) and mallopt(M_TRIM_THRESHOLD, trim))
