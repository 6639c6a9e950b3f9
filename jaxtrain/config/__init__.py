"""Experiment configuration: typed frozen dataclasses loaded from YAML with overrides."""

from jaxtrain.config.load import (
    ConfigError,
    config_to_dict,
    dump_config,
    load_config,
    parse_overrides,
    validate,
)
from jaxtrain.config.schema import (
    AdamConfig,
    AdamWConfig,
    CheckpointConfig,
    CNNConfig,
    Config,
    DataConfig,
    MLPConfig,
    ScheduleConfig,
    SGDConfig,
    TrainConfig,
)

__all__ = [
    "AdamConfig",
    "AdamWConfig",
    "CNNConfig",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "MLPConfig",
    "SGDConfig",
    "ScheduleConfig",
    "TrainConfig",
    "config_to_dict",
    "dump_config",
    "load_config",
    "parse_overrides",
    "validate",
]
