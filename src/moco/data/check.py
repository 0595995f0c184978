"""The report of `moco data check SPEC`: what a source holds, and what could not be read."""

from __future__ import annotations

from pathlib import Path

import torch

from moco.data.folder import FilesReport, load_files
from moco.data.sources import load_source, resolve_source
from moco.data.splits import BUNDLED, FILE_KINDS


def check_source(spec: str, load_size: int, holdout_fraction: float = 0.1, seed: int = 0) -> str:
    """The text of `moco data check SPEC`: kind and path, images per split and per class,
    and for file sources the original sizes and modes and every unreadable file with its
    reason. Raises :class:`DataSourceError` only when the source itself cannot be read."""
    detected = ""
    if spec == BUNDLED:
        kind, path = "bundled", Path("(shipped with the package)")
    else:
        src = resolve_source(spec)
        kind, path, detected = src.kind, src.path, src.detected
    report: FilesReport | None = None
    if kind in FILE_KINDS:
        data, report = load_files(kind, path, load_size, holdout_fraction, seed)
    else:
        data = load_source(spec, holdout_fraction, seed)
    c, h, w = data.train_images.shape[1:]
    how = f" (detected: {detected})" if detected else ""
    lines = [f"source: {kind} {path}{how}", f"held out: {data.held_out}"]
    if report is not None:
        lines.append(f"stored: uint8 {c}x{h}x{w} per image (load size {load_size}); "
                     f"{'greyscale' if c == 1 else 'RGB'}")  # fmt: skip
    else:
        lines.append(f"images: uint8 {c}x{h}x{w}")
    splits = [("train", data.train_labels), ("held-out", data.test_labels)]
    lines += [f"{name:<9} {len(y):>8} images" for name, y in splits]
    if data.unlabelled_images is not None:
        lines.append(
            f"{'unlabelled':<9} {len(data.unlabelled_images):>8} images (pre-training only)"
        )
    labels = torch.cat([data.train_labels, data.test_labels])
    if bool((labels < 0).all()):
        lines.append("classes: none (unlabelled)")
    else:
        k = int(labels.max()) + 1
        names = data.classes or tuple(str(i) for i in range(k))
        width = max(len(n) for n in names)
        tr, te = (torch.bincount(y[y >= 0], minlength=k).tolist() for _, y in splits)
        lines.append(f"classes: {k} (label name: train / held-out)")
        lines += [f"  {i:>3} {names[i]:<{width}} {tr[i]:>7} / {te[i]}" for i in range(k)]
    if report is not None:
        lines += [f"image sizes before resizing ({report.files - len(report.unreadable)} read):"]
        lines += [f"  {s}" for s in report.size_summary()]
        lines.append(f"unreadable: {report.skipped or f'none of {report.files} files'}")
        lines += [f"  {d.path}: {d.error}" for d in report.unreadable]
    return "\n".join(lines)
