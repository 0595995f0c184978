"""The mistakes a user can make, as one family of exceptions (a leaf: imports nothing).

Every error a user can cause and fix (a config value, a data source, a checkpoint, an
export, a run that diverges) is a :class:`MocoError`. The command line prints those in
one line and exits non-zero; any other exception is a bug and keeps its traceback.
Each class also derives from the built-in exception it used to be, so ``except
ValueError`` in user code keeps working.
"""

from __future__ import annotations


class MocoError(Exception):
    """A mistake in what the user asked for or handed us; the message says how to fix it."""


class ConfigError(MocoError, ValueError):
    """A preset, key or value the config does not accept."""


class DataSourceError(MocoError, ValueError):
    """The data source is missing, empty or not in a format we read."""


class CheckpointError(MocoError, ValueError):
    """A checkpoint is missing, unreadable or not one of ours / the official ones."""


class ExportError(MocoError, ValueError):
    """The state dict does not have the keys or shapes the target format needs."""


class NonFiniteLossError(MocoError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


class OutputExistsError(MocoError, FileExistsError):
    """An output directory or file already holds something we would overwrite."""


class NotARunError(MocoError, FileNotFoundError):
    """A path that should be a run directory (or hold one) is not one."""


class RunInterrupted(MocoError):
    """A run stopped by a signal (SIGTERM from a scheduler, SIGINT) after saving a
    checkpoint of the step it had reached; the message names the resume command."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention for death by a signal
