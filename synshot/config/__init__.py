"""Typed configuration: YAML files validated into pydantic models, with ``key=value`` overrides.

Every component owns its config class next to its code (e.g. ``synshot.model.config.ModelConfig``);
this package only holds the machinery shared by all of them.
"""

from synshot.config.base import ConfigBase, ConfigError, apply_overrides, dump_config, load_config, validate_config

__all__ = ["ConfigBase", "ConfigError", "apply_overrides", "dump_config", "load_config", "validate_config"]
