"""Ours against lightly (the most-used maintained library with MoCo building blocks).

Every comparison runs both sides in this one process, interleaved round by round with
alternating order, and reports medians of wall time and of process CPU time (``time.
process_time``: when CPU time per call far exceeds wall time x threads, or wall time far
exceeds CPU time, the machine is busy and the ratio is the only figure to read).
lightly is an optional benchmark dependency (``pip install -e '.[bench]'``), never a
runtime or test one.

Sections (``--sections``, default all):

bn      one split-BN layer, forward + backward, on the default preset's first-stage
        activations (N, C, H, W) with G groups: ours as a lone layer (contiguous chunks,
        a transposed copy in and out), ours inside an encoder after
        ``interleave_groups`` (groups read through a view; the encoder reorders its
        input once, not timed here), and lightly's ``SplitBatchNorm`` (a view, running
        statistics of G x C).
step    one MoCo training step on the same encoder weights and the same two views: ours
        (``engine.build.build_model`` for the preset + ``engine.step.train_step``)
        against lightly's documented MoCo loop (``update_momentum`` of backbone and
        head, query forward, ``batch_shuffle`` / ``batch_unshuffle`` key forward without
        grad, ``NTXentLoss`` with a memory bank of K, backward, SGD) on a copy of our
        backbone whose BN layers are lightly's ``SplitBatchNorm`` with our G. FP32 and
        bf16 (autocast, both sides).
augment two-view MoCo v2 augmentation, images/s: ours (batched kornia on the uint8
        batch at 28 and 32 px; at 224 px from JPEGs, the CPU path: stage 1 per sample
        with the photometric ops on uint8 by Pillow, then a batched normalisation; and
        the GPU path run on the CPU: stage 1 crops, stage 2 batched kornia) against
        lightly's ``MoCoV2Transform`` per sample on PIL images + collate, in this
        process (0 workers on both sides).

    python bench/peer.py                            # everything, default preset shapes
    python bench/peer.py --sections step --threads 1 --repeats 20
    python bench/peer.py --sections step --device cuda --preset moco_cifar_demo --batch 512
"""

from __future__ import annotations

import moco  # noqa: F401  (first, as the CLI: idle OpenMP threads sleep; see moco/openmp.py)

# isort: split
import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

try:
    import lightly
    from lightly.loss import NTXentLoss
    from lightly.models.batchnorm import SplitBatchNorm
    from lightly.models.modules import MoCoProjectionHead
    from lightly.models.utils import batch_shuffle, batch_unshuffle, update_momentum
    from lightly.transforms import MoCoV2Transform

    MISSING = ""
except ImportError as err:  # --help still works; main() stops with this message
    MISSING = f"bench/peer.py needs lightly ({err}): pip install -e '.[bench]'"

from moco.augment.two_stage import CropFlip
from moco.augment.views import (
    PRESETS,
    ViewSpec,
    build_eval_transform,
    build_photometric_transform,
    build_view_transform,
)
from moco.config import load_config
from moco.engine.build import build_model
from moco.engine.step import train_step
from moco.layers.split_bn import SplitBatchNorm2d, interleave_groups

Timed = dict[str, tuple[float, float]]  # side -> (median wall s, median CPU s) per call


SYNC: list[Callable[[], None]] = []  # torch.cuda.synchronize when timing on a GPU


