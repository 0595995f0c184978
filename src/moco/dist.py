"""The one module that touches torch.distributed.

In a single process every helper here is the identity (or its one-process answer), so
library code calls them unconditionally and runs unchanged on one CPU, one GPU or many
processes launched by ``torchrun``. Two kinds of gather, deliberately named apart:

- :func:`all_gather_nograd` for tensors that carry no gradient (the keys entering the
  queue, the shuffled key batch, evaluation features);
- :func:`all_gather_grad` for tensors whose gradient must flow back to the rank that
  made them (in-batch negatives of SimCLR / MoCo v3 across processes).

Process groups are started from the environment that ``torchrun`` (or SLURM through
it) sets: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn

T = TypeVar("T")


# ----------------------------------------------------------------------------- state


def is_distributed() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def world_size() -> int:
    return torch_dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return torch_dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes checkpoints, logs and the progress bar."""
    return rank() == 0


def local_rank() -> int:
    """This process's index on its node (``LOCAL_RANK`` from torchrun; 0 without it)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int | None:
    """How many processes the launcher starts on this node (``LOCAL_WORLD_SIZE`` from
    torchrun); None when it does not say (no launcher, or variables set by hand)."""
    value = os.environ.get("LOCAL_WORLD_SIZE")
    return int(value) if value else None


def launched() -> bool:
    """True when a launcher (torchrun) set up the environment for a process group."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def restart_count() -> int:
    """How many times torchrun has restarted this job (``--max-restarts``); 0 otherwise."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def launch_rank() -> int:
    """The rank the launcher gave this process, before any process group exists."""
    return int(os.environ.get("RANK", "0"))


def max_restarts() -> int:
    return int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))


def init_from_env(device: torch.device, timeout_s: float = 600.0) -> bool:
    """Join the process group the launcher describes; NCCL on CUDA, gloo on CPU.

    A no-op without a launcher, or when already initialised (so library entry points
    may all call it). ``device`` comes from :func:`moco.device.resolve_device` (one GPU
    per process); it is made the current CUDA device here too. Returns whether a group
    is active.

    ``timeout_s`` bounds how long a collective waits for a peer that died or hangs, on
    both backends, but what happens then differs. gloo raises in the waiting process,
    so the CLI prints which rank stopped and exits 1. NCCL runs collectives
    asynchronously on the GPU: its watchdog thread finds the timed-out (or failed)
    collective and, with ``TORCH_NCCL_ASYNC_ERROR_HANDLING=1`` (tear down; set here when
    unset, and by torchrun), aborts the communicator and the whole process (SIGABRT),
    because CUDA work queued after a failed collective may read corrupted data. No
    Python code runs after that: the watchdog's log lines and torchrun's summary
    (exit code -6) are the message. With the variable at 0 a dead peer hangs forever.
    """
    if is_distributed():
        return True
    if not launched():
        return False
    # NCCL reads this when the group is created: 1 = abort and tear down on a timeout
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=timeout_s)
    store: torch_dist.Store | None = None
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # torchrun's agent serves one store for the whole job, across --max-restarts,
        # and the process group's keys in it are not namespaced by attempt: the
        # workers of a restart would read the addresses of the workers that died and
        # hang connecting to them. Namespace the keys by attempt ourselves.
        agent = torch_dist.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
            int(os.environ["WORLD_SIZE"]), is_master=False, timeout=timeout,
        )  # fmt: skip
        store = torch_dist.PrefixStore(f"moco/attempt_{restart_count()}", agent)
    torch_dist.init_process_group(
        backend,
        store=store,
        rank=int(os.environ["RANK"]) if store is not None else -1,
        world_size=int(os.environ["WORLD_SIZE"]) if store is not None else -1,
        timeout=timeout,
        device_id=device if device.type == "cuda" else None,
    )
    return True


def shutdown() -> None:
    """Leave the process group (at exit); safe to call when none is active."""
    if is_distributed():
        torch_dist.destroy_process_group()


# ----------------------------------------------------------------- collectives, no grad


@torch.no_grad()
def all_gather_nograd(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) per rank -> (W * n, ...), concatenated in rank order; no gradient.

    Every rank must pass the same shape. One process: ``x`` itself.
    """
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    torch_dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def broadcast_(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``x`` in place with rank ``src``'s value; returns ``x``."""
    if world_size() > 1:
        torch_dist.broadcast(x, src)
    return x


def all_reduce_sum_(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over ranks in place; returns ``x``."""
    if world_size() > 1:
        torch_dist.all_reduce(x)
    return x


def broadcast_module_(module: nn.Module, src: int = 0) -> None:
    """Every parameter and buffer of ``module`` set to rank ``src``'s (start of a run)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            torch_dist.broadcast(t.data, src)


@torch.no_grad()
def average_bn_stats_(module: nn.Module) -> None:
    """Replace each BN layer's running mean / var with their mean over ranks.

    With one BN group per process, each rank's running statistics follow only its own
    groups. The update r <- (1 - mom) r + mom * batch_stat is affine with the same
    coefficient on every rank, so the mean over ranks follows exactly the recursion of
    one process normalising all the groups (``SplitBatchNorm2d``). Averaging in place
    before evaluation and before each checkpoint thus gives every rank, and the file,
    the statistics of the equivalent one-process run.
    """
    w = world_size()
    if w == 1:
        return
    stats = [
        t
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for t in (m.running_mean, m.running_var)
        if t is not None
    ]
    if not stats:
        return
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in stats))
    flat = torch.cat([t.reshape(-1).to(dtype) for t in stats])
    torch_dist.all_reduce(flat)
    flat /= w
    offset = 0
    for t in stats:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def broadcast_object(obj: T | None, src: int = 0) -> T:
    """Rank ``src``'s picklable ``obj`` on every rank (others may pass None)."""
    if world_size() == 1:
        return obj  # type: ignore[return-value]
    box = [obj]
    torch_dist.broadcast_object_list(box, src)
    return box[0]  # type: ignore[return-value]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's picklable ``obj``, in rank order."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    torch_dist.all_gather_object(out, obj)
    return out


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and give its result, or raise its error, on every rank.

    For steps with side effects that must happen once (creating the run directory)
    but whose outcome every rank needs: an error on rank 0 becomes the same error
    everywhere instead of a hang at the next collective.
    """
    if world_size() == 1:
        return fn()
    outcome: tuple[bool, Any] | None = None
    if is_main():
        try:
            outcome = (True, fn())
        except Exception as err:  # noqa: BLE001 - re-raised on every rank below
            outcome = (False, err)
    ok, value = broadcast_object(outcome)
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


# ------------------------------------------------------------- sharding for evaluation


def shard_indices(n: int) -> torch.Tensor:
    """This rank's contiguous share of ``range(n)``, padded to ceil(n / W) entries.

    Padding repeats index n - 1, so every rank does the same amount of work and the
    gathered result can simply be cut back to n rows (:func:`gather_shards`).
    """
    w, r = world_size(), rank()
    per = -(-n // w)
    return torch.arange(r * per, (r + 1) * per).clamp_(max=max(n - 1, 0))


def gather_shards(local: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`shard_indices`: (ceil(n/W), ...) per rank -> (n, ...) in index
    order on every rank, padding dropped, so no sample appears twice."""
    return all_gather_nograd(local)[:n]


