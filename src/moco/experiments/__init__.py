"""Sweeps built from whole pre-training runs (the paper's ablations), above the engine."""
