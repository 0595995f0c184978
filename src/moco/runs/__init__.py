"""Reopen a run or a checkpoint: what the command line and the report share (above the
engine, evaluation and export)."""
