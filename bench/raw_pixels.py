"""The floor an encoder must beat: kNN and linear accuracy on raw pixels.

The same evaluation code as a checkpoint's (``moco knn``, ``moco lincls --protocol
small``), run on an "encoder" whose features are the normalised pixels themselves
(C x H x W values, no parameters): weighted kNN (cosine, t 0.1) at k 20 and k 200 with
the training split as memory and the held-out split as queries, and the linear probe
(30 epochs on cached features, lr 30 or as given, the epoch selected on a 10 %
validation split of the training data, the held-out split evaluated once).

    python bench/raw_pixels.py --data /usr/share/datasets/fashion-mnist
    python bench/raw_pixels.py --data bundled --k 20,200
"""

from __future__ import annotations

import moco  # noqa: F401  (first, as the CLI: idle OpenMP threads sleep; see moco/openmp.py)

# isort: split
import argparse
import dataclasses

import torch
from torch import nn

from moco.data.sources import load_source
from moco.encoders.base import as_encoder
from moco.eval.linear import PROTOCOLS, train_linear_probe
from moco.eval.monitor import knn_accuracy


class Pixels(nn.Module):
    """The Encoder protocol on raw pixels: ``forward_features`` flattens the (normalised)
    image; ``fc`` is an identity."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.feature_dim = channels * size * size
        self.fc = nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="bundled")
    parser.add_argument("--k", default="20,200")
    parser.add_argument("--t", type=float, default=0.1)
    parser.add_argument("--no-linear", action="store_true")
    parser.add_argument("--lr", default="30", help="linear probe lrs; the best on val is kept")
    args = parser.parse_args(argv)
    data = load_source(args.data)
    size, channels = data.image_size, data.channels
    mean, std = data.mean_std()
    pixels = Pixels(channels, size)
    as_encoder(pixels)  # what the evaluation asks of it
    print(f"{data.name}: {len(data.train_images)} train / {len(data.test_images)} held out")
    for k in (int(v) for v in args.k.split(",")):
        acc = knn_accuracy(pixels, data, size, mean, std, k, args.t, "backbone")
        print(f"raw pixels: kNN top-1 {acc:.4f} (k={k}, t={args.t})")
    if not args.no_linear:
        for lr in (float(v) for v in args.lr.split(",")):
            protocol = dataclasses.replace(PROTOCOLS["small"], lr=lr)
            r = train_linear_probe(pixels, data, protocol, size, mean, std)
            print(
                f"raw pixels: linear top-1 {r.test_top1:.4f} (protocol small, lr {lr:g}; "
                f"epoch {r.best_epoch} selected on val {r.val_top1:.4f})"
            )


if __name__ == "__main__":
    main()
