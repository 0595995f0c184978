"""Metrics to a JSON-lines file (``metrics.jsonl``) and to TensorBoard (``tb/``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends one JSON object per record; mirrors numbers to TensorBoard as kind/name.

    ``keep_until``: the step a resumed run continues from (-1: a run started again in
    place). Records after it, written by the part of the run that was lost, are dropped
    from ``metrics.jsonl`` (rewritten atomically) and purged from TensorBoard, so the
    history holds each step once.
    """

    def __init__(
        self, run_dir: Path, tensorboard: bool = True, keep_until: int | None = None
    ) -> None:
        self.path = run_dir / "metrics.jsonl"
        resumed = keep_until is not None and self.path.exists()
        if resumed:
            assert keep_until is not None
            _cut_back(self.path, keep_until)
        self._file = self.path.open("a")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = keep_until + 1 if resumed and keep_until is not None else None
            self._tb = SummaryWriter(str(run_dir / "tb"), purge_step=purge)

    def log(self, kind: str, step: int, **values: Any) -> None:
        self._file.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, value in values.items():
                if isinstance(value, int | float) and name not in ("epoch",):
                    self._tb.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of a run's ``metrics.jsonl``."""
    with (Path(run_dir) / "metrics.jsonl").open() as f:
        return [json.loads(line) for line in f if line.strip()]


def _cut_back(path: Path, keep_until: int) -> None:
    """Keep the records of steps <= ``keep_until`` (and any line that does not parse)."""
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            if int(json.loads(line)["step"]) > keep_until:
                continue
        except (ValueError, KeyError, TypeError):
            pass
        kept.append(line)
    tmp = path.with_name(f".{path.name}.cut")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)
