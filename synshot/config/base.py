"""Config machinery: strict pydantic models, YAML inheritance and command-line overrides.

Why strict: a typo in a key of a multi-node job should fail at submission, not silently fall
back to a default after hours in the queue. Unknown keys, wrong types and impossible values
raise :class:`ConfigError` naming the file and the dotted key.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound="ConfigBase")

INHERIT_KEY = "inherit"  # a YAML file may start with `inherit: other.yaml` (relative to itself)


class ConfigError(ValueError):
    """A configuration problem, with the file and the key it concerns."""


class ConfigBase(BaseModel):
    """Base of every config section: no unknown keys, validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular '{INHERIT_KEY}' chain: {' -> '.join(map(str, seen + (path,)))}")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (check the --config path)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    data = _inherit_sections(data, path, seen + (path,))
    parent = data.pop(INHERIT_KEY, None)
    if parent is None:
        return data
    base = _read_yaml((path.parent / parent), seen + (path,))
    return _deep_merge(base, data)


def _inherit_sections(data: dict[str, Any], path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A section may ``inherit:`` a file too (``model: {inherit: ../model/tiny.yaml}``), so one
    component config is written once and composed into every run config that uses it."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            value = _inherit_sections(value, path, seen)
            parent = value.pop(INHERIT_KEY, None)
            if parent is not None:
                value = _deep_merge(_read_yaml(path.parent / parent, seen), value)
        out[key] = value
    return out


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings; values are parsed as YAML (``3``, ``1e-4``, ``[1,2]``, ``true``)."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value, e.g. model.feature_channels=32")
        dotted, raw = item.split("=", 1)
        keys = [k for k in dotted.strip().split(".") if k]
        if not keys:
            raise ConfigError(f"override '{item}': empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': value is not valid YAML: {exc}") from exc
        node = out
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{item}': '{key}' is a value, not a section")
            node = child
        node[keys[-1]] = value
    return out


def _format_validation_error(cls: type[BaseModel], exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid {cls.__name__}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo? see the config class for valid keys)"
        got = err.get("input")
        got_txt = "" if err["type"] in ("extra_forbidden", "missing") else f" (got {got!r})"
        lines.append(f"  {key}: {msg}{got_txt}")
    return "\n".join(lines)


def validate_config(cls: type[T], data: Mapping[str, Any], source: str = "<config>") -> T:
    """Validate a plain mapping into ``cls``; errors name ``source`` and the dotted key."""
    try:
        return cls.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(cls, exc, source)) from None


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Load ``path`` (YAML, with ``inherit:``), apply ``overrides``, validate into ``cls``."""
    data = _read_yaml(Path(path)) if path is not None else {}
    overrides = list(overrides)
    data = apply_overrides(data, overrides)
    source = str(path) if path is not None else "<defaults>"
    if overrides:
        source += " + overrides " + " ".join(overrides)
    return validate_config(cls, data, source)


def dump_config(cfg: BaseModel) -> str:
    """Canonical JSON of a config (stored beside checkpoints and exports)."""
    return json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True)
