"""``moco knn``, ``lincls``, ``finetune`` and ``embed``: evaluate a checkpoint's encoder.

Each takes a checkpoint (ours or an official one) and the data to evaluate on; the
work is in :mod:`moco.runs`, which returns a record that is saved next to the checkpoint
under a name that carries every setting given here (:mod:`moco.runs.records`).

Numeric arguments are checked by argparse (``positive_int``, ``positive_float``): a bad
value exits 2 with ``error: argument --k: must be a positive integer, got 0`` before
anything is loaded; the library's protocol builders raise a ``ConfigError`` for the same.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from moco.cli.dispatch import Subparsers

_N = TypeVar("_N", int, float)


def _checked(
    cast: Callable[[str], _N], ok: Callable[[_N], bool], what: str, unparsed: str | None = None
) -> Callable[[str], _N]:
    """An argparse ``type=``: ``cast`` the text, then require ``ok``; each failure says
    "must be <what>, got <text>" (``unparsed``: another wording when ``cast`` fails)."""

    def parse(text: str) -> _N:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {unparsed or what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    return parse


# k, epochs, batch size; a temperature, a learning rate; a share of the labels; a seed
positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
positive_float = _checked(
    float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0", "a number > 0"
)
fraction = _checked(float, lambda v: math.isfinite(v) and 0 < v <= 1, "a number in (0, 1]")
nonnegative_int = _checked(int, lambda v: v >= 0, "a whole number >= 0")


def _add_label_args(p: argparse.ArgumentParser) -> None:
    """``--label-fraction`` and ``--label-seed``: the semi-supervised protocol."""
    p.add_argument(
        "--label-fraction",
        type=fraction,
        default=1.0,
        help="train on this share of the training labels, e.g. 0.01 or 0.1 (stratified: "
        "that share of every class, at least one image each; validation and test splits "
        "unchanged; default 1: all)",
    )
    p.add_argument(
        "--label-seed",
        type=nonnegative_int,
        default=0,
        help="seed that draws the labelled subset (default 0)",
    )


def add_parsers(sub: Subparsers) -> None:
    _add_knn(sub)
    _add_lincls(sub)
    _add_finetune(sub)
    _add_embed(sub)


def _checkpoint_parser(
    sub: Subparsers,
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
    p = sub.add_parser(name, help=help, description=description)
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


def _add_knn(sub: Subparsers) -> None:
    p = _checkpoint_parser(
        sub,
        "knn",
        help="weighted kNN accuracy of a checkpoint's encoder",
        description="Weighted kNN (cosine, k neighbours, weights exp(sim/t)) of a checkpoint's "
        "query encoder: training split as memory, held-out split as queries. Writes a JSON "
        "result next to the checkpoint (or --out).",
        features=True,
        out="result JSON path (default: <run dir>/knn-k<k>-t<t>-<features>-<epoch>.json)",
    )
    p.add_argument(
        "--k",
        type=positive_int,
        help="neighbours (default: the run's eval.knn_k, 200 for official checkpoints)",
    )
    p.add_argument(
        "--t", type=positive_float, default=0.1, help="temperature of the vote weights (0.1)"
    )
    p.set_defaults(handler=run_knn)


def run_knn(args: argparse.Namespace) -> int:
    from moco import dist
    from moco.runs.knn import knn_of_checkpoint
    from moco.runs.records import knn_kind, save_record

    r = knn_of_checkpoint(
        args.checkpoint, args.data, args.k, args.t, args.features, args.device, args.random_init
    )
    if not dist.is_main():
        return 0
    out = save_record(r, knn_kind(r["k"], args.t, args.features, args.data), args.out)
    print(
        f"kNN top-1 {r['top1']:.4f}  (checkpoint {r['checkpoint']} epoch {r['epoch']}"
        f"{' random init' if args.random_init else ''}, data {r['data']}, held-out "
        f"{r['test_split']} ({r['test_images']} images), k={r['k']}, t={args.t}, "
        f"{args.features}); wrote {out}"
    )
    return 0


def _add_lincls(sub: Subparsers) -> None:
    p = _checkpoint_parser(
        sub,
        "lincls",
        help="linear classification protocol on a checkpoint's frozen encoder",
        description="Linear protocol (MoCo Sec. 4.1): frozen backbone in eval mode, a linear "
        "classifier on pooled features, SGD lr 30, wd 0, lr x0.1 at the milestones. The "
        "epoch is selected on a validation split carved from the training data; the test "
        "split is evaluated once. Writes a JSON result next to the checkpoint (or --out).",
        out="result JSON path (default: <run dir>/lincls-<protocol>-e<epochs>-lr<lr>-*.json)",
    )
    p.add_argument(
        "--protocol",
        choices=["paper", "small"],
        default="paper",
        help="paper: 100 epochs with crop+flip; small: 30 epochs on cached features",
    )
    p.add_argument("--epochs", type=positive_int, help="override the protocol's epochs")
    p.add_argument("--lr", type=positive_float, help="override the protocol's lr (30)")
    _add_label_args(p)
    p.set_defaults(handler=run_lincls)


def run_lincls(args: argparse.Namespace) -> int:
    from moco import dist
    from moco.runs.records import lincls_kind, lincls_record, linear_protocol, save_record

    protocol = linear_protocol(
        args.protocol, args.epochs, args.lr, args.label_fraction, args.label_seed
    )
    record = lincls_record(args.checkpoint, protocol, args.data, args.device, args.random_init)
    if not dist.is_main():
        return 0
    kind = lincls_kind(args.protocol, protocol, args.data)
    print(_protocol_line("linear", record, save_record(record, kind, args.out)))
    return 0


def _add_finetune(sub: Subparsers) -> None:
    p = _checkpoint_parser(
        sub,
        "finetune",
        help="fine-tune the whole encoder on labelled data (transfer)",
        description="Fine-tuning (MoCo Sec. 4.2): every layer trains, BN is trained (SyncBN "
        "under torch.distributed) and the features entering the new classifier are "
        "normalised by a BN layer (--no-feature-norm turns it off). Crop+flip augmentation, "
        "cosine lr, epoch selected on a validation split; the test split is evaluated once.",
        out="result JSON path (default: <run dir>/finetune-e<epochs>-lr<lr>-b<batch>-*.json)",
    )
    p.add_argument("--epochs", type=positive_int, help="epochs (default 20)")
    p.add_argument("--lr", type=positive_float, help="lr for a batch of 256 (default 0.05)")
    p.add_argument("--batch-size", type=positive_int, help="batch size (default 128)")
    p.add_argument("--no-feature-norm", action="store_true", help="no BN before the new head")
    _add_label_args(p)
    p.set_defaults(handler=run_finetune)


def run_finetune(args: argparse.Namespace) -> int:
    from moco import dist
    from moco.runs.records import finetune_kind, finetune_protocol, finetune_record, save_record

    norm = not args.no_feature_norm
    protocol = finetune_protocol(
        args.epochs,
        args.lr,
        args.batch_size,
        norm_features=norm,
        label_fraction=args.label_fraction,
        label_seed=args.label_seed,
    )
    record = finetune_record(args.checkpoint, protocol, args.data, args.device, args.random_init)
    if not dist.is_main():
        return 0
    kind = finetune_kind(protocol, args.data)
    print(_protocol_line("fine-tuned", record, save_record(record, kind, args.out)))
    return 0


def _protocol_line(label: str, r: dict[str, Any], out: Path) -> str:
    few = r.get("label_fraction", 1.0) < 1.0
    labels = f", {r['labelled_images']} labelled images ({r['labels']})" if few else ""
    return (
        f"{label} top-1 {r['test_top1']:.4f} top-5 {r['test_top5']:.4f} on the test split "
        f"(epoch {r['selected_epoch']} selected on val {r['val_top1_selected']:.4f}{labels}); "
        f"wrote {out}"
    )


def _add_embed(sub: Subparsers) -> None:
    p = _checkpoint_parser(
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
    p.set_defaults(handler=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    from moco.runs.embed import embed_checkpoint

    e = embed_checkpoint(args.checkpoint, args.out, args.data, args.features, args.device)
    print(
        f"wrote {e.out_dir}: {e.rows['train']} train and {e.rows['test']} test "
        f"rows of {e.meta['dim']}-d {args.features} features"
    )
    return 0
