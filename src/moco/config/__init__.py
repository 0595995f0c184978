"""Typed configs, YAML presets and strict overrides (no torch here)."""

from moco.config.schema import (
    AugmentConfig,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    list_presets,
    load_config,
    to_yaml,
)

__all__ = [
    "AugmentConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "list_presets",
    "load_config",
    "to_yaml",
]
