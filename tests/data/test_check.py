"""`moco data check`, called in-process: what it prints for a folder with broken files,
for an in-memory source, and its exit codes."""

import io

import numpy as np
from PIL import Image

from moco.cli import main


def _folder(root):
    rng = np.random.default_rng(0)
    for c, n in (("cat", 6), ("dog", 4)):
        (root / c).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / c / f"{i}.png")
    Image.new("P", (50, 40)).save(root / "dog" / "pal.png")
    (root / "cat" / "zero.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buf, "JPEG")
    (root / "dog" / "cut.jpg").write_bytes(buf.getvalue()[:300])
    (root / "dog" / "readme.jpg").write_text("hello")


def test_check_lists_counts_classes_sizes_and_broken_files(tmp_path, capsys):
    _folder(tmp_path)
    assert main(["data", "check", f"folder:{tmp_path}", "--load-size", "8"]) == 0
    out = capsys.readouterr().out
    assert f"source: folder {tmp_path}" in out
    assert "classes: 2" in out and " cat " in out and " dog " in out
    assert "unreadable: skipped 3 unreadable files of 14" in out
    assert f"{tmp_path / 'cat' / 'zero.jpg'}: empty file (0 bytes)" in out
    assert f"{tmp_path / 'dog' / 'cut.jpg'}: " in out
    assert f"{tmp_path / 'dog' / 'readme.jpg'}: not an image" in out
    assert "width  min 30  median 30  max 50" in out and "height min 20" in out
    assert "RGB 10, P 1" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert int(rows["train"][1]) + int(rows["held-out"][1]) == 11


def test_check_in_memory_source_and_exit_code_1(tmp_path, capsys):
    assert main(["data", "check", "bundled"]) == 0
    out = capsys.readouterr().out
    assert "source: bundled" in out and "images: uint8 1x28x28" in out and "Trouser" in out
    assert main(["data", "check", f"folder:{tmp_path / 'nope'}"]) == 1
    assert "does not exist" in capsys.readouterr().err
