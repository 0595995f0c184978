"""Data sources (bundled default, IDX directories) and the in-memory batch loader."""

from moco.data.idx import IDXFormatError, read_idx
from moco.data.loader import InMemoryLoader
from moco.data.sources import DataSourceError, ImageSplits, load_source

__all__ = [
    "DataSourceError",
    "IDXFormatError",
    "ImageSplits",
    "InMemoryLoader",
    "load_source",
    "read_idx",
]
