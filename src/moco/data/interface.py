"""The one data interface of pre-training: what the engine asks of data, whichever path.

:func:`open_data` reads a source either into memory (:func:`~moco.data.sources.load_source`,
wrapped as :class:`~moco.data.in_memory.InMemoryData`) or as a file listing to stream
(:func:`~moco.data.file_splits.list_source`, wrapped as
:class:`~moco.data.streamed.StreamedData`). Both are a :class:`PretrainData`: the training
loop iterates its :class:`Batches` of :class:`TrainBatch` es and applies its
``view_transform``, and the kNN monitor (:func:`moco.eval.monitor.knn_monitor`) reads its
``eval_splits``; neither asks which path it has. The types are defined in
:mod:`moco.data.contract` (a leaf, so the implementations can use them) and re-exported
here.
"""

from __future__ import annotations

from moco.data.contract import Batches, EvalSplit, PretrainData, TrainBatch
from moco.data.file_splits import list_source
from moco.data.in_memory import InMemoryData
from moco.data.sources import load_source
from moco.data.streamed import StreamedData

__all__ = [
    "Batches",
    "EvalSplit",
    "InMemoryData",
    "PretrainData",
    "StreamedData",
    "TrainBatch",
    "open_data",
]


def open_data(
    source: str, holdout_fraction: float, seed: int, load_size: int | None, stream: bool
) -> PretrainData:
    """The data named by ``source`` (``data.source``), held out with ``holdout_fraction``
    and ``seed`` where the source has no held-out split of its own.

    ``stream=False``: every image decoded into memory (image files at ``load_size``);
    ``stream=True``: image files listed only, and decoded in DataLoader workers at every
    step (``load_size`` unused; other kinds of source are refused).
    """
    if stream:
        return StreamedData(list_source(source, holdout_fraction, seed))
    return InMemoryData(load_source(source, holdout_fraction, seed, load_size))
