"""An encoder -> ONNX: its pooled features (N, feature_dim) from (N, C, H, W) images.

The graph is the encoder's ``forward_features`` in eval mode (BatchNorm with its
running statistics, split BN as plain BN, no head), exported by PyTorch's TorchScript
exporter (``torch.onnx.export(..., dynamo=False)``) with a dynamic batch axis: input
``images`` (batch, C, H, W) at the run's channels and size, output ``features``
(batch, feature_dim). ``onnx`` must be installed (``pip install 'moco[onnx]'``);
running the file needs an ONNX runtime (onnxruntime), not moco.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from moco.encoders.base import as_encoder
from moco.errors import ExportError

INPUT, OUTPUT = "images", "features"
OPSET = 17


class _Features(nn.Module):
    """``encoder.forward_features`` as the module's forward (what ONNX traces)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = as_encoder(self.encoder).forward_features(x)
        return out


def export_onnx(
    encoder: nn.Module, path: str | Path, in_chans: int, size: int, opset: int = OPSET
) -> None:
    """Write ``encoder``'s pooled features for ``in_chans`` x ``size`` x ``size`` images
    to ``path`` as ONNX, with a dynamic batch axis. The encoder is put in eval mode."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError as err:
        raise ExportError("--format onnx needs onnx: pip install 'moco[onnx]'") from err
    as_encoder(encoder)
    module = _Features(encoder).eval()
    example = torch.zeros(2, in_chans, size, size)
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        with warnings.catch_warnings():  # the TorchScript exporter's notes on tracing
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
        tmp.replace(path)
    except (RuntimeError, torch.onnx.errors.OnnxExporterError) as err:
        raise ExportError(f"ONNX export of {type(encoder).__name__} failed: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
