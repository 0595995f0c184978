"""Results of evaluating a checkpoint, as JSON records saved next to it.

``moco lincls`` and ``moco finetune`` run a supervised protocol on a checkpoint's query
encoder (:func:`lincls_record`, :func:`finetune_record`); ``moco knn`` measures kNN
(:mod:`moco.runs.knn`). Each returns a record of what was measured and on what, and
:func:`save_record` writes it where ``moco report`` finds it: ``<run dir>/<kind>-<tag>.json``
with the tag ``epoch<N>`` or ``random-init``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moco import dist
from moco.device import resolve_device
from moco.errors import ConfigError
from moco.runs.load import load_for_eval, require_labels
from moco.version import __version__

if TYPE_CHECKING:  # eval imported inside the functions: only they need it
    from moco.eval.finetune import FinetuneProtocol
    from moco.eval.linear import LinearProtocol


def linear_protocol(
    name: str = "paper", epochs: int | None = None, lr: float | None = None
) -> LinearProtocol:
    """The named linear protocol (``paper`` or ``small``) with its epochs or lr replaced;
    the lr milestones keep their place in the schedule when the epochs change."""
    from moco.eval.linear import PROTOCOLS

    if name not in PROTOCOLS:
        raise ConfigError(f"unknown linear protocol {name!r}; allowed: {', '.join(PROTOCOLS)}")
    protocol = PROTOCOLS[name]
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
) -> FinetuneProtocol:
    """The fine-tuning protocol with the values given (``None``: the protocol's default)."""
    from moco.eval.finetune import FinetuneProtocol

    changes: dict[str, Any] = {"epochs": epochs, "lr": lr, "batch_size": batch_size}
    return dataclasses.replace(
        FinetuneProtocol(norm_features=norm_features),
        **{k: v for k, v in changes.items() if v is not None},
    )


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
    return {
        "checkpoint": s.checkpoint, "epoch": s.epoch, "random_init": random_init,
        "data": s.data.name, "train_images": len(s.data.train_images),
        "validation": f"{val} of train, stratified, seed {result.protocol['seed']}",
        "test_split": s.data.held_out, "test_images": len(s.data.test_images),
        "test_top1": result.test_top1, "test_top5": result.test_top5,
        "val_top1_selected": result.val_top1, "selected_epoch": result.best_epoch,
        "protocol": result.protocol, "curve": result.curve, "version": __version__,
    }  # fmt: skip


def result_path(record: dict[str, Any], kind: str) -> Path:
    """Where a record of ``kind`` (``lincls``, ``finetune``, ``knn-k200``) goes by default:
    next to its checkpoint, named after the epoch measured (or ``random-init``)."""
    tag = "random-init" if record["random_init"] else f"epoch{record['epoch']}"
    return Path(record["checkpoint"]).parent / f"{kind}-{tag}.json"


def save_record(record: dict[str, Any], kind: str, out: str | Path | None = None) -> Path:
    """Write ``record`` as JSON to ``out`` (default: :func:`result_path`); returns the path."""
    path = Path(out) if out else result_path(record, kind)
    path.write_text(json.dumps(record, indent=2))
    return path
