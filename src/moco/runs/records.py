"""Results of evaluating a checkpoint, as JSON records saved next to it.

``moco lincls`` and ``moco finetune`` run a supervised protocol on a checkpoint's query
encoder (:func:`lincls_record`, :func:`finetune_record`); ``moco knn`` measures kNN
(:mod:`moco.runs.knn`). Each returns a record of what was measured and on what, and
:func:`save_record` writes it where ``moco report`` finds it: ``<run dir>/<kind>-<tag>.json``
with the tag ``epoch<N>`` or ``random-init``. The kind names every setting a user can
change that changes the number (:func:`knn_kind`, :func:`lincls_kind`,
:func:`finetune_kind`: ``knn-k200-t0.1-backbone``, ``lincls-small-e30-lr30``), so two
measurements never share a file; re-measuring the same settings replaces its own file,
and a file holding a record of other settings is never overwritten.

Few labels: ``label_fraction`` < 1 (``--label-fraction``) trains the supervised protocols
on a stratified, seeded subset of the training labels; the record says the fraction, the
seed and how many labelled images were used, and the kind ends ``-labels0.01-seed0``
(nothing at 1.0, whose records and names are those of the full protocol).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moco import dist
from moco.device import resolve_device
from moco.errors import ConfigError, OutputExistsError
from moco.runs.load import load_for_eval, require_labels
from moco.version import __version__

if TYPE_CHECKING:  # eval imported inside the functions: only they need it
    from moco.eval.finetune import FinetuneProtocol
    from moco.eval.linear import LinearProtocol


def linear_protocol(
    name: str = "paper",
    epochs: int | None = None,
    lr: float | None = None,
    label_fraction: float = 1.0,
    label_seed: int = 0,
) -> LinearProtocol:
    """The named linear protocol (``paper`` or ``small``) with its epochs or lr replaced;
    the lr milestones keep their place in the schedule when the epochs change.
    ``label_fraction`` < 1 trains on that stratified share of the training labels, drawn
    with ``label_seed`` (:func:`moco.data.splits.label_subset`)."""
    from moco.eval.linear import PROTOCOLS

    if name not in PROTOCOLS:
        raise ConfigError(f"unknown linear protocol {name!r}; allowed: {', '.join(PROTOCOLS)}")
    _check_positive(epochs=epochs, lr=lr)
    labels = _label_changes(label_fraction, label_seed)
    protocol = dataclasses.replace(PROTOCOLS[name], **labels)
    if epochs is not None:
        scale = epochs / protocol.epochs
        milestones = tuple(round(m * scale) for m in protocol.milestones)
        protocol = dataclasses.replace(protocol, epochs=epochs, milestones=milestones)
    if lr is not None:
        protocol = dataclasses.replace(protocol, lr=lr)
    return protocol


def finetune_protocol(
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    norm_features: bool = True,
    label_fraction: float = 1.0,
    label_seed: int = 0,
) -> FinetuneProtocol:
    """The fine-tuning protocol with the values given (``None``: the protocol's default);
    ``label_fraction`` and ``label_seed`` as in :func:`linear_protocol`."""
    from moco.eval.finetune import FinetuneProtocol

    _check_positive(epochs=epochs, lr=lr, batch_size=batch_size)
    changes: dict[str, Any] = {"epochs": epochs, "lr": lr, "batch_size": batch_size}
    return dataclasses.replace(
        FinetuneProtocol(norm_features=norm_features),
        **{k: v for k, v in changes.items() if v is not None},
        **_label_changes(label_fraction, label_seed),
    )


def _label_changes(label_fraction: float, label_seed: int) -> dict[str, Any]:
    """The checked few-label fields of a protocol: a ``ConfigError`` names the bad one."""
    from moco.data.splits import check_label_fraction

    fraction = check_label_fraction(label_fraction)
    if isinstance(label_seed, bool) or not isinstance(label_seed, int) or label_seed < 0:
        raise ConfigError(f"label_seed must be a whole number >= 0, got {label_seed!r}")
    return {"label_fraction": fraction, "label_seed": label_seed}


def _check_positive(**values: float | None) -> None:
    """Each given value (None: the protocol's default) is a finite number > 0; integers
    (epochs, batch size) are whole. The command line checks the same in argparse."""
    for key, v in values.items():
        if v is None:
            continue
        if not math.isfinite(v) or v <= 0:
            raise ConfigError(f"{key} must be a finite number > 0, got {v}")
        if key != "lr" and v != int(v):
            raise ConfigError(f"{key} must be a whole number, got {v}")


def lincls_record(
    checkpoint: str | Path,
    protocol: LinearProtocol,
    data: str | None = None,
    device: str = "auto",
    random_init: bool = False,
) -> dict[str, Any]:
    """The linear protocol (MoCo Sec. 4.1) on the checkpoint's frozen encoder, as a record."""
    from moco.eval.linear import train_linear_probe

    return protocol_record(checkpoint, protocol, train_linear_probe, data, device, random_init)


def finetune_record(
    checkpoint: str | Path,
    protocol: FinetuneProtocol,
    data: str | None = None,
    device: str = "auto",
    random_init: bool = False,
) -> dict[str, Any]:
    """Fine-tuning (MoCo Sec. 4.2) of the checkpoint's whole encoder, as a record."""
    from moco.eval.finetune import finetune

    return protocol_record(checkpoint, protocol, finetune, data, device, random_init)


def protocol_record(
    checkpoint: str | Path,
    protocol: Any,
    train: Callable[..., Any],
    data: str | None = None,
    device: str = "auto",
    random_init: bool = False,
) -> dict[str, Any]:
    """Load the checkpoint, run ``train(encoder, data, protocol, size, mean, std, device)``
    (a supervised protocol returning a ``ClassifierResult``) and record what it measured.

    Under torchrun every rank runs this (the protocols share their work across ranks);
    the caller saves the record from the main process only.
    """
    dev = resolve_device(device)
    dist.init_from_env(dev)
    s = load_for_eval(checkpoint, data, random_init)
    require_labels(s.data)  # the protocols score classes
    result = train(s.encoder, s.data, protocol, s.size, s.mean, s.std, dev)
    val = f"{protocol.val_fraction:.0%}"
    fraction = result.protocol.get("label_fraction", 1.0)
    label_seed = result.protocol.get("label_seed", 0)
    labels = (
        "all of train less validation"
        if fraction == 1.0
        else f"{fraction * 100:.4g}% of train less validation per class, seed {label_seed}"
    )
    return {
        "checkpoint": s.checkpoint, "epoch": s.epoch, "random_init": random_init,
        "data": s.data.name, "train_images": len(s.data.train_images),
        "validation": f"{val} of train, stratified, seed {result.protocol['seed']}",
        "label_fraction": fraction, "label_seed": label_seed,
        "labelled_images": result.labelled_images, "labels": labels,
        "test_split": s.data.held_out, "test_images": len(s.data.test_images),
        "test_top1": result.test_top1, "test_top5": result.test_top5,
        "val_top1_selected": result.val_top1, "selected_epoch": result.best_epoch,
        "protocol": result.protocol, "curve": result.curve, "normalisation": s.normalisation,
        "version": __version__,
    }  # fmt: skip


def number(x: float) -> str:
    """A float as a file name part: the shortest text that reads back as the same float
    (``30.0`` -> ``30``, ``0.1`` -> ``0.1``, ``1e-05``), so different values never
    share a name."""
    text = repr(float(x))
    return text.removesuffix(".0")


def data_tag(source: str | None) -> str:
    """``""`` for the checkpoint's own data (no ``--data``), else ``-data-<name>-<hash>``:
    the source's last path part, readable, and 6 hex digits of the source with its path
    made absolute, so two directories of the same name get different files."""
    if source is None:
        return ""
    from moco.data.sources import BUNDLED, parse_source

    if source == BUNDLED:
        return f"-data-{BUNDLED}"
    kind, path = parse_source(source)
    key = f"{kind}:{os.path.abspath(path)}"
    name = re.sub(r"[^A-Za-z0-9._]+", "_", path.name or kind).strip("_.") or kind
    prefix = "" if kind == "idx" else f"{kind}-"
    return f"-data-{prefix}{name}-{hashlib.sha1(key.encode()).hexdigest()[:6]}"


def knn_kind(k: int, t: float, features: str, data: str | None = None) -> str:
    """``knn-k200-t0.1-backbone`` (+ :func:`data_tag`): every setting of ``moco knn``."""
    return f"knn-k{k}-t{number(t)}-{features}{data_tag(data)}"


def lincls_kind(name: str, protocol: LinearProtocol, data: str | None = None) -> str:
    """``lincls-small-e30-lr30``: the named protocol with the epochs and lr it ran (the
    milestones follow the epochs; everything else is the name's)."""
    return (
        f"lincls-{name}-e{protocol.epochs}-lr{number(protocol.lr)}{labels_tag(protocol)}"
        f"{data_tag(data)}"
    )


def labels_tag(protocol: LinearProtocol | FinetuneProtocol) -> str:
    """``""`` with every label, else ``-labels<fraction>-seed<label seed>``."""
    if protocol.label_fraction == 1.0:
        return ""
    return f"-labels{number(protocol.label_fraction)}-seed{protocol.label_seed}"


def finetune_kind(protocol: FinetuneProtocol, data: str | None = None) -> str:
    """``finetune-e20-lr0.05-b128`` (``-nonorm`` without the feature BN)."""
    norm = "" if protocol.norm_features else "-nonorm"
    return (
        f"finetune-e{protocol.epochs}-lr{number(protocol.lr)}-b{protocol.batch_size}{norm}"
        f"{labels_tag(protocol)}{data_tag(data)}"
    )


def result_path(record: dict[str, Any], kind: str) -> Path:
    """Where a record of ``kind`` (:func:`knn_kind`, :func:`lincls_kind`, ...) goes by
    default: next to its checkpoint, named after the epoch measured (or ``random-init``)."""
    tag = "random-init" if record["random_init"] else f"epoch{record['epoch']}"
    return Path(record["checkpoint"]).parent / f"{kind}-{tag}.json"


# What a record was measured with: two records that differ in any of these are results
# of different measurements (the values measured, the curve and the version are not).
SETTINGS = ("checkpoint", "epoch", "random_init", "data", "test_split", "k", "t", "features",
            "protocol")  # fmt: skip


def save_record(record: dict[str, Any], kind: str, out: str | Path | None = None) -> Path:
    """Write ``record`` as JSON to ``out`` (default: :func:`result_path`); returns the path.

    A file already there is replaced only by a record of the same settings (the same
    measurement, run again); one of other settings, or a file that is no record, raises
    :class:`OutputExistsError`. Written atomically (temporary file, then rename).
    """
    path = Path(out) if out else result_path(record, kind)
    if path.exists():
        _check_same_settings(path, record)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check_same_settings(path: Path, record: dict[str, Any]) -> None:
    try:
        old = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        old = None
    if not isinstance(old, dict) or not {"checkpoint", "random_init"} <= set(old):
        raise OutputExistsError(
            f"{path} exists and is not a result record; not overwritten (choose another --out)"
        )
    new = json.loads(json.dumps(record))  # tuples as lists, as the file holds them
    differ = [key for key in SETTINGS if _setting(old, key) != _setting(new, key)]
    if differ:
        shown = "; ".join(f"{key} {old.get(key)!r} there, {new.get(key)!r} now" for key in differ)
        raise OutputExistsError(
            f"{path} holds a result of other settings ({shown}); not overwritten: choose "
            "another --out, or move that file away"
        )


def _setting(record: dict[str, Any], key: str) -> Any:
    value = record.get(key)
    if key == "checkpoint" and value is not None:
        return os.path.abspath(value)  # the same file, however it was spelt
    if key == "protocol" and isinstance(value, dict) and value.get("label_fraction", 1.0) == 1.0:
        # every label: records from before the few-label fields, and any label seed, agree
        value = {k: v for k, v in value.items() if k not in ("label_fraction", "label_seed")}
    return value
