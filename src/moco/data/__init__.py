"""Data sources (bundled default, IDX, CIFAR-10/100, STL-10) and the in-memory batch loader."""

from moco.data.idx import IDXFormatError, read_idx
from moco.data.loader import InMemoryLoader
from moco.data.sources import KINDS, DataSourceError, ImageSplits, load_source, parse_source

__all__ = [
    "KINDS",
    "DataSourceError",
    "IDXFormatError",
    "ImageSplits",
    "InMemoryLoader",
    "load_source",
    "parse_source",
    "read_idx",
]
