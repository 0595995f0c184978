"""Quality at equal wall time: ours against lightly on the bundled data.

Ours is ``moco pretrain --preset default`` (a subprocess, timed from its start to its
end, kNN monitors included). lightly then trains for the same wall time, per seed, with
its documented MoCo loop (as ``bench/peer.py``'s step section: ``update_momentum`` of
backbone and head, ``batch_shuffle`` / ``batch_unshuffle``, ``NTXentLoss`` with a memory
bank of K, SGD) on the same encoder (built after ``torch.manual_seed(seed)`` as ours is,
with lightly's ``SplitBatchNorm``), the same recipe (batch, K, m, tau, lr, weight decay,
BN groups, bf16 autocast where ours trains in bf16) and lightly's ``MoCoV2Transform``
with our view parameters (crop scale, blur sigma scaled to the image size as ours) per
sample in a DataLoader. Its best settings for the time: the number of DataLoader
workers that gives it the most images/s here (probed first, not counted), and a cosine
learning rate annealed over the wall-time budget (it knows the budget; ours anneals
over its epochs).

Both encoders are scored by the same function (``moco.eval.monitor.knn_accuracy``:
weighted kNN on pooled backbone features, k 200, t 0.1, the 5,000 training images as
memory, the 1,000 held-out images as queries), after training and outside the budget.
One standard error of one run's accuracy at 1,000 queries is ~0.014.

    python bench/peer_quality.py                      # seeds 0 and 1
    python bench/peer_quality.py --seeds 0 --workers 0,2
"""

from __future__ import annotations

import moco  # noqa: F401  (first, as the CLI: idle OpenMP threads sleep; see moco/openmp.py)

# isort: split
import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

try:
    import lightly
    from lightly.loss import NTXentLoss
    from lightly.models.utils import batch_shuffle, batch_unshuffle, update_momentum
    from lightly.transforms import MoCoV2Transform

    MISSING = ""
except ImportError as err:  # --help still works; main() stops with this message
    MISSING = f"bench/peer_quality.py needs lightly ({err}): pip install -e '.[bench]'"

from moco.augment.views import PRESETS
from moco.config import load_config
from moco.data.sources import load_source
from moco.data.splits import ImageSplits
from moco.device import amp_dtype, resolve_amp
from moco.engine.build import build_model
from moco.eval.monitor import knn_accuracy

sys.path.insert(0, str(Path(__file__).parent))
from peer import LightlyMoCo, lightly_backbone  # noqa: E402  (the step section's twin)


class Views(Dataset):
    """Two lightly views of each training image, from PIL images made once."""

    def __init__(self, images: torch.Tensor, transform: Any) -> None:
        self.pil = [Image.fromarray(a[0].numpy()) for a in images]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pil)

    def __getitem__(self, i: int) -> Any:
        return self.transform(self.pil[i])


