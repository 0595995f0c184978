"""The ``moco`` command: thin sub-commands that wire config, engine and evaluation."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, cast

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="moco",
        description="Momentum Contrast (MoCo v1/v2) self-supervised pre-training.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from moco.version import __version__

    parser.add_argument("--version", action="version", version=f"moco {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "pretrain",
        help="pre-train an encoder with MoCo",
        description="Pre-train an encoder with MoCo. Without arguments: the 'default' preset "
        "on the bundled Fashion-MNIST subset. Overrides are key=value pairs of the config "
        "(see a run's config.yaml for every key), e.g. optim.epochs=50 model.queue_size=8192.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default="default", help="recipe to start from (see `moco presets`)")
    p.add_argument(
        "--data",
        help="data source (sets data.source): bundled, a directory of IDX files, "
        "cifar10:PATH, cifar100:PATH, stl10:PATH, folder:DIR (a sub-folder per class), "
        "images:DIR (unlabelled) or filelist:FILE",
    )
    p.add_argument("--out", help="directory that receives the run directory (sets run.out_dir)")
    p.add_argument("--resume", metavar="CKPT", help="continue a run from its checkpoint or run dir")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    sub.add_parser(
        "presets", help="list the presets", description="List the presets, one line each."
    )

    k = _checkpoint_command(
        sub,
        "knn",
        help="weighted kNN accuracy of a checkpoint's encoder",
        description="Weighted kNN (cosine, k neighbours, weights exp(sim/t)) of a checkpoint's "
        "query encoder: training split as memory, held-out split as queries. Writes a JSON "
        "result next to the checkpoint (or --out).",
        features=True,
        out="result JSON path (default: <run dir>/knn-k<k>-*.json)",
    )
    k.add_argument("--k", type=int, default=200, help="neighbours (default 200)")
    k.add_argument("--t", type=float, default=0.1, help="temperature of the vote weights (0.1)")

    lc = _checkpoint_command(
        sub,
        "lincls",
        help="linear classification protocol on a checkpoint's frozen encoder",
        description="Linear protocol (MoCo Sec. 4.1): frozen backbone in eval mode, a linear "
        "classifier on pooled features, SGD lr 30, wd 0, lr x0.1 at the milestones. The "
        "epoch is selected on a validation split carved from the training data; the test "
        "split is evaluated once. Writes a JSON result next to the checkpoint (or --out).",
        out="result JSON path (default: <run dir>/lincls-*.json)",
    )
    lc.add_argument(
        "--protocol",
        choices=["paper", "small"],
        default="paper",
        help="paper: 100 epochs with crop+flip; small: 30 epochs on cached features",
    )
    lc.add_argument("--epochs", type=int, help="override the protocol's epochs")
    lc.add_argument("--lr", type=float, help="override the protocol's lr (30)")

    ft = _checkpoint_command(
        sub,
        "finetune",
        help="fine-tune the whole encoder on labelled data (transfer)",
        description="Fine-tuning (MoCo Sec. 4.2): every layer trains, BN is trained (SyncBN "
        "under torch.distributed) and the features entering the new classifier are "
        "normalised by a BN layer (--no-feature-norm turns it off). Crop+flip augmentation, "
        "cosine lr, epoch selected on a validation split; the test split is evaluated once.",
        out="result JSON path (default: <run dir>/finetune-*.json)",
    )
    ft.add_argument("--epochs", type=int, help="epochs (default 20)")
    ft.add_argument("--lr", type=float, help="lr for a batch of 256 (default 0.05)")
    ft.add_argument("--batch-size", type=int, help="batch size (default 128)")
    ft.add_argument("--no-feature-norm", action="store_true", help="no BN before the new head")

    _checkpoint_command(
        sub,
        "embed",
        help="write a checkpoint's features of a dataset to .npy files",
        description="Features of the train and held-out splits from the frozen query encoder "
        "(eval mode, no augmentation): <split>_features.npy (float32, N x D), "
        "<split>_labels.npy, <split>_sources.txt (where each row came from) and embed.json.",
        random_init=False,
        features=True,
        out="output directory (must be new or empty)",
        out_required=True,
    )

    rp = sub.add_parser(
        "report",
        help="write an HTML report of a run",
        description="Write RUN_DIR/report.html (self-contained, PNGs embedded; copies in "
        "RUN_DIR/report/): loss, pretext accuracy, lr and kNN curves; every result with its "
        "settings (result.json, knn-*, lincls-*, finetune-*.json); a t-SNE of held-out "
        "features coloured by class; a nearest-neighbour retrieval grid.",
    )
    rp.add_argument("run_dir", help="run directory")
    rp.add_argument("--points", type=int, default=2000, help="held-out images in the t-SNE")

    x = sub.add_parser(
        "export",
        help="convert a checkpoint's encoder for another library",
        description="Write the query encoder of a MoCo checkpoint (ours or official) as a "
        "state dict for another library. detectron2: a .pkl with MoCo's rename table "
        "(stem, resN, norm, shortcut) and matching_heuristics. timm: checked against timm's "
        "own model (--num-classes 0: no fc). torchvision: loads with strict=True into "
        "torchvision.models.<arch>(num_classes=N); the projection head is dropped and fc "
        "re-initialised (--fc init) or left out (--fc drop).",
    )
    x.add_argument("checkpoint", help="checkpoint file or run directory")
    x.add_argument("--format", choices=["torchvision", "detectron2", "timm"], default="torchvision")
    x.add_argument("--out", required=True, help="output file (torch.save of a state dict)")
    x.add_argument(
        "--num-classes",
        type=int,
        default=1000,
        help="fc outputs (default 1000; for timm, 0 = no fc)",
    )
    x.add_argument("--fc", choices=["init", "drop"], default="init")

    dp = sub.add_parser(
        "data",
        help="fetch public datasets (cifar10, cifar100, stl10); check a data source",
        description="Datasets with an official URL: download, verify, extract. Any source: "
        "check what it holds.",
    )
    dsub = dp.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    dl = dsub.add_parser(
        "download",
        help="download, verify (md5) and extract a dataset into DIR",
        description="Download NAME's official archive into DIR (created if missing), check its "
        "md5 (torchvision's) and extract it, then print the --data string that reads it. An "
        "interrupted download resumes from DIR/<archive>.part; steps already done are "
        "skipped. Offline: download the archive by other means and place it in DIR under its "
        "own name; the command then verifies and extracts it without network.",
    )
    dl.add_argument("name", metavar="NAME", help="dataset: cifar10, cifar100 or stl10")
    dl.add_argument("dir", metavar="DIR", help="directory for the archive and the extraction")
    dl.add_argument("--url", help="mirror URL to download the archive from instead")
    dl.add_argument(
        "--md5", help="expected md5 of the mirror URL's archive (default: the official one)"
    )
    dl.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=10.0,
        help="seconds to wait for the server to connect or send (default 10)",
    )
    ck = dsub.add_parser(
        "check",
        help="read a data source and summarise it (counts, classes, sizes, broken files)",
        description="Read SOURCE as training would and print its kind and path, the images "
        "per split and per class, and for image files the sizes and modes before resizing "
        "and every unreadable file with its reason. Exits 0 even when files were skipped; "
        "1 only when the source itself cannot be read.",
    )
    ck.add_argument("source", metavar="SOURCE", help="a --data string, e.g. folder:DIR")
    ck.add_argument(
        "--load-size",
        type=int,
        default=32,
        metavar="N",
        help="side image files are decoded to (default 32; every file is fully decoded)",
    )

    ab = sub.add_parser(
        "ablate",
        help="run one of the MoCo paper's ablations as a sweep of pre-training runs",
        description="Pre-train once per value of AXIS (one run after another, each in its own "
        "sub-directory of OUT_DIR/NAME), then write table.json, table.md and ablate.png "
        "(kNN top-1 and pretext accuracy per epoch). Axes and default values: momentum "
        "(model.momentum 0 0.9 0.99 0.999 0.9999); queue (model.queue_size: the batch size, "
        "x4 steps, up to the preset's K); mechanism (model.method end_to_end memory_bank moco "
        "at matched K: the batch size, or the model.queue_size you pass); shuffle-bn "
        "(model.shuffle_keys true false); preset (whole recipes at the same epochs, default "
        "default simclr_small moco_v3_small). The kNN column is the last epoch's, never the "
        "best. Running the same command again resumes the sweep: finished runs are read "
        "back, a half-finished one continues from its checkpoint. A run whose loss becomes "
        "non-finite is recorded as diverged and the sweep goes on.",
    )
    ab.add_argument(
        "axis", metavar="AXIS", choices=["momentum", "queue", "mechanism", "shuffle-bn", "preset"],
        help="momentum, queue, mechanism, shuffle-bn or preset",
    )  # fmt: skip
    ab.add_argument(
        "--preset", help="recipe every run starts from (default: default; not for AXIS preset)"
    )
    ab.add_argument("--values", nargs="+", metavar="V", help="the values to sweep instead")
    ab.add_argument("--epochs", type=int, help="optim.epochs of every run")
    ab.add_argument("--out-dir", default="runs", help="where the sweep directory goes (runs)")
    ab.add_argument("--name", help="sweep directory name (default: ablate-AXIS-PRESET)")
    ab.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    # overrides may come before or after options: collect the leftovers as overrides
    args, extra = parser.parse_known_args(argv)
    takes_overrides = args.command in ("pretrain", "ablate")
    if extra and (not takes_overrides or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    if args.command is None:
        parser.print_help()
        return 2
    from moco import dist

    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint of the run is intact", file=sys.stderr)
        return 130
    except Exception as err:
        if dist.world_size() > 1:  # under torchrun: say which rank stopped, and why
            print(_distributed_failure(args.command, err), file=sys.stderr, flush=True)
            return 1
        if not isinstance(err, (ValueError, FileExistsError, FileNotFoundError, RuntimeError)):
            raise
        # ConfigError, DataSourceError, IDXFormatError, CheckpointError, NonFiniteLossError
        print(f"moco {args.command}: error: {err}", file=sys.stderr)
        return 1
    finally:
        dist.shutdown()


def _distributed_failure(command: str, err: Exception) -> str:
    """One clear message for a rank that stops: its own error, or a lost peer."""
    from moco import dist

    where = f"moco {command} [rank {dist.rank()}/{dist.world_size()}]"
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    lost = any(
        s in str(err)
        for s in ("Connection reset", "Connection closed", "Timed out", "timed out", "Broken pipe",
                  "NCCL", "Gloo", "gloo", "watchdog")
    )  # fmt: skip
    if lost:
        return (
            f"{where}: error: a collective with the other processes failed ({first}). "
            "Another process exited or hung (a collective waits at most run.dist_timeout "
            "seconds); see its log for the cause. The last checkpoint is intact: continue with "
            "`torchrun ... -m moco pretrain --resume RUN_DIR` (torchrun --max-restarts and a "
            "fixed run.name do this automatically)."
        )
    return f"{where}: error: {type(err).__name__}: {first}"


def _checkpoint_command(
    sub: Any,
    name: str,
    *,
    help: str,
    description: str,
    out: str,
    random_init: bool = True,
    features: bool = False,
    out_required: bool = False,
) -> argparse.ArgumentParser:
    """A sub-command that evaluates a checkpoint: the arguments they all share."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=description)
    p.add_argument("checkpoint", help="checkpoint file or run directory (ours or official)")
    p.add_argument("--data", help="data source (default: the one the checkpoint trained on)")
    p.add_argument("--out", required=out_required, help=out)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    if random_init:
        p.add_argument(
            "--random-init",
            action="store_true",
            help="the same encoder at its random initialisation (the baseline)",
        )
    if features:
        p.add_argument(
            "--features",
            choices=["backbone", "head"],
            default="backbone",
            help="pooled backbone features (default) or the head's output",
        )
    return p


