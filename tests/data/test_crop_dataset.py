"""Stage 1 of the streamed path (moco.data.crop_dataset): the views of one file, on
images built here with Pillow (odd modes, EXIF orientation) and a real photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from moco.augment.two_stage import CropFlip
from moco.augment.views import PRESETS
from moco.data.crop_dataset import CropFlipDataset, crop_flip_file

from .image_files import rgb

SPEC = PRESETS["v2"]


def test_views_equal_crop_flip_on_plain_files_and_use_reduced_decoding(tmp_path):
    data = pytest.importorskip("skimage.data")
    photo = tmp_path / "astronaut.jpg"  # 512 x 512: every DCT scale divides it
    Image.fromarray(data.astronaut()).save(photo, quality=90)
    files = [photo, rgb(tmp_path / "a.png", 0, (40, 30)), rgb(tmp_path / "b.jpg", 1, (400, 320))]
    crop = CropFlip(SPEC, 32, seed=5)
    reductions = set()
    for path in files:
        for index in range(6):
            views, error = crop_flip_file(crop, path, index, epoch=2)
            assert error == "" and views is not None
            ref = crop(path, index, 2)
            assert all(torch.equal(v, r) for v, r in zip(views, ref, strict=True))
            assert all(v.shape == (3, 32, 32) and v.dtype == torch.uint8 for v in views)
            with Image.open(path) as img:
                reductions.add(crop.plan(img.size[1], img.size[0], index, 2)[2])
    assert reductions > {1}  # some views were decoded at a reduced JPEG scale


def test_exif_orientation_is_applied_before_cropping(tmp_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50, 3), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # stored 50 x 30, displayed rotated: 30 x 50
    img.save(tmp_path / "phone.png", exif=exif)
    upright = ImageOps.exif_transpose(Image.open(tmp_path / "phone.png")).convert("RGB")
    crop = CropFlip(SPEC, 16)
    views, _ = crop_flip_file(crop, tmp_path / "phone.png", 3, 1)
    assert views is not None and upright.size == (30, 50)
    assert all(torch.equal(v, r) for v, r in zip(views, crop(upright, 3, 1), strict=True))


def test_odd_modes_are_converted_as_the_in_memory_path_does(tmp_path):
    Image.new("CMYK", (30, 20), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("P", (30, 20), 7).save(tmp_path / "p.png")
    Image.new("RGBA", (30, 20), (10, 20, 30, 0)).save(tmp_path / "rgba.png")  # transparent
    Image.fromarray(np.full((20, 30), 65535, np.uint16)).save(tmp_path / "deep.png")
    Image.new("L", (30, 20), 77).save(tmp_path / "grey.png")
    files = [(tmp_path / f, 0) for f in ("cmyk.jpg", "p.png", "rgba.png", "deep.png", "grey.png")]
    samples = [CropFlipDataset(files, CropFlip(SPEC, 8))[i] for i in range(len(files))]
    assert all(s.ok and s.views[0].shape == (3, 8, 8) for s in samples)
    cmyk, _, rgba, deep, grey = (s.views[0] for s in samples)
    assert cmyk[0].float().mean() > 200 and cmyk[1].float().mean() < 60  # cyan-free = red
    assert (rgba == 255).all()  # composited onto white, not black
    assert (deep == 255).all()  # 16 bit scaled by its depth
    assert (grey == 77).all()  # greyscale repeats its channel
    grey_only = CropFlipDataset(files[-1:], CropFlip(SPEC, 8, mode="L"))[0]
    assert grey_only.views[0].shape == (1, 8, 8)
