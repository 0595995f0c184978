"""``moco pretrain``: pre-train an encoder, or continue a run from its checkpoint."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from moco.cli.dispatch import Subparsers
from moco.errors import ConfigError

if TYPE_CHECKING:
    from moco.runs.train import PretrainResult


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pre-train an encoder with MoCo",
        description="Pre-train an encoder with MoCo. Without arguments: the 'default' preset "
        "on the bundled Fashion-MNIST subset. Overrides are key=value pairs of the config "
        "(see a run's config.yaml for every key), e.g. optim.epochs=50 model.queue_size=8192.\n\n"
        "Backbones: model.arch=resnet18..resnet152 (ours), vit_tiny|vit_small|vit_base (timm), "
        "or any classification model of torchvision or timm as torchvision:NAME / timm:NAME, "
        "e.g. model.arch=torchvision:mobilenet_v3_small or model.arch=timm:convnext_atto "
        "(pooled pre-logits features, our head on top, every BatchNorm split for "
        "shuffling BN). List the names with\n"
        "  python -c 'import torchvision; "
        "print(torchvision.models.list_models(module=torchvision.models))'\n"
        "  python -c 'import timm; print(timm.list_models())'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default="default", help="recipe to start from (see `moco presets`)")
    p.add_argument(
        "--data",
        help="data source (sets data.source): bundled; a path, whose kind is recognised "
        "(IDX files, the CIFAR / STL-10 layouts, class sub-folders of images, an unlabelled "
        "tree of images, a text file of image paths); or KIND:PATH to force one: idx, "
        "cifar10, cifar100, stl10, folder (a sub-folder per class), images (unlabelled), "
        "filelist",
    )
    p.add_argument("--out", help="directory that receives the run directory (sets run.out_dir)")
    p.add_argument("--resume", metavar="CKPT", help="continue a run from its checkpoint or run dir")
    p.add_argument(
        "--init",
        metavar="CKPT",
        help="start a new run from a checkpoint's encoders (ours or an official main_moco.py "
        "one; sets run.init), e.g. to continue pre-training on your own images",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.resume:
        if args.init:
            raise ConfigError(
                "--init starts a new run from a checkpoint's weights and --resume continues "
                "a run; give one of them"
            )
        if args.data or args.out or args.preset != "default":
            raise ConfigError(
                "--resume continues a run with its saved config; drop --preset/--data/--out"
            )
        from moco.runs.train import resume

        return _done(resume(args.resume, list(args.overrides)))
    from moco.config import load_config, to_yaml

    cfg = load_config(args.preset, _overrides(args))
    if args.print_config:  # before the engine (and torch) is imported
        print(to_yaml(cfg), end="")
        return 0
    from moco.runs.train import pretrain

    return _done(pretrain(cfg), "at init" if cfg.run.init else "random init")


def _done(result: PretrainResult, start: str = "random init") -> int:
    """The run's one line (from the main process only: every rank returns a result);
    ``start`` names epoch 0's kNN (the checkpoint of ``run.init``, or random weights)."""
    from moco import dist

    if not dist.is_main():
        return 0
    init = "n/a" if result.knn_top1_init is None else f"{result.knn_top1_init:.4f}"
    final = "n/a" if result.knn_top1 is None else f"{result.knn_top1:.4f}"
    print(
        f"done: {result.epochs} epochs, kNN top-1 {final} ({start} {init}); "
        f"run directory {result.run_dir}"
    )
    return 0


def _overrides(args: argparse.Namespace) -> list[str]:
    """The command line's overrides, then what --data, --out and --init set."""
    overrides = list(args.overrides)
    if args.init:
        overrides.append(f"run.init={args.init}")
    if args.data:
        overrides.append(f"data.source={args.data}")
    if args.out:
        overrides.append(f"run.out_dir={args.out}")
    return overrides
