"""``moco presets``: the recipes, one line each (imports no torch)."""

from __future__ import annotations

import argparse

from moco.cli.dispatch import Subparsers


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "presets",
        help="list the presets",
        description="List the presets, one line each, and how to choose another backbone.",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from moco.config import list_presets

    presets = list_presets()
    width = max(map(len, presets))
    for name, about in presets.items():
        print(f"{name:<{width}}  {about}")
    print(BACKBONES)
    return 0


BACKBONES = (
    "\nany preset takes another backbone: model.arch=resnet18..resnet152 | vit_tiny | "
    "vit_small | vit_base | torchvision:NAME | timm:NAME (e.g. "
    "torchvision:mobilenet_v3_small, timm:convnext_atto). List the names with\n"
    "  python -c 'import torchvision; print(torchvision.models.list_models("
    "module=torchvision.models))'\n"
    "  python -c 'import timm; print(timm.list_models())'"
)
