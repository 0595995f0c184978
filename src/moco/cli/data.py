"""``moco data``: download a public dataset, or check what a data source holds."""

from __future__ import annotations

import argparse
import sys

from moco.cli.dispatch import Subparsers


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "data",
        help="fetch public datasets (cifar10, cifar100, stl10); check a data source",
        description="Datasets with an official URL: download, verify, extract. Any source: "
        "check what it holds.",
    )
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    _add_download(dsub)
    _add_check(dsub)


def _add_download(dsub: Subparsers) -> None:
    p = dsub.add_parser(
        "download",
        help="download, verify (md5) and extract a dataset into DIR",
        description="Download NAME's official archive into DIR (created if missing), check its "
        "md5 (torchvision's) and extract it, then print the --data string that reads it. An "
        "interrupted download resumes from DIR/<archive>.part; steps already done are "
        "skipped. Offline: download the archive by other means and place it in DIR under its "
        "own name; the command then verifies and extracts it without network.",
    )
    p.add_argument("name", metavar="NAME", help="dataset: cifar10, cifar100 or stl10")
    p.add_argument("dir", metavar="DIR", help="directory for the archive and the extraction")
    p.add_argument("--url", help="mirror URL to download the archive from instead")
    p.add_argument(
        "--md5", help="expected md5 of the mirror URL's archive (default: the official one)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=10.0,
        help="seconds to wait for the server to connect or send (default 10)",
    )
    p.set_defaults(handler=run_download)


def _add_check(dsub: Subparsers) -> None:
    p = dsub.add_parser(
        "check",
        help="read a data source and summarise it (counts, classes, sizes, broken files)",
        description="Read SOURCE as training would and print its kind and path, the images "
        "per split and per class, and for image files the sizes and modes before resizing "
        "and every unreadable file with its reason. Exits 0 even when files were skipped; "
        "1 only when the source itself cannot be read.",
    )
    p.add_argument("source", metavar="SOURCE", help="a --data string, e.g. folder:DIR")
    p.add_argument(
        "--load-size",
        type=int,
        default=32,
        metavar="N",
        help="side image files are decoded to (default 32; every file is fully decoded)",
    )
    p.set_defaults(handler=run_check)


def run_download(args: argparse.Namespace) -> int:
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
    except KeyboardInterrupt:  # the general message speaks of checkpoints
        print("interrupted; run the same command again to resume the download", file=sys.stderr)
        return 130
    print(f"ready: use --data {r.data_spec}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    import warnings

    from moco.data.check import check_source
    from moco.data.decode import UnreadableImageWarning

    with warnings.catch_warnings():  # the summary lists every unreadable file itself
        warnings.simplefilter("ignore", UnreadableImageWarning)
        print(check_source(args.source, args.load_size))
    return 0
