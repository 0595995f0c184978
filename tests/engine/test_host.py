"""The CPU allocator setting the training loop applies (glibc only)."""

import platform

import pytest
import torch

from moco.engine.host import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_is_accepted_by_glibc_and_reversible():
    try:
        assert keep_freed_memory(True)
        x = torch.randn(4096, 4096)  # 64 MiB: from the heap now, and freed back to it
        del x
        assert keep_freed_memory(False)
    finally:
        keep_freed_memory(True)  # what every training run in this process sets anyway
