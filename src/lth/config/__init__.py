"""Configuration: frozen dataclasses per concern, named presets, ``--set`` overrides and files.

``schema`` defines the sections, their validation and the run directory hash; ``overrides``
applies ``section.field=value`` assignments; ``presets`` holds the named configurations; ``files``
reads and writes TOML and YAML. All of them resolve to one :class:`ExperimentConfig`.
"""

from .files import dump_config, load_config
from .overrides import apply_overrides
from .presets import PRESETS, Preset, PresetError, describe_presets, get_preset, preset_names, register_preset
from .schema import (
    AUGMENTATIONS,
    OPTIMIZERS,
    PRECISIONS,
    SECTIONS,
    STRATEGIES,
    TEST_EVALS,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    LotteryConfig,
    ModelConfig,
    PruneConfig,
    RuntimeConfig,
    TrainConfig,
    config_hash,
    with_section,
)

__all__ = [
    "AUGMENTATIONS",
    "OPTIMIZERS",
    "PRECISIONS",
    "PRESETS",
    "SECTIONS",
    "STRATEGIES",
    "TEST_EVALS",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "LotteryConfig",
    "ModelConfig",
    "Preset",
    "PresetError",
    "PruneConfig",
    "RuntimeConfig",
    "TrainConfig",
    "apply_overrides",
    "config_hash",
    "describe_presets",
    "dump_config",
    "get_preset",
    "load_config",
    "preset_names",
    "register_preset",
    "with_section",
]
