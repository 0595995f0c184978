"""Image files built with Pillow for the file-source tests: random colour images, broken
files, and images whose pixel value names them (to find them again after a split)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def rgb(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> Path:
    """A random colour image (w, h) = ``size``; JPEG or PNG by the suffix."""
    a = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def broken_files(root: Path) -> list[Path]:
    """A zero-byte file, a truncated JPEG and a text file named .jpg."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty.png").write_bytes(b"")
    whole = rgb(root / "whole.jpg", 99, (64, 48)).read_bytes()
    (root / "whole.jpg").unlink()
    (root / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "text.jpg").write_text("not an image")
    return [root / "empty.png", root / "truncated.jpg", root / "text.jpg"]


def unique_images(root: Path, counts: dict[str, int], mode: str = "RGB") -> None:
    """root/<class>/i.png; image number k is filled with the value k (to find it again)."""
    k = 0
    for name, n in counts.items():
        for i in range(n):
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.new(mode, (12 + i, 10), (k,) * 3 if mode == "RGB" else k).save(
                root / name / f"{i}.png"
            )
            k += 1


def pixel_ids(x: torch.Tensor) -> list[int]:
    """The sorted numbers of :func:`unique_images`' images in a uint8 (N, C, H, W) batch."""
    return sorted(x[:, 0, 0, 0].tolist())


def photos(root: Path) -> list[tuple[Path, int]]:
    """12 colour images of growing sizes in root/c0, root/c1 (JPEG and PNG), labelled 0 / 1."""
    files = []
    for i in range(12):
        size = (40 + 8 * i, 30 + 4 * i)
        path = rgb(root / f"c{i % 2}" / f"{i}.{'jpg' if i % 3 else 'png'}", i, size)
        files.append((path, i % 2))
    return files
