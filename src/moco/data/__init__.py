"""Data sources (bundled default, IDX, CIFAR-10/100, STL-10, image folders and file lists)
and the in-memory batch loader.

Pre-training reads data through one interface, :mod:`moco.data.interface`
(``open_data`` -> ``PretrainData``), in memory or streamed from files; it is not imported
here, so that reading a source does not load the streaming machinery.
"""

from moco.data.decode import UnreadableImageWarning, decode_image, read_image
from moco.data.idx import IDXFormatError, read_idx
from moco.data.loader import InMemoryLoader
from moco.data.sources import KINDS, DataSourceError, ImageSplits, load_source, parse_source

__all__ = [
    "KINDS",
    "DataSourceError",
    "IDXFormatError",
    "ImageSplits",
    "InMemoryLoader",
    "UnreadableImageWarning",
    "decode_image",
    "load_source",
    "parse_source",
    "read_idx",
    "read_image",
]