# ------------------------------------------------------------------- gather with grad


class _AllGatherGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.n = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(torch_dist.get_world_size())]
        torch_dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        # Every rank used the whole gathered tensor, so the gradient of this rank's
        # rows is the sum over ranks of their gradients for those rows.
        grad = grad.contiguous()
        torch_dist.all_reduce(grad)
        r = torch_dist.get_rank()
        return grad[r * ctx.n : (r + 1) * ctx.n]


def all_gather_grad(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) per rank -> (W * n, ...) in rank order, differentiable.

    The backward pass sums, over ranks, the gradients each rank's loss gives this rank's
    rows, i.e. the gradient of the sum of all ranks' losses. DDP then averages parameter
    gradients over ranks, which makes it the gradient of the mean loss over ranks.
    One process: ``x`` itself.
    """
    if world_size() == 1:
        return x
    out: torch.Tensor = _AllGatherGrad.apply(x)
    return out


# ------------------------------------------------------------------------ wrapping


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in DDP when distributed, else ``module`` itself.

    Only the trainable encoder is wrapped (STYLE 8): the key encoder and the queue stay
    outside, so DDP neither broadcasts the queue nor all-reduces anything else. Buffers
    are not broadcast each step (``broadcast_buffers=False``): in training BN uses
    batch statistics, and :func:`average_bn_stats_` reconciles the running ones.
    """
    if world_size() == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # newer torch renames the option; the initial sync from rank 0 is wanted either way
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    key = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    options: dict[str, Any] = {key: False}
    return DistributedDataParallel(module, device_ids=ids, **options)


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """BN layers synchronised across processes (SyncBatchNorm); unchanged in one process,
    where a BN layer already sees the whole batch."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(module) if is_distributed() else module
