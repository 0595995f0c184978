"""The package version (a leaf, so that any module can record it)."""

__version__ = "0.1.0"
