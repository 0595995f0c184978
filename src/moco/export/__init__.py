"""Pure ``state_dict -> state_dict`` conversions that assert their key sets."""

from moco.export.torchvision import ExportError, encoder_state, to_torchvision

__all__ = ["ExportError", "encoder_state", "to_torchvision"]
