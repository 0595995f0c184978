"""Run one command's handler under the command line's error policy.

A :class:`~moco.errors.MocoError` is a mistake the user can fix: one line on stderr,
``moco COMMAND: error: MESSAGE``, exit status 1. Any other exception is a bug and keeps
its traceback. A run stopped by SIGTERM / SIGINT saves a checkpoint, says how to
resume and exits 128 + the signal; a Ctrl-C anywhere else exits 130 (the last
checkpoint is intact). Under torchrun a rank that stops, for whatever reason, says which
rank it is and why in one line, exit 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from types import ModuleType
from typing import TypeAlias

from moco.errors import MocoError, RunInterrupted

Handler: TypeAlias = Callable[[argparse.Namespace], int]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def run_handler(command: str, handler: Handler, args: argparse.Namespace) -> int:
    """``handler(args)``'s exit status, or the status of the error it raised."""
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint of the run is intact", file=sys.stderr)
        return 130
    except Exception as err:
        dist = _loaded_dist()
        if isinstance(err, RunInterrupted) and (dist is None or dist.is_main()):
            print(f"moco {command}: {err}", file=sys.stderr, flush=True)
            return err.exit_code
        if isinstance(err, RunInterrupted):
            return err.exit_code
        if dist is not None and dist.world_size() > 1:  # under torchrun: which rank, and why
            print(distributed_failure(command, err), file=sys.stderr, flush=True)
            return 1
        if not isinstance(err, MocoError):
            raise
        print(f"moco {command}: error: {err}", file=sys.stderr)
        return 1
    finally:
        dist = _loaded_dist()
        if dist is not None:
            dist.shutdown()


def _loaded_dist() -> ModuleType | None:
    """``moco.dist`` if a handler imported it, else None. A process group is only ever
    created through ``moco.dist``, so when it is not loaded there is none to ask about or
    shut down, and commands that never touch torch (``presets``, ``--help``) stay free of
    torch's import time."""
    return sys.modules.get("moco.dist")


def distributed_failure(command: str, err: BaseException) -> str:
    """One clear message for a rank that stops: its own error, or a lost peer."""
    from moco import dist

    where = f"moco {command} [rank {dist.rank()}/{dist.world_size()}]"
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    lost = any(
        s in str(err)
        for s in ("Connection reset", "Connection closed", "Timed out", "timed out", "Broken pipe",
                  "ncclRemoteError", "remote process exit", "communicator was aborted",
                  "Gloo", "gloo", "watchdog", "Watchdog")
    )  # fmt: skip
    if lost:
        return (
            f"{where}: error: a collective with the other processes failed ({first}). "
            "Another process exited or hung (a collective waits at most run.dist_timeout "
            "seconds); the first failure in torchrun's summary names its rank, and that rank's "
            "log the cause. The last checkpoint is intact: continue with "
            "`torchrun ... -m moco pretrain --resume RUN_DIR` (torchrun --max-restarts and a "
            "fixed run.name do this automatically)."
        )
    return f"{where}: error: {type(err).__name__}: {first}"