def measure(sides: dict[str, Callable[[], object]], warmup: int, repeats: int) -> Timed:
    """Median wall and process-CPU seconds per call of each side, round-robin (the
    device synchronised around each call)."""
    wall: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    names = list(sides)
    for r in range(warmup + repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            for sync in SYNC:
                sync()
            c0, t0 = time.process_time(), time.perf_counter()
            sides[name]()
            for sync in SYNC:
                sync()
            t1, c1 = time.perf_counter(), time.process_time()
            if r >= warmup:
                wall[name].append(t1 - t0)
                cpu[name].append(c1 - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in names}


def show(title: str, timed: Timed, ours: str, peer: str, per: int = 0) -> float:
    """Print the sides and ours / peer (time ratio: < 1 means ours is faster)."""
    print(title)
    for name, (w, c) in timed.items():
        rate = f"  {per / w:9.1f} img/s" if per else ""
        print(f"  {name:<46} {w * 1e3:9.2f} ms wall  {c * 1e3:9.2f} ms CPU{rate}")
    ratio = timed[ours][0] / timed[peer][0]
    print(f"  time ours / lightly: {ratio:.3f}  (CPU time: {timed[ours][1] / timed[peer][1]:.3f})")
    return ratio


# --- split BN ---------------------------------------------------------------------------


def bench_bn(args: argparse.Namespace) -> None:
    g, c = 8, 16  # the default preset: bn_splits 8, width 0.25 -> 16 channels at 28 px
    x = torch.randn(args.batch, c, 28, 28)
    lone = SplitBatchNorm2d(c, num_splits=g)
    inside = SplitBatchNorm2d(c, num_splits=g)
    interleave_groups(nn.Sequential(inside))  # flags the layer: groups through a view
    peer = SplitBatchNorm(c, g)
    grad = torch.randn_like(x)

    def fwd_bwd(layer: nn.Module) -> Callable[[], object]:
        def run() -> object:
            xi = x.detach().requires_grad_()
            layer(xi).backward(grad)
            return xi.grad

        return run

    for dtype in args.dtypes:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            timed = measure(
                {
                    "ours, lone layer (chunks: copy in and out)": fwd_bwd(lone),
                    "ours, in an interleaved encoder (a view)": fwd_bwd(inside),
                    "lightly SplitBatchNorm (a view)": fwd_bwd(peer),
                },
                args.warmup,
                args.repeats * 5,
            )
        title = f"split BN fwd+bwd, x {tuple(x.shape)}, G={g}, {dtype}"
        show(
            title,
            timed,
            "ours, in an interleaved encoder (a view)",
            "lightly SplitBatchNorm (a view)",
        )
        lone_vs = timed["ours, lone layer (chunks: copy in and out)"][0]
        print(
            f"  lone layer / lightly: {lone_vs / timed['lightly SplitBatchNorm (a view)'][0]:.3f}"
        )


# --- the MoCo step ----------------------------------------------------------------------


def lightly_backbone(encoder: nn.Module, g: int) -> nn.Module:
    """A copy of our backbone (no head, no interleaving hooks) whose BN layers are
    lightly's SplitBatchNorm with G groups, weights copied, running stats repeated."""
    net = copy.deepcopy(encoder)
    net._forward_pre_hooks.clear()
    net._forward_hooks.clear()
    for m in list(net.modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                twin = SplitBatchNorm(child.num_features, g)
                with torch.no_grad():
                    assert child.weight is not None and child.bias is not None
                    twin.weight.copy_(child.weight)
                    twin.bias.copy_(child.bias)
                setattr(m, child_name, twin)
    net.fc = nn.Identity()
    return net


class LightlyMoCo(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = MoCoProjectionHead(feature_dim, feature_dim, dim)
        self.backbone_m = copy.deepcopy(backbone)
        self.head_m = copy.deepcopy(self.head)
        for p in [*self.backbone_m.parameters(), *self.head_m.parameters()]:
            p.requires_grad = False


def bench_step(args: argparse.Namespace) -> None:
    cfg = load_config(args.preset, overrides=[f"optim.batch_size={args.batch}"])
    m, o = cfg.model, cfg.optim
    in_chans = 1 if args.preset == "default" else 3
    size = cfg.augment.size
    torch.manual_seed(0)
    dev = torch.device(args.device)
    ours = build_model(cfg, in_chans).to(dev).train()
    opt_ours = torch.optim.SGD(
        ours.encoder_q.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
    )
    enc: Any = ours.encoder_q
    peer = LightlyMoCo(lightly_backbone(enc, m.bn_splits), enc.feature_dim, m.dim)
    peer = peer.to(dev).train()
    criterion = NTXentLoss(temperature=m.temperature, memory_bank_size=(m.queue_size, m.dim))
    criterion = criterion.to(dev)
    opt_peer = torch.optim.SGD(
        [*peer.backbone.parameters(), *peer.head.parameters()],
        lr=o.lr,
        momentum=o.momentum,
        weight_decay=o.weight_decay,
    )
    x_q = torch.randn(args.batch, in_chans, size, size, device=dev)
    x_k = torch.randn(args.batch, in_chans, size, size, device=dev)
    print(
        f"step: preset {args.preset} ({m.arch.value} width {m.width}, {in_chans}x{size}x{size}), "
        f"N={args.batch}, K={m.queue_size}, G={m.bn_splits}, {dev}, "
        f"{sum(p.numel() for p in enc.parameters()) / 1e6:.2f} M params"
    )

    for dtype in args.dtypes:
        amp = torch.bfloat16 if dtype == "bf16" else None

        def ours_step(amp: torch.dtype | None = amp) -> object:
            return train_step(ours, opt_ours, x_q, x_k, amp_dtype=amp)

        def peer_step(amp: torch.dtype | None = amp) -> object:
            update_momentum(peer.backbone, peer.backbone_m, m.momentum)
            update_momentum(peer.head, peer.head_m, m.momentum)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp is not None):
                q = peer.head(peer.backbone(x_q).flatten(1))
                with torch.no_grad():
                    xs, shuffle = batch_shuffle(x_k)
                    k = peer.head_m(peer.backbone_m(xs).flatten(1))
                    k = batch_unshuffle(k, shuffle)
                loss = criterion(q, k)
            opt_peer.zero_grad(set_to_none=True)
            loss.backward()
            opt_peer.step()
            return loss

        timed = measure({"ours": ours_step, "lightly": peer_step}, args.warmup, args.repeats)
        show(f"MoCo step, {dtype}", timed, "ours", "lightly", args.batch)


# --- augmentation -----------------------------------------------------------------------


def images(n: int, h: int, w: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """(n, h, w, channels) uint8 smooth random fields plus noise."""
    coarse = torch.from_numpy(rng.uniform(0, 255, (n, channels, max(2, h // 8), max(2, w // 8))))
    smooth = F.interpolate(coarse.float(), size=(h, w), mode="bicubic", align_corners=False)
    noisy = smooth + torch.from_numpy(rng.normal(0, 12, (n, channels, h, w))).float()
    return noisy.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def bench_augment(args: argparse.Namespace) -> None:
    spec = PRESETS["v2"]
    rng = np.random.default_rng(0)
    for size, channels in ((28, 1), (32, 3)):
        mean, std = (0.5,) * channels, (0.25,) * channels
        arrays = images(args.n_small, size, size, channels, rng)
        batch = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
        ours_t = build_view_transform(spec, size, channels, mean, std)
        peer_t = MoCoV2Transform(input_size=size, normalize={"mean": list(mean), "std": list(std)})
        pil = [Image.fromarray(a[..., 0] if channels == 1 else a) for a in arrays]

        def ours_small(ours_t: nn.Module = ours_t, batch: torch.Tensor = batch) -> object:
            with torch.no_grad():
                return ours_t(batch), ours_t(batch)

        def peer_small(peer_t: Any = peer_t, pil: list[Image.Image] = pil) -> object:
            views = [peer_t(img) for img in pil]
            return torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])

        timed = measure({"ours (batched)": ours_small, "lightly": peer_small}, 1, args.repeats)
        title = f"augment {size}x{size}x{channels} from memory, two views, N={args.n_small}"
        show(title, timed, "ours (batched)", "lightly", args.n_small)

    for w, h in args.jpeg_sizes:
        augment_224(args, spec, rng, w, h)


def augment_224(
    args: argparse.Namespace, spec: ViewSpec, rng: np.random.Generator, width: int, height: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, a in enumerate(images(args.n224, height, width, 3, rng)):
            paths.append(Path(tmp) / f"{i}.jpg")
            Image.fromarray(a).save(paths[-1], quality=90)
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        stage1 = CropFlip(spec, 224)
        stage2 = build_photometric_transform(spec, 224, 3, mean, std)
        stage1_cpu = CropFlip(spec, 224, photometric=True)  # what CPU training runs
        normalise = build_eval_transform(224, mean, std, 224)
        peer224 = MoCoV2Transform(input_size=224)

        def two_stage(first: CropFlip, second: nn.Module) -> Callable[[], object]:
            def run() -> object:
                views = [first(p, i) for i, p in enumerate(paths)]
                with torch.no_grad():
                    return (
                        second(torch.stack([v[0] for v in views])),
                        second(torch.stack([v[1] for v in views])),
                    )

            return run

        def peer_224() -> object:
            views = []
            for p in paths:
                with Image.open(p) as f:
                    views.append(peer224(f.convert("RGB")))
            return torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])

        cpu, gpu = "ours, CPU path (Pillow ops in stage 1)", "ours, GPU path run on the CPU"
        sides = {cpu: two_stage(stage1_cpu, normalise), gpu: two_stage(stage1, stage2)}
        timed = measure({**sides, "lightly": peer_224}, 1, args.repeats)
        title = f"augment 224x224 from {width}x{height} JPEGs, two views, N={args.n224}"
        show(title, timed, cpu, "lightly", args.n224)
        print(f"  GPU path on a CPU / lightly: {timed[gpu][0] / timed['lightly'][0]:.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="bn,step,augment")
    parser.add_argument("--preset", default="default", help="the step section's preset")
    parser.add_argument("--batch", type=int, default=64, help="N images per step")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (medians)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's)")
    parser.add_argument("--device", default="cpu", help="the step section's device")
    parser.add_argument("--n-small", type=int, default=256, help="images at 28 and 32 px")
    parser.add_argument("--n224", type=int, default=32, help="JPEGs at 224 px")
    parser.add_argument(
        "--jpeg-sizes",
        default="500x375,1600x1200",
        help="JPEG sizes for 224 px (ImageNet's typical, a camera's downscaled)",
    )
    args = parser.parse_args(argv)
    if MISSING:
        sys.exit(MISSING)
    args.dtypes = args.dtypes.split(",")
    args.jpeg_sizes = [tuple(int(v) for v in s.split("x")) for s in args.jpeg_sizes.split(",")]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        SYNC.append(torch.cuda.synchronize)
    print(
        f"torch {torch.__version__}, lightly {lightly.__version__}, CPU, "
        f"threads={torch.get_num_threads()}, repeats={args.repeats} (+{args.warmup} warm-up)"
    )
    sections = {"bn": bench_bn, "step": bench_step, "augment": bench_augment}
    for name in args.sections.split(","):
        sections[name](args)


if __name__ == "__main__":
    main()