def _pretrain(args: argparse.Namespace) -> int:
    from moco.config import load_config, to_yaml
    from moco.engine.train import pretrain, resume

    overrides = list(args.overrides)
    if args.resume:
        if args.data or args.out or args.preset != "default":
            raise ValueError(
                "--resume continues a run with its saved config; drop --preset/--data/--out"
            )
        result = resume(args.resume, overrides)
    else:
        if args.data:
            overrides.append(f"data.source={args.data}")
        if args.out:
            overrides.append(f"run.out_dir={args.out}")
        cfg = load_config(args.preset, overrides)
        if args.print_config:
            print(to_yaml(cfg), end="")
            return 0
        result = pretrain(cfg)
    from moco import dist

    if not dist.is_main():
        return 0
    init = "n/a" if result.knn_top1_init is None else f"{result.knn_top1_init:.4f}"
    final = "n/a" if result.knn_top1 is None else f"{result.knn_top1:.4f}"
    print(
        f"done: {result.epochs} epochs, kNN top-1 {final} (random init {init}); "
        f"run directory {result.run_dir}"
    )
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moco.experiments.ablate import markdown_table, run_sweep

    # `--values 0.9 0.99 key=value` swallows the overrides after it; no value has a "="
    values = [v for v in args.values or [] if "=" not in v] or None
    overrides = [*args.overrides, *(v for v in args.values or [] if "=" in v)]
    r = run_sweep(
        args.axis, args.preset, overrides, values, Path(args.out_dir), args.name, args.epochs
    )
    print(markdown_table(r.rows), end="")
    reused = len(r.rows) - len(r.ran)
    print(
        f"sweep {r.sweep_dir}: {len(r.ran)} run(s) trained, {reused} read back; wrote "
        f"{r.table_md}, {r.table_json}, {r.figure}"
    )
    return 0


