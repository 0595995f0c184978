"""Decode one image file with Pillow into 8-bit "RGB" or "L", or say why it cannot be read.

Real image folders hold every mode Pillow knows, and a few files that are not images at
all. :func:`read_image` turns each into one of two modes, so that a whole source stacks
into one uint8 tensor:

- "RGB" stays; "CMYK", "YCbCr", "LAB", "HSV" and palette "P" images are converted to
  "RGB" (a palette's colours are kept exactly);
- anything with transparency ("RGBA", "LA", "PA", "P" with a transparent index,
  premultiplied "RGBa" / "La") is composited onto WHITE: the usual background of
  transparent product photos, icons and scans, where black (what dropping alpha gives
  for fully transparent pixels, whose colour is usually 0) would invent dark shapes;
- greyscale stays greyscale: "L" as it is, "1" as 0 / 255, and 16- or 32-bit integer
  images ("I;16*", "I") are scaled to 8 bit by their bit depth (65535 -> 255 for 16
  bit), not clipped, which would turn almost every 16-bit pixel white. "F" (float)
  images are read as [0, 1] when they lie there, else clipped to [0, 255].

Multi-frame files (GIF, TIFF) give their first frame; an EXIF orientation is applied,
so phone photos stand upright as they are displayed.

A file that cannot be read (empty, truncated, corrupt, not an image) is not an error of
the whole source: :func:`read_image` returns its reason, :func:`decode_image` warns once
(an :class:`UnreadableImageWarning` naming the file and the reason) and returns None, and
callers count the skipped files. Every image is fully decoded (``Image.load``), because
``Image.open`` reads only the header: a truncated JPEG opens fine and fails on its
pixels. ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set: it would fill the missing part
with grey and hide the damage.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Modes that carry transparency, and the opaque mode each becomes over white.
_ALPHA = {"RGBA": "RGB", "RGBa": "RGB", "LA": "L", "La": "L", "PA": "RGB"}


class UnreadableImageWarning(UserWarning):
    """One image file could not be read and was skipped (the message says which and why)."""


@dataclass(frozen=True)
class Decoded:
    """The outcome of reading one file: ``image`` ("RGB" or "L") or the ``error`` why not.

    ``mode`` and ``size`` (width, height) are what the file holds before any conversion
    (empty when the header itself cannot be read), for summaries such as `moco data check`.
    """

    path: Path
    image: Image.Image | None
    mode: str = ""
    size: tuple[int, int] = (0, 0)
    error: str | None = None


def read_image(path: str | Path, draft_size: int | None = None) -> Decoded:
    """Open, fully decode and convert ``path`` to "RGB" or "L"; never raises for bad files.

    ``draft_size`` lets JPEG decode at a reduced scale (DCT scaling, several times faster
    on large photos) whose sides stay at least ``draft_size``: only for callers that
    shrink the image to that size anyway. The whole file is still decoded, so damage is
    still found.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return Decoded(path, None, error="empty file (0 bytes)")
    except OSError as err:
        return Decoded(path, None, error=f"cannot open ({err.strerror or err})")
    mode, size = "", (0, 0)
    # Pillow's plugins raise many types for damaged files (OSError, SyntaxError,
    # ValueError, struct.error, IndexError, EOFError, DecompressionBombError, ...); each is
    # reported with its message and the file skipped, never ignored.
    try:
        with Image.open(path) as img:
            mode, size = img.mode, img.size
            if draft_size is not None and img.format == "JPEG":
                img.draft(img.mode, (draft_size, draft_size))
            img.load()  # the full decode: a truncated or corrupt body fails here
            out = to_rgb_or_l(ImageOps.exif_transpose(img) or img)
    except Image.UnidentifiedImageError:
        return Decoded(path, None, error="not an image Pillow can identify")
    except Exception as err:
        reason = str(err).strip() or type(err).__name__
        return Decoded(path, None, mode, size, error=f"{type(err).__name__}: {reason}")
    return Decoded(path, out, mode, size)


def decode_image(path: str | Path, draft_size: int | None = None) -> Image.Image | None:
    """:func:`read_image`'s image ("RGB" or "L"), or None after one warning naming the file
    and the reason."""
    d = read_image(path, draft_size)
    if d.image is None:
        warn_unreadable(d)
    return d.image


def warn_unreadable(d: Decoded) -> None:
    """The one warning of an unreadable file."""
    warnings.warn(f"{d.path}: unreadable image skipped ({d.error})", UnreadableImageWarning, 3)


def to_rgb_or_l(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> "RGB" (colour) or "L" (greyscale), as the module docstring says."""
    mode = img.mode
    if mode in ("RGB", "L"):
        return img
    if mode == "P":
        if "transparency" not in img.info:
            return img.convert("RGB")
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in _ALPHA:
        if mode in ("RGBa", "La", "PA"):  # premultiplied or palette: plain alpha first
            img = img.convert("RGBA" if mode != "La" else "LA")
        base = "L" if img.mode == "LA" else "RGB"
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert(base)
    if mode == "1":
        return img.convert("L")  # 0 / 255
    if mode.startswith("I"):
        return _scale_to_l(np.asarray(img), _bit_depth(img))
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        a = a * 255.0 if a.size and 0.0 <= a.min() and a.max() <= 1.0 else a
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...


def _bit_depth(img: Image.Image) -> int:
    """Bits per sample of an integer greyscale image: 16 for "I;16*"; for "I" (32-bit
    storage) the file's own BitsPerSample where it says one (TIFF), else the smallest of
    8 / 16 / 32 that holds the largest value (PNG's 16-bit greyscale can open as "I")."""
    if img.mode.startswith("I;16"):
        return 16
    tags = getattr(img, "tag_v2", None)
    if tags is not None and 258 in tags:
        bits = tags[258]
        bits = bits[0] if isinstance(bits, tuple) else bits
        if isinstance(bits, int) and 1 <= bits <= 32:
            return bits
    top = int(np.asarray(img).max()) if img.size[0] and img.size[1] else 0
    return 8 if top < 256 else 16 if top < 65536 else 32


def _scale_to_l(a: np.ndarray, bits: int) -> Image.Image:
    """Integer samples of ``bits`` bits -> 8-bit "L": v * 255 / (2**bits - 1), rounded;
    negative values (signed 32-bit storage) become 0."""
    x = np.clip(a.astype(np.float64), 0, None) * (255.0 / (2**bits - 1))
    return Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8), "L")
