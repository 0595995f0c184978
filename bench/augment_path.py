"""Two-view augmentation throughput: the per-sample torchvision pipeline vs ours.

Method. The same N images on both sides, the MoCo v2 view distribution (``PRESETS["v2"]``:
crop scale 0.2-1, jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2, blur p 0.5 with
sigma scaled to the view size, flip), two views per image, single process.
  a  per sample, as users write it today: ``transforms.Compose([RandomResizedCrop,
     RandomApply([ColorJitter], p=0.8), RandomGrayscale, RandomApply([GaussianBlur],
     p=0.5), RandomHorizontalFlip, ToTensor, Normalize])`` called twice per PIL image
     (``Image.fromarray`` of the stored array for 32x32, ``Image.open`` of a JPEG for
     224x224), then the views are collated (``torch.stack``).
  b  ours. 32x32: the fully batched kornia path on the in-memory uint8 (N, 3, 32, 32)
     tensor, ``build_view_transform`` called twice. 224x224 from JPEGs (~500x375): stage 1
     (``CropFlip``: decode, possibly at reduced size, crop, flip, resize) per sample, the
     uint8 views collated, then stage 2 (``build_photometric_transform``) once per view
     batch. Stage 1 alone is reported too: it is what DataLoader workers would run.
  streaming: the 224x224 case through ``StreamingLoader`` (stage 1 in DataLoader
     worker processes: 0 = in the main process, then 1, 2, ... ``--workers``), per epoch
     over the same JPEGs; and the in-memory folder decode (``folder._decode_all`` at
     ``--load-size``) on 1 thread vs ``folder.decode_threads()`` threads.
Each repeat times every side once, in an order that alternates between repeats, so
machine noise hits all sides alike; the report uses medians over ``--repeats``. Read the
ratio, not the absolute numbers, on a shared CPU.

    python bench/augment_path.py [--threads 2] [--repeats 5] [--n32 512] [--n224 64]
                                 [--workers 2] [--load-size 64]
"""

from __future__ import annotations

import moco  # noqa: F401  (first, as the CLI: idle OpenMP threads sleep; see moco/openmp.py)

# isort: split
import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from moco.augment.two_stage import CropFlip
from moco.augment.views import (
    PRESETS,
    ViewSpec,
    blur_kernel_size,
    build_photometric_transform,
    build_view_transform,
)
from moco.data import folder
from moco.data.stream import StreamingLoader

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torchvision_views(spec: ViewSpec, size: int) -> T.Compose:
    """``spec`` as the usual per-sample torchvision pipeline on PIL images."""
    k = blur_kernel_size(size)
    sigma = (spec.blur_sigma[0] * size / 224, spec.blur_sigma[1] * size / 224)
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=spec.scale, ratio=spec.ratio),
            T.RandomApply([T.ColorJitter(*spec.jitter)], p=spec.jitter_p),
            T.RandomGrayscale(p=spec.grayscale_p),
            T.RandomApply([T.GaussianBlur(k, sigma)], p=spec.blur_p),
            T.RandomHorizontalFlip(p=spec.flip_p),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )


def structured_images(n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(n, h, w, 3) uint8: smooth random colour fields plus noise (not flat, not white noise)."""
    coarse = rng.uniform(0, 255, (n, 3, max(2, h // 8), max(2, w // 8))).astype(np.float32)
    smooth = torch.nn.functional.interpolate(
        torch.from_numpy(coarse), size=(h, w), mode="bicubic", align_corners=False
    )
    noisy = smooth + torch.from_numpy(rng.normal(0, 12, (n, 3, h, w)).astype(np.float32))
    return noisy.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def time_it(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(sides: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each side, round-robin with alternating order."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(warmup + repeats):
        order = names if r % 2 == 0 else names[::-1]
        sample = {name: time_it(sides[name]) for name in order}
        if r >= warmup:
            for name, t in sample.items():
                times[name].append(t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def report(title: str, n: int, med: dict[str, float], base: str, ours: str) -> None:
    print(f"{title}  (N={n} images, 2 views each; images/s, medians)")
    for name, t in med.items():
        print(f"  {name:<44} {n / t:9.1f} img/s  {t * 1e3:9.1f} ms")
    print(f"  ratio ours / torchvision: {med[base] / med[ours]:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (medians)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--n32", type=int, default=512, help="images for the 32x32 case")
    parser.add_argument("--n224", type=int, default=64, help="JPEGs for the 224x224 case")
    parser.add_argument("--workers", type=int, default=2, help="most DataLoader workers tried")
    parser.add_argument("--load-size", type=int, default=64, help="in-memory folder decode size")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    spec = PRESETS["v2"]
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, CPU, spec v2, ", end="")
    print(f"repeats={args.repeats} (+{args.warmup} warm-up)")

    # 32x32 in memory: per-sample PIL pipeline vs the fully batched kornia path
    arrays = structured_images(args.n32, 32, 32, rng)
    batch = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
    tv32 = torchvision_views(spec, 32)
    ours32 = build_view_transform(spec, 32, 3, MEAN, STD)

    def torchvision_32() -> object:
        views = []
        for a in arrays:
            img = Image.fromarray(a)  # what CIFAR-style datasets do in __getitem__
            views.append((tv32(img), tv32(img)))
        return torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])

    def ours_32() -> object:
        with torch.no_grad():
            return ours32(batch), ours32(batch)

    a32, b32 = "a  torchvision per sample + collate", "b  batched kornia (build_view_transform x2)"
    med = run({a32: torchvision_32, b32: ours_32}, args.warmup, args.repeats)
    report("32x32 from memory", args.n32, med, a32, b32)

    # 224x224 from ~500x375 JPEGs: per-sample PIL pipeline vs stage 1 + stage 2
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, a in enumerate(structured_images(args.n224, 375, 500, rng)):
            paths.append(Path(tmp) / f"{i}.jpg")
            Image.fromarray(a).save(paths[-1], quality=90)
        tv224 = torchvision_views(spec, 224)
        stage1 = CropFlip(spec, 224)
        stage2 = build_photometric_transform(spec, 224, 3, MEAN, STD)

        def torchvision_224() -> object:
            views = []
            for p in paths:
                with Image.open(p) as f:
                    img = f.convert("RGB")
                views.append((tv224(img), tv224(img)))
            return torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])

        def stage1_224() -> tuple[torch.Tensor, torch.Tensor]:
            views = [stage1(p, i) for i, p in enumerate(paths)]
            return torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])

        def ours_224() -> object:
            q, k = stage1_224()
            with torch.no_grad():
                return stage2(q), stage2(k)

        a224 = "a  torchvision per sample + collate"
        b224 = "b  stage 1 per sample + stage 2 batched"
        s224 = "   stage 1 alone (CropFlip + collate)"
        med = run(
            {a224: torchvision_224, b224: ours_224, s224: stage1_224}, args.warmup, args.repeats
        )
        report("224x224 from 500x375 JPEGs", args.n224, med, a224, b224)
        print(f"  stage 1 alone / torchvision: {med[a224] / med[s224]:.2f}x")
        streaming(paths, spec, args)


def streaming(paths: list[Path], spec: ViewSpec, args: argparse.Namespace) -> None:
    """Stage 1 in DataLoader workers (StreamingLoader), and the threaded folder decode."""
    files = [(p, 0) for p in paths]
    batch = max(1, min(32, len(files) // 2))
    loaders = {
        w: StreamingLoader(files, CropFlip(spec, 224), batch, workers=w)
        for w in range(args.workers + 1)
    }

    def epoch(loader: StreamingLoader) -> Callable[[], object]:
        return lambda: [views for views, _, _ in loader]

    sides = {f"StreamingLoader, {w} workers": epoch(loader) for w, loader in loaders.items()}
    med = run(sides, args.warmup, args.repeats)
    n = len(loaders[0]) * batch
    print(f"stage 1 in DataLoader workers  (N={n} images per epoch, batch {batch}; medians)")
    base = med["StreamingLoader, 0 workers"]
    for name, t in med.items():
        print(f"  {name:<44} {n / t:9.1f} img/s  {base / t:5.2f}x of 0 workers")

    threads = folder.decode_threads()
    entries = [(p, 0) for p in paths]

    def decode(t: int) -> Callable[[], object]:
        return lambda: folder._decode_all(entries, args.load_size, folder.FilesReport(), t)

    sides = {f"folder decode, {t} thread(s)": decode(t) for t in sorted({1, threads})}
    med = run(sides, args.warmup, args.repeats)
    print(f"in-memory folder decode at {args.load_size}  (N={len(paths)} JPEGs; medians)")
    one = med["folder decode, 1 thread(s)"]
    for name, t in med.items():
        print(f"  {name:<44} {len(paths) / t:9.1f} img/s  {one / t:5.2f}x of 1 thread")


if __name__ == "__main__":
    main()
