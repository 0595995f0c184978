"""``moco presets``: the recipes, one line each (imports no torch)."""

from __future__ import annotations

import argparse

from moco.cli.dispatch import Subparsers


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "presets", help="list the presets", description="List the presets, one line each."
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from moco.config import list_presets

    presets = list_presets()
    width = max(map(len, presets))
    for name, about in presets.items():
        print(f"{name:<{width}}  {about}")
    return 0
