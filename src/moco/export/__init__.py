"""Pure ``state_dict -> state_dict`` conversions that assert their key sets."""

from moco.export.official import infer_spec, load_query_encoder
from moco.export.torchvision import ExportError, encoder_state, to_torchvision

__all__ = ["ExportError", "encoder_state", "infer_spec", "load_query_encoder", "to_torchvision"]
