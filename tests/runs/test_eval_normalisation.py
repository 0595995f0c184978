"""Each checkpoint is evaluated as it was trained, and the records say how.

An official ImageNet encoder sees what ``main_lincls.py``'s validation feeds it
(``Resize(256)``, ``CenterCrop(224)``, ImageNet mean / std), checked pixel for pixel
against torchvision's own transforms; ours sees its run's size and statistics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from moco.augment.views import build_eval_transform
from moco.core.moco import MoCo
from moco.encoders.resnet import build_encoder
from moco.engine import checkpoint as ckpt_io
from moco.runs.embed import embed_checkpoint
from moco.runs.knn import knn_of_checkpoint
from moco.runs.load import IMAGENET_MEAN, IMAGENET_STD, load_for_eval
from moco.runs.records import lincls_record, linear_protocol

SIZES = [(300, 260), (256, 400), (224, 224), (97, 130)]  # (w, h): larger, smaller, square


def _official(path: Path, in_chans: int = 3, cifar_stem: bool = False) -> Path:
    """A main_moco.py-layout file (arch, epoch, state_dict, optimizer; no config)."""
    enc = build_encoder("resnet18", 32, True, cifar_stem=cifar_stem, in_chans=in_chans, width=0.125)
    state = ckpt_io.to_official(MoCo(enc, 32, 64).state_dict())
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": state, "optimizer": {}}, path)
    return path


def _folder(root: Path) -> list[Path]:
    """root/{train,val}/{a,b}/*.png: smooth random colour images of the sizes above (an
    8 x 8 grid of random colours, bicubic-upsampled, like a photo's low frequencies; white
    noise would turn the rounding of torchvision's resized sides into large differences)."""
    rng = np.random.default_rng(0)
    files = []
    for split in ("train", "val"):
        for c in ("a", "b"):
            for i, size in enumerate(SIZES):
                p = root / split / c / f"{i}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                grid = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
                grid.resize(size, Image.Resampling.BICUBIC).save(p)
                files.append(p)
    return files


def test_an_official_checkpoint_sees_what_main_lincls_validation_sees(tmp_path):
    files = _folder(tmp_path / "imgs")
    s = load_for_eval(_official(tmp_path / "official.pth.tar"), f"folder:{tmp_path / 'imgs'}")
    assert s.normalisation == "imagenet" and s.size == 224
    assert s.mean == IMAGENET_MEAN and s.std == IMAGENET_STD
    assert s.data.image_size == 224 and s.data.channels == 3
    ours = build_eval_transform(s.size, s.mean, s.std, s.data.image_size)(
        torch.cat([s.data.train_images, s.data.test_images])
    )

    def official(resize: int) -> torch.Tensor:
        t = transforms.Compose(
            [
                transforms.Resize(resize),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
            ]
        )
        return torch.stack([t(Image.open(f).convert("RGB")) for f in files])

    # ours are the same images in some order: each is one of main_lincls's, exactly where
    # torchvision's resized sides are whole numbers (256 x 400, 224 x 224), else within a
    # grey level on average (1 / 255 / 0.225 = 0.017 after normalisation: torchvision
    # rounds the longer side, which shifts its sampling grid a little)
    dist = (ours[:, None] - official(256)[None]).abs().flatten(2).mean(2)
    best = dist.min(1)
    assert sorted(best.indices.tolist()) == list(range(len(files)))
    exact = [i for i, j in enumerate(best.indices.tolist()) if int(files[j].stem) in (1, 2)]
    assert float(best.values[exact].max()) < 1e-6
    assert float(best.values.max()) < 0.03
    # the 224 crop of a 224 resize (the whole centre square) is visibly something else
    other = (ours - official(224)[best.indices]).abs().flatten(1).mean(1)
    assert float(other[exact].min()) > 10 * float(best.values.max())


def test_greyscale_data_of_a_fixed_size_is_cut_then_repeated_for_an_official_encoder(
    tmp_path, tiny_idx
):
    s = load_for_eval(_official(tmp_path / "official.pth.tar"), str(tiny_idx))
    raw = load_for_eval(_official(tmp_path / "grey.pth.tar", in_chans=1, cifar_stem=True),
                        str(tiny_idx))  # fmt: skip
    # 28 px: the centre round(28 * 224 / 256) = 24 px, which the transform resizes to 224
    assert s.normalisation == "imagenet" and s.size == 224 and s.data.image_size == 24
    assert s.data.channels == 3
    assert torch.equal(s.data.test_images[:, 1], raw.data.test_images[:, 0, 2:26, 2:26])
    assert torch.equal(s.data.test_images[:, 0], s.data.test_images[:, 2])


def test_an_official_layout_that_no_imagenet_recipe_trained_uses_the_datas_statistics(
    tmp_path, tiny_idx
):
    """A 1-channel CIFAR-stem encoder in the official layout: there is no recipe to follow."""
    s = load_for_eval(_official(tmp_path / "o.pth.tar", 1, cifar_stem=True), str(tiny_idx))
    assert s.normalisation == "data" and s.size == s.data.image_size == 28
    assert s.mean == pytest.approx(s.data.mean_std()[0])


def test_the_records_say_which_normalisation(untrained_checkpoint, tmp_path, tiny_idx):
    official = _official(tmp_path / "official.pth.tar")
    assert knn_of_checkpoint(official, str(tiny_idx), k=5)["normalisation"] == "imagenet"
    assert knn_of_checkpoint(untrained_checkpoint, k=5)["normalisation"] == "run"
    protocol = linear_protocol("small", epochs=1)
    assert lincls_record(untrained_checkpoint, protocol)["normalisation"] == "run"
    e = embed_checkpoint(untrained_checkpoint, tmp_path / "emb")
    assert e.meta["normalisation"] == "run"
    assert json.loads((tmp_path / "emb" / "embed.json").read_text())["normalisation"] == "run"