def ours(seed: int, out: Path, epochs: int) -> tuple[float, float, int]:
    """(kNN top-1 at the end, wall seconds, epochs) of ``moco pretrain --preset default``."""
    name = f"ours-{seed}"
    cmd = [sys.executable, "-m", "moco", "pretrain", "--preset", "default"]
    cmd += [f"optim.epochs={epochs}"] if epochs else []
    cmd += [f"run.seed={seed}", f"run.out_dir={out}", f"run.name={name}", "run.progress=false"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    records = [
        json.loads(line) for line in (out / name / "metrics.jsonl").read_text().split("\n") if line
    ]
    knn = [r for r in records if r.get("kind") == "knn"]
    return float(knn[-1]["top1"]), wall, int(knn[-1]["epoch"])


class Peer:
    """lightly's loop on our encoder and recipe (module docstring)."""

    def __init__(self, seed: int, data: ImageSplits, workers: int) -> None:
        cfg = load_config("default", overrides=[f"run.seed={seed}"])
        m, o = cfg.model, cfg.optim
        self.cfg = cfg
        torch.manual_seed(seed)  # seeded as ours before its model is built
        enc: Any = build_model(cfg, data.channels).encoder_q
        self.model = LightlyMoCo(lightly_backbone(enc, m.bn_splits), enc.feature_dim, m.dim)
        self.model.train()
        self.criterion = NTXentLoss(
            temperature=m.temperature, memory_bank_size=(m.queue_size, m.dim)
        )
        self.lr = o.lr * o.batch_size / 256
        params = [*self.model.backbone.parameters(), *self.model.head.parameters()]
        self.opt = torch.optim.SGD(
            params, lr=self.lr, momentum=o.momentum, weight_decay=o.weight_decay
        )
        self.m = m.momentum
        self.bf16 = amp_dtype(resolve_amp(cfg.optim.amp.value, torch.device("cpu"))) is not None
        spec = PRESETS[cfg.augment.preset.value]
        size = cfg.augment.size
        scale = size / 224  # ours gives blur sigma in pixels of a 224 view
        mean, std = data.mean_std()
        transform = MoCoV2Transform(
            input_size=size,
            min_scale=cfg.augment.crop_min_scale,
            sigmas=(spec.blur_sigma[0] * scale, spec.blur_sigma[1] * scale),
            normalize={"mean": list(mean), "std": list(std)},
        )
        g = torch.Generator().manual_seed(seed)
        self.loader = DataLoader(
            Views(data.train_images, transform),
            batch_size=o.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=g,
        )

    def step(self, x_q: torch.Tensor, x_k: torch.Tensor) -> float:
        p = self.model
        update_momentum(p.backbone, p.backbone_m, self.m)
        update_momentum(p.head, p.head_m, self.m)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            q = p.head(p.backbone(x_q).flatten(1))
            with torch.no_grad():
                xs, shuffle = batch_shuffle(x_k)
                k = batch_unshuffle(p.head_m(p.backbone_m(xs).flatten(1)), shuffle)
            loss = self.criterion(q.float(), k.float())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def train(self, budget: float) -> tuple[int, float]:
        """Steps until ``budget`` seconds have passed; lr = cosine of the elapsed fraction."""
        t0 = time.perf_counter()
        steps = 0
        while True:
            for x_q, x_k in self.loader:
                elapsed = time.perf_counter() - t0
                if elapsed >= budget:
                    return steps, elapsed
                for group in self.opt.param_groups:
                    group["lr"] = self.lr * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
                self.step(x_q, x_k)
                steps += 1

    def images_per_s(self, steps: int) -> float:
        """Training throughput over ``steps`` steps after two warm-up steps (probe only)."""
        it = iter(self.loader)
        for _ in range(2):
            x_q, x_k = next(it)
            self.step(x_q, x_k)
        t0 = time.perf_counter()
        for _ in range(steps):
            x_q, x_k = next(it)
            self.step(x_q, x_k)
        return steps * self.cfg.optim.batch_size / (time.perf_counter() - t0)


def score(encoder: nn.Module, data: ImageSplits, cfg: Any) -> float:
    mean, std = data.mean_std()
    e = cfg.eval
    return knn_accuracy(
        encoder, data, cfg.augment.size, mean, std, e.knn_k, e.knn_t, e.knn_features.value
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--workers", default="0,1,2", help="lightly's DataLoader workers to probe")
    parser.add_argument("--probe-steps", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=0, help="ours' epochs (0: the preset's)")
    args = parser.parse_args(argv)
    if MISSING:
        sys.exit(MISSING)
    seeds = [int(s) for s in args.seeds.split(",")]
    data = load_source("bundled")
    print(
        f"torch {torch.__version__}, lightly {lightly.__version__}, CPU, "
        f"threads={torch.get_num_threads()}, bundled data ({len(data.train_images)} train / "
        f"{len(data.test_images)} held out)"
    )
    rates = {}
    for w in (int(v) for v in args.workers.split(",")):
        rates[w] = Peer(0, data, w).images_per_s(args.probe_steps)
        print(f"lightly probe: {w} DataLoader workers: {rates[w]:.0f} img/s")
    workers = max(rates, key=rates.__getitem__)
    print(f"lightly trains with {workers} workers")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            knn_ours, wall, epochs = ours(seed, Path(tmp), args.epochs)
            peer = Peer(seed, data, workers)
            steps, used = peer.train(wall)
            peer.model.eval()
            knn_peer = score(peer.model.backbone, data, peer.cfg)
            peer_epochs = steps / len(peer.loader)
            rows.append((seed, knn_ours, knn_peer, wall, epochs, peer_epochs))
            print(
                f"seed {seed}: ours {knn_ours:.4f} ({epochs} epochs in {wall:.0f} s, monitors "
                f"included) | lightly {knn_peer:.4f} ({peer_epochs:.1f} epochs in {used:.0f} s)"
            )
    n = len(data.test_images)
    mo = statistics.mean(r[1] for r in rows)
    mp = statistics.mean(r[2] for r in rows)
    se = math.sqrt(mo * (1 - mo) / n / len(rows) + mp * (1 - mp) / n / len(rows))
    print(
        f"mean over {len(rows)} seed(s): ours {mo:.4f}, lightly {mp:.4f}, ours - lightly "
        f"{mo - mp:+.4f}; one standard error of the difference (binomial, {n} queries per "
        f"run): {se:.4f}; of one run's accuracy: {math.sqrt(mo * (1 - mo) / n):.4f}"
    )
    if len(rows) > 1:  # the seeds paired: the spread of the per-seed differences
        diffs = [r[1] - r[2] for r in rows]
        paired = statistics.stdev(diffs) / math.sqrt(len(diffs))
        print(f"standard error of the mean difference over the paired seeds: {paired:.4f}")


if __name__ == "__main__":
    main()
