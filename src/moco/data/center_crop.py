"""An image file as the in-memory path stores it: its centre square, resized.

:func:`decode_center_crop` reads one file (:func:`~moco.data.decode.read_image`) and
resizes its shorter side to ``size`` while cutting the centre ``size`` x ``size`` square,
in one bilinear (antialiased) resampling (:func:`resize_center_crop`); smaller images are
upscaled the same way. :func:`chw` makes the (C, H, W) tensor of a given mode. Many files
are decoded on :func:`decode_threads` threads by :func:`map_ordered`, in file order, so
the results (and the warnings of their callers) are those of one thread.

Used by the in-memory image-file path (:mod:`moco.data.folder`), by the statistics of
streamed data (:mod:`moco.data.file_splits`) and by its evaluation batches
(:mod:`moco.data.eval_batches`), so all three see the same pixels.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from moco.data.decode import Decoded, read_image

_In = TypeVar("_In")
_Out = TypeVar("_Out")


def decode_center_crop(path: Path, size: int) -> tuple[Decoded, np.ndarray | None]:
    """One file read as the in-memory path stores it: (what reading found, the uint8
    (size, size) or (size, size, 3) centre crop, or None when the file is unreadable).
    JPEGs decode at a reduced scale whose sides stay >= ``size``."""
    d = read_image(path, draft_size=size)
    if d.image is None:
        return d, None
    return d, np.asarray(resize_center_crop(d.image, size))


def decode_threads() -> int:
    """Threads for decoding image files: min(8, CPUs this process may use)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cpus or 1))


def map_ordered(
    fn: Callable[[_In, int], _Out], items: Sequence[_In], size: int, threads: int
) -> Iterator[_Out]:
    """``fn(item, size)`` for every item, in order, on ``threads`` threads.

    At most ``4 * threads`` results wait to be consumed, so decoding a large folder holds a
    few dozen decoded images at a time, not the whole folder. One thread: a plain loop.
    """
    if threads <= 1 or len(items) <= 1:
        yield from (fn(x, size) for x in items)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="moco-decode") as pool:
        pending: deque[Future[_Out]] = deque()
        for x in items:
            pending.append(pool.submit(fn, x, size))
            if len(pending) >= 4 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """The shorter side resized to ``size`` and the centre square kept: one bilinear
    (antialiased) resampling of the centre square of the original. Upscales small images."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    box = (left, top, left + side, top + side)
    return img.resize((size, size), Image.Resampling.BILINEAR, box=box)


def chw(arr: np.ndarray, mode: str) -> torch.Tensor:
    """uint8 (H, W) or (H, W, 3) -> (C, H, W) with C = 1 for mode "L", 3 for "RGB":
    greyscale repeats its channel (as the in-memory stacking does), colour becomes "L"
    by Pillow's ITU-R 601 conversion."""
    if mode == "L" and arr.ndim == 3:
        arr = np.asarray(Image.fromarray(arr).convert("L"))
    x = torch.from_numpy(np.array(arr))  # a copy: arrays of PIL images are read-only
    if x.ndim == 2:
        x = x.unsqueeze(0)
        return x.expand(3, -1, -1).contiguous() if mode == "RGB" else x
    return x.permute(2, 0, 1).contiguous()
