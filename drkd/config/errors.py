"""The one error type of bad configuration."""


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range; the message names the file, the
    dotted field and the value, e.g. ``configs/x.yaml: distill.drkd.instance_size = 2: must be one of 1, 3, 5``."""
