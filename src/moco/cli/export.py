"""``moco export``: a checkpoint's encoder as a torchvision, timm or detectron2 file."""

from __future__ import annotations

import argparse

from moco.cli.dispatch import Subparsers


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "export",
        help="convert a checkpoint's encoder for another library",
        description="Write the query encoder of a MoCo checkpoint (ours or official) as a "
        "state dict for another library. detectron2: a .pkl with MoCo's rename table "
        "(stem, resN, norm, shortcut) and matching_heuristics. timm: checked against timm's "
        "own model (--num-classes 0: no fc). torchvision: loads with strict=True into "
        "torchvision.models.<arch>(num_classes=N); the projection head is dropped and fc "
        "re-initialised (--fc init) or left out (--fc drop).",
    )
    p.add_argument("checkpoint", help="checkpoint file or run directory")
    p.add_argument("--format", choices=["torchvision", "detectron2", "timm"], default="torchvision")
    p.add_argument("--out", required=True, help="output file (torch.save of a state dict)")
    p.add_argument(
        "--num-classes",
        type=int,
        default=1000,
        help="fc outputs (default 1000; for timm, 0 = no fc)",
    )
    p.add_argument("--fc", choices=["init", "drop"], default="init")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from moco.runs.export import export_checkpoint

    e = export_checkpoint(args.checkpoint, args.out, args.format, args.num_classes, args.fc)
    if e.fmt == "detectron2":
        print(f"wrote {e.path}: detectron2 pickle, {e.tensors} tensors (matching_heuristics)")
    elif e.fmt == "timm":
        print(f"wrote {e.path}: timm {e.arch} state dict (num_classes={args.num_classes})")
    else:
        fc = "re-initialised" if args.fc == "init" else "dropped"
        print(f"wrote {e.path}: torchvision {e.arch} state dict, {e.tensors} tensors, fc {fc}")
    return 0