def _presets(args: argparse.Namespace) -> int:
    from moco.config import list_presets

    presets = list_presets()
    width = max(map(len, presets))
    for name, about in presets.items():
        print(f"{name:<{width}}  {about}")
    return 0


def _knn(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from moco import dist
    from moco.runs.knn import knn_of_checkpoint

    r = knn_of_checkpoint(
        args.checkpoint, args.data, args.k, args.t, args.features, args.device, args.random_init
    )
    if not dist.is_main():
        return 0
    tag = "random-init" if args.random_init else f"epoch{r['epoch']}"
    default = Path(r["checkpoint"]).parent / f"knn-k{args.k}-{tag}.json"
    out = Path(args.out) if args.out else default
    out.write_text(json.dumps(r, indent=2))
    print(
        f"kNN top-1 {r['top1']:.4f}  (checkpoint {r['checkpoint']} epoch {r['epoch']}"
        f"{' random init' if args.random_init else ''}, data {r['data']}, held-out "
        f"{r['test_split']} ({r['test_images']} images), k={args.k}, t={args.t}, "
        f"{args.features}); wrote {out}"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moco.engine import checkpoint as ckpt_io
    from moco.export import to_torchvision
    from moco.export.detectron2 import save_detectron2, to_detectron2
    from moco.export.timm import to_timm

    state = ckpt_io.load(args.checkpoint)
    path = Path(args.out)
    if args.format == "detectron2":
        obj = to_detectron2(state["state_dict"])
        save_detectron2(obj, path)
        print(f"wrote {path}: detectron2 pickle, {len(obj['model'])} tensors (matching_heuristics)")
        return 0
    if "arch" not in state:
        raise ckpt_io.CheckpointError(f"{state['path']} does not say its 'arch'")
    if args.format == "timm":
        tensors = to_timm(state["state_dict"], state["arch"], args.num_classes)
        ckpt_io.save_atomic(dict(tensors), path)
        print(f"wrote {path}: timm {state['arch']} state dict (num_classes={args.num_classes})")
        return 0
    out = to_torchvision(state["state_dict"], state["arch"], args.num_classes, args.fc)
    ckpt_io.save_atomic(dict(out), path)
    print(
        f"wrote {path}: torchvision {state['arch']} state dict, {len(out)} tensors, "
        f"fc {'re-initialised' if args.fc == 'init' else 'dropped'}"
    )
    return 0


def _lincls(args: argparse.Namespace) -> int:
    import dataclasses

    from moco.eval.linear import PROTOCOLS, train_linear_probe

    protocol = PROTOCOLS[args.protocol]
    if args.epochs is not None:
        scale = args.epochs / protocol.epochs  # milestones keep their place in the schedule
        protocol = dataclasses.replace(
            protocol,
            epochs=args.epochs,
            milestones=tuple(round(m * scale) for m in protocol.milestones),
        )
    if args.lr is not None:
        protocol = dataclasses.replace(protocol, lr=args.lr)
    return _run_protocol("lincls", "linear", args, protocol, train_linear_probe)


def _finetune(args: argparse.Namespace) -> int:
    import dataclasses

    from moco.eval.finetune import FinetuneProtocol, finetune

    changes = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size}
    protocol = dataclasses.replace(
        FinetuneProtocol(norm_features=not args.no_feature_norm),
        **{k: v for k, v in changes.items() if v is not None},
    )
    return _run_protocol("finetune", "fine-tuned", args, protocol, finetune)


def _run_protocol(kind: str, label: str, args: argparse.Namespace, protocol: Any, fn: Any) -> int:
    """Load the checkpoint, run a supervised protocol, write its JSON record, print a line."""
    import json
    from pathlib import Path

    from moco import dist
    from moco.device import resolve_device
    from moco.runs.load import load_for_eval, require_labels
    from moco.version import __version__

    device = resolve_device(args.device)
    dist.init_from_env(device)
    s = load_for_eval(args.checkpoint, args.data, args.random_init)
    require_labels(s.data)  # the protocols score classes
    result = fn(s.encoder, s.data, protocol, s.size, s.mean, s.std, device)
    if not dist.is_main():
        return 0
    val = f"{protocol.val_fraction:.0%}"
    tag = "random-init" if args.random_init else f"epoch{s.epoch}"
    out = Path(args.out) if args.out else Path(s.checkpoint).parent / f"{kind}-{tag}.json"
    record = {
        "checkpoint": s.checkpoint, "epoch": s.epoch, "random_init": args.random_init,
        "data": s.data.name, "train_images": len(s.data.train_images),
        "validation": f"{val} of train, stratified, seed {result.protocol['seed']}",
        "test_split": s.data.held_out, "test_images": len(s.data.test_images),
        "test_top1": result.test_top1, "test_top5": result.test_top5,
        "val_top1_selected": result.val_top1, "selected_epoch": result.best_epoch,
        "protocol": result.protocol, "curve": result.curve, "version": __version__,
    }  # fmt: skip
    out.write_text(json.dumps(record, indent=2))
    print(
        f"{label} top-1 {result.test_top1:.4f} top-5 {result.test_top5:.4f} on the test split "
        f"(epoch {result.best_epoch} selected on val {result.val_top1:.4f}); wrote {out}"
    )
    return 0


def _embed(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np
    import torch

    from moco.augment.views import build_eval_transform
    from moco.device import resolve_device
    from moco.encoders.resnet import ResNet
    from moco.eval.features import extract_features
    from moco.runs.load import load_for_eval
    from moco.version import __version__

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory {str(out)!r} exists and is not empty")
    device = resolve_device(args.device)
    s = load_for_eval(args.checkpoint, args.data)
    encoder = cast(ResNet, s.encoder.to(device).eval())
    forward = encoder.forward_features if args.features == "backbone" else encoder
    transform = build_eval_transform(s.size, s.mean, s.std, s.data.image_size).to(device)
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": (s.data.train_images, s.data.train_labels),
              "test": (s.data.test_images, s.data.test_labels)}  # fmt: skip
    with torch.no_grad():
        for split, (images, labels) in splits.items():
            feats = extract_features(forward, images, transform, device=device)
            np.save(out / f"{split}_features.npy", feats.cpu().numpy().astype(np.float32))
            np.save(out / f"{split}_labels.npy", labels.numpy())
            (out / f"{split}_sources.txt").write_text(
                "".join(f"{s.data.name}:{split}:{i}\n" for i in range(len(images)))
            )
    meta = {"checkpoint": s.checkpoint, "epoch": s.epoch, "data": s.data.name,
            "held_out": s.data.held_out, "features": args.features,
            "dim": int(feats.shape[1]), "version": __version__}  # fmt: skip
    (out / "embed.json").write_text(json.dumps(meta, indent=2))
    print(
        f"wrote {out}: {len(s.data.train_images)} train and {len(s.data.test_images)} test "
        f"rows of {meta['dim']}-d {args.features} features"
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from moco.report import write_report

    print(f"wrote {write_report(args.run_dir, max_points=args.points)}")
    return 0


def _data(args: argparse.Namespace) -> int:
    """`moco data SUBCOMMAND`: `download` or `check`."""
    if args.data_command == "check":
        return _data_check(args)
    from moco.data.download import download

    try:
        r = download(
            args.name,
            args.dir,
            url=args.url,
            md5=args.md5,
            timeout=args.timeout,
            progress=sys.stdout.isatty(),
            log=lambda line: print(line, flush=True),
        )
    except KeyboardInterrupt:  # main's own message speaks of checkpoints
        print("interrupted; run the same command again to resume the download", file=sys.stderr)
        return 130
    print(f"ready: use --data {r.data_spec}")
    return 0


def _data_check(args: argparse.Namespace) -> int:
    import warnings

    from moco.data.decode import UnreadableImageWarning
    from moco.data.folder import check_source

    with warnings.catch_warnings():  # the summary lists every unreadable file itself
        warnings.simplefilter("ignore", UnreadableImageWarning)
        print(check_source(args.source, args.load_size))
    return 0


COMMANDS = {
    "pretrain": _pretrain,
    "ablate": _ablate,
    "presets": _presets,
    "knn": _knn,
    "lincls": _lincls,
    "finetune": _finetune,
    "embed": _embed,
    "report": _report,
    "export": _export,
    "data": _data,
}


if __name__ == "__main__":
    sys.exit(main())
