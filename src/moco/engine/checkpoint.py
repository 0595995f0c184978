"""Checkpoints: the official MoCo layout plus everything an exact resume needs.

``state_dict`` holds the model's keys prefixed with ``module.`` (``module.encoder_q.*``,
``module.encoder_k.*``, ``module.queue``, ``module.queue_ptr``), as the official
``main_moco.py`` writes them, so the official ``main_lincls.py`` reads our files and
we read theirs. Next to it: optimiser, AMP scaler, global step, RNG states, the
resolved config, the derived values and the package version. Files are written to a
temporary name, fsynced and renamed, so a crash mid-write never leaves a broken
checkpoint. Everything in them is tensors and plain data: ``torch.load(path,
weights_only=True)`` reads them, and that is the only way we read checkpoints.
"""

from __future__ import annotations

import errno
import importlib
import os
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from moco import dist
from moco.errors import CheckpointError
from moco.version import __version__

PREFIX = "module."


def to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {PREFIX + k: v for k, v in state.items()}


def from_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(PREFIX): v for k, v in state.items()}


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process's RNG states as tensors and numbers (``weights_only`` loads them): torch
    (CPU), numpy's and Python's global generators, and the CUDA generator of ``device``
    alone (the training GPU; other visible GPUs are not this process's)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore :func:`rng_state`'s states (the CUDA one onto ``device``)."""
    torch.set_rng_state(state["torch"])
    n, py = state["numpy"], state["python"]
    if isinstance(n, dict):
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    else:  # written before 0.1.0's tensor format (numpy's own tuple)
        np.random.set_state(n)
    if isinstance(py, dict):
        random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss_next"]))
    else:
        random.setstate(py)
    cuda = state.get("cuda")
    if device is not None and device.type == "cuda" and isinstance(cuda, torch.Tensor):
        torch.cuda.set_rng_state(cuda, device)


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """torch.save to ``path`` through a temporary file in the same directory, fsynced,
    then renamed over ``path`` (and the directory fsynced): a crash or a full disk
    mid-write leaves the previous file as it was. A full disk is reported as such."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as err:
        if _disk_full(err):
            raise CheckpointError(
                f"no space left on {_mount_point(path.parent)} while writing {path}; "
                f"the previous {path.name} is intact. Free some space and resume."
            ) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


TMP_PREFIX = ".tmp-"  # save_atomic's temporary files: .tmp-NAME.PID


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temporary files that interrupted writes left in ``directory`` (one writer
    per run directory, so any found at the start of a run are stale)."""
    stale = sorted(directory.glob(f"{TMP_PREFIX}*")) if directory.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _disk_full(err: BaseException) -> bool:
    """ENOSPC, or torch's zip writer's way of saying it (``unexpected pos``, ``write
    failed``), which carries no errno."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return "unexpected pos" in text or "file write failed" in text or "No space left" in text


def _mount_point(path: Path) -> str:
    p = path.resolve()
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return f"the file system mounted at {p}"


# What our checkpoints written before the tensor RNG format hold besides plain data:
# numpy arrays of the RNG state. Rebuilding an array runs no code of the file's
# choosing, so these few globals are allowed; nothing else is.
_NUMPY_GLOBALS: list[Any] = [
    np.ndarray,
    np.dtype,
    np.dtypes.UInt32DType,
    importlib.import_module(
        "numpy._core.multiarray" if np.__version__ >= "2" else "numpy.core.multiarray"
    )._reconstruct,
]


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file (or ``checkpoint.pth.tar`` inside a run directory) on CPU.

    A checkpoint is data, never code: the file is read with ``weights_only=True``
    (tensors, numbers, strings, lists, dicts; plus numpy arrays, for our older files),
    and a file that needs anything else to unpickle is refused, never executed.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pth.tar"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(_refusal(path, err)) from None
    except Exception as err:  # noqa: BLE001 - any other failure means "not a checkpoint"
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {err}") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{str(path)!r} is not a MoCo checkpoint (no 'state_dict')")
    ckpt["path"] = str(path)
    return ckpt


@dataclass
class LoopState:
    """Where the loop is: what a checkpoint records besides the weights."""

    epoch: int = 0  # epochs done
    step: int = 0  # optimiser steps done (past ``epoch`` epochs: a mid-epoch checkpoint)
    history: dict[str, Any] = field(default_factory=lambda: {"knn": {}})  # knn: epoch -> top1
    # the epoch in progress at a mid-epoch checkpoint: this rank's loss and correct sums
    # and the images it has seen, so the resumed epoch logs the same running means
    epoch_sums: list[float] = field(default_factory=lambda: [0.0, 0.0])
    epoch_seen: int = 0


