"""Start a new run from a checkpoint's encoders (``run.init``): continued pre-training.

The source is one of our checkpoints or an official ``main_moco.py`` one: both hold
``module.encoder_q.*`` (and ``module.encoder_k.*``, ``module.queue``, ``module.queue_ptr``
for MoCo). Only the weights move: the new run has its own optimiser, schedule, step 0
and RNG, as a run from random initialisation would. The query encoder (backbone and
head) is loaded strictly; the key encoder from ``encoder_k`` when the file has one,
else as a copy of the loaded query encoder (the state MoCo starts from, Algorithm 1);
the queue only when asked. Anything else the method holds (MoCo v3's predictor, a
memory bank) keeps its initialisation.

Every key and every shape must match: a checkpoint of another architecture, head or
input channels is refused with a message naming the first key that differs and both
shapes, never loaded partially.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from moco.core.method import ContrastiveMethod
from moco.encoders.resnet import ARCHS
from moco.engine.checkpoint import from_official, load
from moco.errors import CheckpointError


def init_from_checkpoint(model: ContrastiveMethod, path: str | Path, queue: bool = False) -> str:
    """Load ``path``'s encoders (and the queue when ``queue``) into ``model``, in place.

    Called on a freshly built model of a new run, before its first checkpoint; the
    optimiser's parameters are updated in place, so it needs no rebuilding. Returns the
    one line to print: what was loaded from where.
    """
    ckpt = load(path)
    where = ckpt["path"]
    state = from_official(ckpt["state_dict"])
    src_q = _sub_state(state, "encoder_q")
    if not src_q:
        raise CheckpointError(f"{where} has no encoder_q.* weights to initialise from")
    src_k = _sub_state(state, "encoder_k")
    # what goes where; every key and shape is checked before anything is loaded, so a
    # refused file leaves the model as it was
    plan = [("encoder_q", model.encoder_q, src_q, "encoder_q")]
    for name in model.key_names:  # the momentum copies (MoCo, MoCo v3: encoder_k)
        plan.append((name, getattr(model, name), src_k or src_q, "encoder_k" if src_k else ""))
    for _, module, src, src_name in plan:
        _check(module, src, where, src_name or "encoder_q")
    queue_state = _check_queue(model, state, where) if queue else None
    loaded = []
    for name, module, src, src_name in plan:
        module.load_state_dict(src, strict=True)
        loaded.append(name if src_name else f"{name} (copied from encoder_q)")
    if queue_state is not None:
        loaded.append(_load_queue(model, *queue_state))
    epoch = ckpt.get("epoch", "?")
    kind = "moco" if "config" in ckpt else "official main_moco.py"
    return (
        f"initialised from {where} ({kind} checkpoint, {_describe(src_q)}, epoch {epoch}): "
        f"{', '.join(loaded)}; new optimiser, schedule and step 0"
    )


def _sub_state(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    prefix = name + "."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _check(module: nn.Module, src: dict[str, torch.Tensor], where: str, name: str) -> None:
    """A one-line :class:`CheckpointError` saying what differs unless ``src`` has exactly
    ``module``'s keys and shapes (``load_state_dict(strict=True)`` would then succeed)."""
    target = module.state_dict()
    problem = _first_difference(src, target)
    if problem is not None:
        raise CheckpointError(
            f"cannot initialise from {where}: the checkpoint's {name} is {_describe(src)} but "
            f"the model's is {_describe(target)}; {problem}. Set model.arch, model.width, "
            "model.cifar_stem, model.mlp, model.dim (and the data's channels) to the "
            "checkpoint's, or start without run.init"
        )


def _first_difference(src: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> str | None:
    """The first key whose shape differs, or the keys one side lacks; None when equal."""
    for key, value in target.items():
        if key in src and src[key].shape != value.shape:
            return f"{key} is {_shape(src[key])} in the checkpoint and {_shape(value)} in the model"
    missing = [k for k in target if k not in src]
    extra = [k for k in src if k not in target]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} keys missing from the checkpoint (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} keys the model does not have (e.g. {extra[0]})")
        return " and ".join(parts)
    return None


def _check_queue(
    model: ContrastiveMethod, state: dict[str, torch.Tensor], where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The checkpoint's queue and pointer, once their shapes are the model's."""
    buffers = dict(model.named_buffers(recurse=False))
    mine = buffers.get("queue")
    if mine is None or "queue_ptr" not in buffers:
        raise CheckpointError(
            f"run.init_queue=true, but model.method={model.name} has no queue to initialise"
        )
    theirs, ptr = state.get("queue"), state.get("queue_ptr")
    if theirs is None or ptr is None:
        raise CheckpointError(f"run.init_queue=true, but {where} holds no queue")
    if theirs.shape != mine.shape:
        raise CheckpointError(
            f"cannot take the queue of {where}: it is {_shape(theirs)} (dim x K) and the "
            f"model's is {_shape(mine)}; set model.dim and model.queue_size to its, or "
            "leave run.init_queue=false"
        )
    return theirs, ptr


def _load_queue(model: ContrastiveMethod, queue: torch.Tensor, ptr: torch.Tensor) -> str:
    buffers = dict(model.named_buffers(recurse=False))
    with torch.no_grad():
        buffers["queue"].copy_(queue)
        buffers["queue_ptr"].copy_(ptr.reshape(buffers["queue_ptr"].shape))
    return f"queue ({_shape(queue)})"


def _describe(state: dict[str, torch.Tensor]) -> str:
    """What an encoder's keys show: its ResNet (blocks per stage and block type) and its
    stem, e.g. ``resnet50 (conv1 64x3x7x7)``; other encoders by their key count.
    (:func:`moco.export.official.infer_arch` reads the same; the engine may not import
    export, and here the answer is only a description, so it is read again.)"""
    conv1 = state.get("conv1.weight")
    if conv1 is None or conv1.ndim != 4:
        return f"a non-ResNet encoder ({len(state)} tensors)"
    blocks = [
        len({m[1] for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))})
        for stage in (1, 2, 3, 4)
    ]
    kind = "Bottleneck" if any(k.endswith(".conv3.weight") for k in state) else "BasicBlock"
    arch = next(
        (a for a, (block, layers) in ARCHS.items() if layers == blocks and block.__name__ == kind),
        f"a ResNet with {blocks} {kind}s",
    )
    return f"{arch} (conv1 {_shape(conv1)})"


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape) or "scalar"
