"""Config files: read YAML or JSON, validate, apply dotted overrides, write back.

Errors name the file, the dotted field and the bad value, e.g.
``configs/x.yaml: distill.drkd.instance_size = 2: must be one of 1, 3, 5``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from drkd.config.errors import ConfigError
from drkd.config.methods import method_names
from drkd.config.schema import Config, DetectorConfig, build_config


def config_from_dict(values: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Build and validate a Config; errors are prefixed with ``source``."""
    try:
        return build_config(values).validate()
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def apply_overrides(cfg: Config, overrides: Mapping[str, Any], source: str = "overrides") -> Config:
    """Return a validated copy of ``cfg`` with dotted keys (``distill.drkd.lambda_pr``) replaced.

    Args:
        cfg: the config to start from; not modified.
        overrides: dotted key -> value, applied in order to the file form (``cfg.to_dict()``); a
            ``teacher.*`` key on a config without teacher first adds the ``DetectorConfig`` defaults,
            a ``distill.<method>.*`` key the method's section that the file form left out.
        source: prefix of error messages (e.g. the file or the trial); default ``"overrides"``.

    Raises:
        ConfigError: a key names an unknown section or field, or the result does not validate.
    """
    values = cfg.to_dict()
    for key, value in overrides.items():
        parts = key.split(".")
        node = values
        for i, part in enumerate(parts[:-1]):
            if node.get(part) is None:
                node[part] = _omitted_section(tuple(parts[: i + 1]))
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{source}: {'.'.join(parts[: i + 1])}: unknown section in key {key!r}")
            node = node[part]
        node[parts[-1]] = value
    return config_from_dict(values, source)


def _omitted_section(path: tuple[str, ...]) -> dict[str, Any] | None:
    """The defaults of a section the file form may leave out: the teacher, a method's section."""
    if path == ("teacher",):
        return dataclasses.asdict(DetectorConfig())
    if len(path) == 2 and path[0] == "distill" and path[1] in method_names():
        return {}
    return None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON config file's top-level sections, unvalidated; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(values).__name__}")
    return values


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Load a YAML or JSON config file, apply dotted overrides, validate (a ``sweep:`` section is ignored)."""
    values = read_config_file(path)
    values.pop("sweep", None)  # a sweep config is a training config plus its `sweep:` section
    cfg = config_from_dict(values, str(path))
    return apply_overrides(cfg, overrides, str(path)) if overrides else cfg


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write ``cfg`` as YAML that :func:`load_config` reads back to an equal Config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path
