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
# Up to 256 MiB from the heap: MoCo's (N, K) logits are 64 MiB at N 256, K 65536, and
# served by mmap they cost 2.4x (bench/scaling.py). Older glibc caps the threshold at
# 32 MiB on 64-bit and refuses more; then 32 MiB it is.
MMAP_THRESHOLDS = (256 << 20, 32 << 20)


def keep_freed_memory(enable: bool = True, trim_mib: int = 1024) -> bool:
    """Serve tensors up to 256 MiB (or 32 MiB) from the heap and keep up to ``trim_mib``
    MiB of freed memory (``enable``), or restore glibc's defaults. Returns False where
    the C library is not glibc (macOS, musl): nothing changes there."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not enable:
        return bool(mallopt(M_MMAP_THRESHOLD, 128 << 10) and mallopt(M_TRIM_THRESHOLD, 128 << 10))
    mmap_ok = any(mallopt(M_MMAP_THRESHOLD, t) for t in MMAP_THRESHOLDS)
    return bool(mmap_ok and mallopt(M_TRIM_THRESHOLD, trim_mib << 20))
