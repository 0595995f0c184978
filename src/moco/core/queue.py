"""The dictionary as a queue (MoCo Sec. 3.2): a (C, K) buffer of L2-normalised keys.

The queue lives in two buffers of the model, ``queue`` (C, K) and ``queue_ptr`` (1,),
named as in the official checkpoints so that either side reads the other's files.
These functions only create and advance those tensors; nothing here runs as a side
effect of computing a loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def init_queue(dim: int, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A (dim, size) queue of random unit columns, as the official code starts it."""
    if dim <= 0 or size <= 0:
        raise ValueError(f"queue needs dim > 0 and size > 0; got dim={dim}, size={size}")
    return F.normalize(torch.randn(dim, size, generator=generator), dim=0)


@torch.no_grad()
def enqueue_(queue: torch.Tensor, ptr: torch.Tensor, keys: torch.Tensor) -> None:
    """Write keys (N, C) over the N oldest columns of queue (C, K); advance ptr in place.

    The oldest key sits at ``ptr``; writing from there and advancing by N is FIFO
    order. When K is not a multiple of N the write wraps around to column 0, so no key
    is dropped (the official code asserts K % N == 0 instead). Indices are computed on
    the device from ``ptr``, so the step never waits on the host.
    """
    n, c = keys.shape
    size = queue.shape[1]
    if c != queue.shape[0]:
        raise ValueError(f"keys have {c} channels, the queue holds {queue.shape[0]}")
    if n > size:
        raise ValueError(f"cannot enqueue {n} keys into a queue of size K={size}: use K >= batch")
    idx = (ptr + torch.arange(n, device=queue.device)) % size
    queue.index_copy_(1, idx, keys.detach().to(queue.dtype).t())
    ptr.copy_((ptr + n) % size)
