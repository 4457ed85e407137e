"""The config layer: the validated :class:`Config`, the method registry, sweep settings, presets.

Everything else in drkd imports its configuration from here; this layer imports nothing of drkd
above it (``drkd.config.methods`` is filled by the method packages under ``drkd.distill``).
"""

from drkd.config.errors import ConfigError
from drkd.config.files import apply_overrides, config_from_dict, load_config, read_config_file, save_config
from drkd.config.schema import (
    ARCHS,
    BACKBONES,
    INHERIT_PARTS,
    SCHEDULES,
    TWO_STAGE_ARCHS,
    Config,
    DataConfig,
    DetectorConfig,
    DistillConfig,
    TrainSettings,
    validate,
)

__all__ = [
    "ARCHS",
    "INHERIT_PARTS",
    "BACKBONES",
    "SCHEDULES",
    "TWO_STAGE_ARCHS",
    "Config",
    "ConfigError",
    "DataConfig",
    "DetectorConfig",
    "DistillConfig",
    "TrainSettings",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "read_config_file",
    "save_config",
    "validate",
]
