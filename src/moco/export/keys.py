"""The strict check every export makes: same key set as the target, same shapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from moco.errors import ExportError


def check_keys(
    got: Mapping[str, torch.Tensor],
    expected: Mapping[str, Sequence[int]],
    what: str,
    hint: str = "",
) -> None:
    """Raise :class:`ExportError` unless ``got`` has exactly the keys of ``expected``
    (name -> shape, e.g. a ``torch.Size``), each with its shape.

    The message names up to five missing and five unexpected keys, or up to three keys
    with their two shapes; ``what`` names the target (``torchvision resnet50``) and
    ``hint`` (optional) says what a shape mismatch usually means.
    """
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        raise ExportError(
            f"key sets differ from {what}: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    wrong = [
        f"{k}: {tuple(got[k].shape)} vs {tuple(shape)}"
        for k, shape in expected.items()
        if tuple(got[k].shape) != tuple(shape)
    ]
    if wrong:
        why = f" ({hint})" if hint else ""
        raise ExportError(f"shapes differ from {what}{why}: " + "; ".join(wrong[:3]))
