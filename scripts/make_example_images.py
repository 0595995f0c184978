"""Write a small folder of generated colour images, one sub-folder per class.

The README's "your own images" example runs on it, so it stands in for a folder of
photos: JPEG files of a few sizes, in ``DIR/<class>/<class>-NNN.jpg``. Each class has its
own structure (stripes at any angle, concentric rings around any centre, scattered
dots), while colours, scale, position and noise are drawn per image, so colour alone
does not tell the classes apart. The same arguments give the same files (one seed).

    python scripts/make_example_images.py photos/                  # 60 images, 3 classes
    python scripts/make_example_images.py photos400/ --per-class 134

Needs numpy and Pillow only (both come with the package's dependencies).
"""

from __future__ import annotations

import argparse
import colorsys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

# one function per class: (the image's pixel grid in [-1, 1], rng) -> pattern in [0, 1]
Pattern = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def stripes(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, np.pi)
    freq = rng.uniform(3, 7)
    u = x * np.cos(angle) + y * np.sin(angle)
    return 0.5 + 0.5 * np.sin(2 * np.pi * freq * u / 2 + rng.uniform(0, 2 * np.pi))


def rings(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cx, cy = rng.uniform(-0.5, 0.5, 2)
    freq = rng.uniform(3, 6)
    r = np.hypot(x - cx, y - cy)
    return 0.5 + 0.5 * np.sin(2 * np.pi * freq * r + rng.uniform(0, 2 * np.pi))


def dots(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros_like(x)
    radius = rng.uniform(0.08, 0.16)
    for cx, cy in rng.uniform(-1, 1, (int(rng.integers(6, 14)), 2)):
        out = np.maximum(out, np.hypot(x - cx, y - cy) < radius)
    return out


CLASSES: dict[str, Pattern] = {"stripes": stripes, "rings": rings, "dots": dots}


def colour(rng: np.random.Generator) -> np.ndarray:
    """A random saturated RGB colour in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.5, 1), rng.uniform(0.6, 1)))


def image(pattern: Pattern, rng: np.random.Generator) -> Image.Image:
    """One image of a class: its pattern between two random colours, plus noise."""
    w, h = int(rng.integers(72, 129)), int(rng.integers(72, 129))
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w) * w / h, indexing="ij")
    p = pattern(x, y, rng)[..., None]
    a = p * colour(rng) + (1 - p) * colour(rng) * rng.uniform(0.2, 0.7)
    a = a + rng.normal(0, 0.05, a.shape)
    return Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8))


def make(root: Path, per_class: int, seed: int = 0) -> int:
    """Write ``per_class`` images of each class under ``root``; return how many."""
    for c, (name, pattern) in enumerate(CLASSES.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng([seed, c, i])
            image(pattern, rng).save(root / name / f"{name}-{i:03d}.jpg", quality=90)
    return per_class * len(CLASSES)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=Path, help="folder to write (created if missing)")
    p.add_argument("--per-class", type=int, default=20, help="images per class (default 20)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.per_class < 1:
        p.error("--per-class must be at least 1")
    n = make(args.dir, args.per_class, args.seed)
    print(f"wrote {n} images in {len(CLASSES)} class folders under {args.dir}: "
          f"{', '.join(CLASSES)}")  # fmt: skip


if __name__ == "__main__":
    main()
