"""``moco export``: a checkpoint's encoder as a torchvision, timm, detectron2, safetensors
or ONNX file."""

from __future__ import annotations

import argparse

from moco.cli.dispatch import Subparsers

FORMATS = ["torchvision", "detectron2", "timm", "safetensors", "onnx"]


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "export",
        help="convert a checkpoint's encoder for another library or runtime",
        description="Write the query encoder of a MoCo checkpoint (ours or official) for "
        "another library. torchvision: loads with strict=True into "
        "torchvision.models.<arch>(num_classes=N), or get_model(NAME) for "
        "model.arch=torchvision:NAME; the projection head is dropped and the classifier "
        "re-initialised (--fc init) or left out (--fc drop). timm: checked against timm's "
        "own model (our ResNets, or model.arch=timm:NAME at the run's channels and size; "
        "--num-classes 0: no classifier). detectron2: a .pkl with MoCo's rename table "
        "(stem, resN, norm, shortcut) and matching_heuristics (ResNets). safetensors: the "
        "backbone's state dict with its library's names (safetensors.torch.load_file). "
        "onnx: the encoder's pooled features (input 'images', output 'features', dynamic "
        "batch axis) at the run's channels and image size; needs pip install 'moco[onnx]'.",
    )
    p.add_argument("checkpoint", help="checkpoint file or run directory")
    p.add_argument("--format", choices=FORMATS, default="torchvision")
    p.add_argument(
        "--out",
        required=True,
        help="output file (a torch.save state dict; .safetensors; .onnx; detectron2 .pkl)",
    )
    p.add_argument(
        "--num-classes",
        type=int,
        default=1000,
        help="classifier outputs (default 1000; for timm, 0 = no classifier)",
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
    elif e.fmt == "safetensors":
        print(f"wrote {e.path}: {e.arch} backbone, {e.tensors} tensors (safetensors)")
    elif e.fmt == "onnx":
        print(f"wrote {e.path}: {e.arch} encoder, pooled features, dynamic batch (ONNX)")
    else:
        fc = "re-initialised" if args.fc == "init" else "dropped"
        print(f"wrote {e.path}: torchvision {e.arch} state dict, {e.tensors} tensors, fc {fc}")
    return 0
