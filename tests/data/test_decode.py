"""Every Pillow mode a real folder holds decodes to 8-bit "RGB" or "L"; broken files are
skipped with exactly one warning each (images built here with Pillow and numpy)."""

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from moco.data.decode import UnreadableImageWarning, decode_image, read_image, to_rgb_or_l


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_rgb_and_greyscale_stay_as_they_are(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = decode_image(_save(Image.fromarray(a), tmp_path / "a.png"))
    assert out is not None and out.mode == "RGB" and np.array_equal(np.asarray(out), a)
    g = a[..., 0]
    out = decode_image(_save(Image.fromarray(g), tmp_path / "g.png"))
    assert out is not None and out.mode == "L" and np.array_equal(np.asarray(out), g)


def test_sixteen_bit_is_scaled_by_its_depth_not_clipped(tmp_path):
    a = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(a), tmp_path / "d.png")
    d = read_image(path)
    assert d.mode in ("I;16", "I") and d.image is not None and d.image.mode == "L"
    assert np.asarray(d.image).tolist() == [[0, 1, 128, 255]]
    # 32-bit storage ("I") without a stated depth: the smallest depth that holds the values
    out = to_rgb_or_l(Image.fromarray(a.astype(np.int32)))
    assert out.mode == "L" and np.asarray(out).tolist() == [[0, 1, 128, 255]]
    out = to_rgb_or_l(Image.fromarray(np.array([[0, 255]], np.int32)))
    assert np.asarray(out).tolist() == [[0, 255]]


def test_cmyk_palette_one_bit_and_alpha(tmp_path):
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_image(_save(cmyk, tmp_path / "c.jpg", quality=100))
    assert out is not None and out.mode == "RGB" and out.size == (4, 4)
    r, g, b = out.getpixel((1, 1))
    assert r > 240 and g < 15 and b < 15

    p = Image.new("P", (4, 4))
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p.putpixel((2, 1), 1)
    out = decode_image(_save(p, tmp_path / "p.png"))
    assert out is not None and out.mode == "RGB" and out.getpixel((2, 1)) == (10, 200, 30)
    assert out.getpixel((0, 0)) == (0, 0, 0)

    p.info["transparency"] = 0  # index 0 transparent: over white
    out = decode_image(_save(p, tmp_path / "pt.png", transparency=0))
    assert out is not None and out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((2, 1)) == (10, 200, 30)
    out = decode_image(_save(p.convert("RGB").convert("P"), tmp_path / "pt.gif"))
    assert out is not None and out.mode == "RGB"

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)  # transparent black -> white
    rgba[0, 1] = (200, 0, 0, 255)  # opaque red stays
    rgba[1, 0] = (0, 0, 0, 128)  # half black over white -> mid grey
    out = decode_image(_save(Image.fromarray(rgba), tmp_path / "a.png"))
    assert out is not None and out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (200, 0, 0)
    assert all(abs(v - 127) <= 1 for v in out.getpixel((0, 1)))

    la = Image.fromarray(np.array([[[0, 0], [50, 255]]], np.uint8))
    out = decode_image(_save(la, tmp_path / "la.png"))
    assert out is not None and out.mode == "L" and np.asarray(out).tolist() == [[255, 50]]

    one = Image.fromarray(np.array([[True, False]]))
    out = decode_image(_save(one, tmp_path / "one.png"))
    assert out is not None and out.mode == "L" and np.asarray(out).tolist() == [[255, 0]]


def _jpeg(tmp_path, name="ok.jpg") -> bytes:
    a = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("cut.jpg", None, "truncated"),
        ("noise.png", bytes(range(256)) * 8, "not an image"),
        ("notes.jpg", b"this is text, not a JPEG\n" * 10, "not an image"),
    ],
)
def test_unreadable_files_give_none_and_one_warning(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content if content is not None else _jpeg(tmp_path)[:600])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert decode_image(path) is None
        assert decode_image(path, draft_size=8) is None  # the reduced decode finds it too
    assert len(caught) == 2 and all(w.category is UnreadableImageWarning for w in caught)
    message = str(caught[0].message)
    assert str(path) in message and reason in message.lower()
