"""A run report: one self-contained HTML page with curves, results, t-SNE and retrieval."""

from moco.report.page import write_report

__all__ = ["write_report"]
