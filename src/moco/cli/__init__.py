"""The ``moco`` command: thin sub-commands that wire config, engine and evaluation.

One module per command (or small family), each with its parser next to its handler;
the work is done by the library (:mod:`moco.runs`, :mod:`moco.engine`, ...). Handlers
import torch and the library inside themselves, so ``moco --help`` and ``moco presets``
start without torch. Errors: see :mod:`moco.cli.dispatch`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from moco.cli import ablate, data, evaluate, export, presets, pretrain, report
from moco.cli.dispatch import Subparsers, run_handler

__all__ = ["main"]

EXAMPLES = """examples:
  moco pretrain                                   # default preset on the bundled data
  moco pretrain --preset moco_cifar_demo --data DIR optim.epochs=50
  moco pretrain --resume runs/default-20260101-120000
  torchrun --nproc_per_node 8 -m moco pretrain --preset moco_v2_imagenet --data folder:DIR
  moco data download cifar10 data/                # then --data cifar10:data/cifar-10-batches-py
  moco presets
  moco ablate momentum --epochs 10                # MoCo's m ablation, one table
  moco knn runs/default-20260101-120000/checkpoint.pth.tar
  moco lincls runs/RUN --protocol small
  moco export runs/RUN --format torchvision --out resnet.pth
"""

# each adds its sub-command(s), with a `handler`, in the order `moco --help` lists them
COMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    pretrain.add_parser,
    presets.add_parser,
    evaluate.add_parsers,  # knn, lincls, finetune, embed
    report.add_parser,
    export.add_parser,
    data.add_parser,
    ablate.add_parser,
)


def build_parser() -> argparse.ArgumentParser:
    from moco.version import __version__

    parser = argparse.ArgumentParser(
        prog="moco",
        description="Momentum Contrast (MoCo v1, v2, v3), SimCLR and the paper's end-to-end and "
        "memory-bank baselines: self-supervised pre-training and its evaluation.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"moco {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``moco COMMAND ...``; returns the exit status (argparse exits 2 itself)."""
    parser = build_parser()
    # overrides may come before or after options: collect the leftovers as overrides
    args, extra = parser.parse_known_args(argv)
    takes_overrides = "overrides" in vars(args)  # pretrain, ablate
    if extra and (not takes_overrides or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    if args.command is None:
        parser.print_help()
        return 2
    return run_handler(args.command, args.handler, args)