class Checkpointer:
    """Saves and restores one run's ``checkpoint.pth.tar``: the model (official key
    schema), optimiser, scaler, loop state, every rank's RNG, config and plan.

    Every rank calls :meth:`save` (BN statistics are averaged and RNG states gathered
    over ranks); rank 0 alone writes, atomically.
    """

    def __init__(
        self,
        path: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        meta: dict[str, Any],
        device: torch.device | None = None,
    ) -> None:
        self.path = path
        self.device = device  # whose CUDA generator is saved (the training GPU)
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.meta = meta  # arch, config (YAML), derived (the plan): written as they are

    def save(self, state: LoopState, mid_epoch: bool = False) -> None:
        """Write ``state`` (all ranks call this). ``mid_epoch``: a stop signal's checkpoint
        in the middle of an epoch. The file holds the one-process BN statistics (the mean
        over ranks) as always, but the ranks keep their own running statistics, saved
        beside them, so a resume continues exactly where each rank was."""
        own_bn = _bn_stats(self.model) if mid_epoch and dist.world_size() > 1 else None
        own = {k: v.clone() for k, v in own_bn.items()} if own_bn is not None else None
        dist.average_bn_stats_(self.model)  # the running stats of the one-process run
        rngs = dist.all_gather_object(rng_state(self.device))
        sums = dist.all_gather_object(list(state.epoch_sums))  # each rank's own
        bn_per_rank = None
        if own is not None:
            bn_per_rank = dist.all_gather_object({k: v.cpu() for k, v in own.items()})
        if not dist.is_main():
            _restore_bn(self.model, own)
            return
        save_atomic(
            {
                "epoch": state.epoch,
                "arch": self.meta["arch"],
                "state_dict": to_official(self.model.state_dict()),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "step": state.step,
                "rng": rngs[0],
                "rng_per_rank": rngs,
                "config": self.meta["config"],
                "derived": self.meta["derived"],
                "history": state.history,
                "epoch_progress": {"sums_per_rank": sums, "seen": state.epoch_seen},
                "bn_per_rank": bn_per_rank,
                "version": __version__,
            },
            self.path,
        )
        _restore_bn(self.model, own)

    def restore(self, ckpt: dict[str, Any]) -> LoopState:
        """Weights, optimiser and scaler from ``ckpt`` (as :func:`load` returns it)."""
        self.model.load_state_dict(from_official(ckpt["state_dict"]))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        progress = ckpt.get("epoch_progress") or {"sums_per_rank": [[0.0, 0.0]], "seen": 0}
        per_rank = progress["sums_per_rank"]
        if len(per_rank) == dist.world_size():
            sums = list(per_rank[dist.rank()])
        else:  # another number of processes: rank 0 carries the total, so the means hold
            total = [sum(col) for col in zip(*per_rank, strict=True)]
            sums = total if dist.rank() == 0 else [0.0, 0.0]
        return LoopState(ckpt["epoch"], ckpt["step"], ckpt["history"], sums, progress["seen"])


def restore_rank_bn(model: nn.Module, ckpt: dict[str, Any]) -> None:
    """This rank's own BN running statistics from a mid-epoch checkpoint written by as
    many ranks. Call it after DDP has wrapped the model: wrapping broadcasts rank 0's
    buffers to every rank."""
    bn_per_rank = ckpt.get("bn_per_rank")
    if bn_per_rank and len(bn_per_rank) == dist.world_size():
        _restore_bn(model, bn_per_rank[dist.rank()])


def restore_rng(ckpt: dict[str, Any], world: int, device: torch.device | None = None) -> str | None:
    """Each rank's RNG as saved, so a resume is bitwise the uninterrupted run. With a
    different number of processes that is impossible: ranks are re-seeded instead, and
    the note to print is returned."""
    per_rank = ckpt.get("rng_per_rank") or [ckpt["rng"]]
    if len(per_rank) == world:
        set_rng_state(per_rank[dist.rank()], device)
        return None
    torch.manual_seed(int(ckpt["step"]) * 1000 + dist.rank())
    return (
        f"note: the checkpoint was written by {len(per_rank)} processes and this run has "
        f"{world}; training continues equivalently but not bitwise (augmentation RNG "
        "re-seeded per rank)"
    )


def _refusal(path: Path, err: Exception) -> str:
    """One line: which file, and what it would have needed us to run."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - a legacy (non-zip) file: fall back to torch's message
        unsafe = []
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    what = f"it needs {', '.join(unsafe[:3])} to unpickle" if unsafe else first
    return (
        f"refused to load {str(path)!r}: {what}. A checkpoint must hold tensors and plain "
        "data only (torch.load weights_only=True); nothing in it was run"
    )


def _bn_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    """The BN running means and variances of ``model`` (the live tensors), by name."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for attr in ("running_mean", "running_var"):
                t = getattr(m, attr)
                if isinstance(t, torch.Tensor):
                    out[f"{name}.{attr}"] = t
    return out


def _restore_bn(model: nn.Module, stats: dict[str, torch.Tensor] | None) -> None:
    """Put ``stats`` (from :func:`_bn_stats`) back into ``model``'s BN layers."""
    if stats is None:
        return
    with torch.no_grad():
        for key, value in _bn_stats(model).items():
            value.copy_(stats[key])
