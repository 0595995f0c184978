"""Continue pre-training an official MoCo v2 ResNet-50 on your own images (``--init``).

What it does, on CPU in a few minutes:

1. writes a checkpoint in the layout of the official ``main_moco.py`` (``arch``,
   ``epoch``, ``optimizer`` and a ``state_dict`` of ``module.encoder_q.*``,
   ``module.encoder_k.*``, ``module.queue``, ``module.queue_ptr``) for a ResNet-50 with
   the v2 MLP head. **Its weights are random**: they stand in for the downloaded
   ``moco_v2_800ep_pretrain.pth.tar`` (this machine has no network). Pass the real file
   with ``--official PATH`` and the same commands continue from it;
2. writes 200 small colour images in 4 class folders (``train/`` 40 a class, ``val/`` 10),
   four Fashion-MNIST classes of the bundled subset, as RGB PNGs;
3. runs ``moco pretrain --init OFFICIAL --data folder:DIR`` and the same run from random
   initialisation (same seed, hence the same augmentations and batches), and prints
   their kNN top-1 before and after, and how far each final encoder lies from the
   official weights.

With random stand-in weights the two kNN columns are two random networks, alike up to
noise (and a few dozen MoCo steps on 160 images lower the kNN of random features: the
early phase of training, not a verdict on continued pre-training). What the run shows is
the mechanics: the ``--init`` run starts from the file's encoders and stays near them
(relative distance well below 1), the run from random initialisation does not (about
1.1: two independent random networks). With a real checkpoint the first column is the
official encoder's kNN on your images, the number continued pre-training should beat.

    python scripts/init_from_official.py [--out DIR] [--epochs 4] [--lr 0.3] [--official PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from moco.cli import main as moco
from moco.core.moco import MoCo
from moco.data.sources import load_source
from moco.encoders.resnet import build_encoder
from moco.engine import checkpoint as ckpt_io

CLASSES = {0: "tshirt", 1: "trouser", 7: "sneaker", 8: "bag"}  # Fashion-MNIST labels
TRAIN, VAL = 40, 10  # images a class


def write_official_stand_in(path: Path) -> None:
    """What main_moco.py --mlp --moco-t 0.2 (MoCo v2) saves, with random weights."""
    torch.manual_seed(1234)  # not the runs' seed: else it would equal their random init
    model = MoCo(build_encoder("resnet50", 128, mlp=True), dim=128, queue_size=65536)
    optimizer = torch.optim.SGD(model.parameters(), 0.03, momentum=0.9, weight_decay=1e-4)
    torch.save(
        {
            "epoch": 200,
            "arch": "resnet50",
            "state_dict": ckpt_io.to_official(model.state_dict()),  # DDP's module. prefix
            "optimizer": optimizer.state_dict(),
        },
        path,
    )


def write_images(root: Path) -> None:
    """root/{train,val}/<class>/<i>.png: the first images of four classes, as RGB."""
    data = load_source("bundled")
    images, labels = data.train_images, data.train_labels
    for label, name in CLASSES.items():
        picked = (labels == label).nonzero().flatten()[: TRAIN + VAL].tolist()
        for i, index in enumerate(picked):
            split = "train" if i < TRAIN else "val"
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            grey = Image.fromarray(images[index, 0].numpy())
            grey.convert("RGB").save(folder / f"{i}.png")


def pretrain(name: str, data: Path, out: Path, epochs: int, lr: float, init: Path | None) -> dict:
    """One short MoCo v2 run through the command line; its result.json."""
    overrides = [
        "augment.size=64", "data.load_size=64", f"optim.epochs={epochs}", f"optim.lr={lr}",
        "optim.batch_size=32", "model.queue_size=128", "model.bn_splits=2",
        "model.momentum=0.99", f"eval.knn_every={epochs}", "eval.knn_k=20",
        "run.progress=false", "run.device=cpu", f"run.name={name}",
    ]  # fmt: skip
    argv = ["pretrain", "--preset", "moco_v2_imagenet", "--data", f"folder:{data}"]
    argv += ["--out", str(out), *(["--init", str(init)] if init else []), *overrides]
    print("$ moco " + " ".join(argv), flush=True)
    if moco(argv) != 0:
        raise SystemExit(f"the {name} run failed")
    return json.loads((out / name / "result.json").read_text())


def distance(checkpoint: Path, official: Path) -> float:
    """||w - w0|| / ||w0|| over the query encoder's weights (backbone and head)."""
    a = ckpt_io.load(checkpoint)["state_dict"]
    b = ckpt_io.load(official)["state_dict"]
    keys = [k for k in b if k.startswith("module.encoder_q.") and k.endswith(".weight")]
    diff = sum(float((a[k] - b[k]).pow(2).sum()) for k in keys)
    norm = sum(float(b[k].pow(2).sum()) for k in keys)
    return (diff / norm) ** 0.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="working directory (default: a new temp dir)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.3, help="lr for a batch of 256")
    parser.add_argument("--official", type=Path, help="a real main_moco.py ResNet-50 checkpoint")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="moco-init-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    official = args.official
    if official is None:
        official = out / "moco_v2_stand_in.pth.tar"
        write_official_stand_in(official)
        print(f"wrote {official}: official main_moco.py layout, RANDOM weights (a stand-in)")
    images = out / "images"
    write_images(images)
    print(f"wrote {images}: {len(CLASSES)} classes x ({TRAIN} train + {VAL} val) RGB PNGs")

    runs = {
        "--init": pretrain("init", images, out / "runs", args.epochs, args.lr, official),
        "random init": pretrain("random", images, out / "runs", args.epochs, args.lr, None),
    }
    print(f"\n{'start':<12} {'kNN epoch 0':>11} {'kNN epoch ' + str(args.epochs):>11} "
          f"{'distance to the official weights':>34}")  # fmt: skip
    for label, r in runs.items():
        d = distance(Path(r["checkpoint"]), official)
        print(f"{label:<12} {r['knn_top1_random_init']:>11.4f} {r['knn_top1']:>11.4f} {d:>34.4f}")
    init_distance = distance(Path(runs["--init"]["checkpoint"]), official)
    print(f"({time.time() - start:.0f} s; kNN k=20 on {len(CLASSES) * VAL} val images)")
    if init_distance > 0.5:
        print(
            "the --init run did not start from the checkpoint: run.init is not wired into "
            "the engine (moco.engine.init.init_from_checkpoint)"
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
