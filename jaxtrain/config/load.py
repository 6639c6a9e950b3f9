"""Read a YAML experiment file, apply ``key.sub=value`` overrides, validate into a Config."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic
import yaml

from jaxtrain.config.schema import Config

_ADAPTER = pydantic.TypeAdapter(Config)


class ConfigError(ValueError):
    """A config the user must fix; its message is one line naming the file and the key."""


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["optimizer.learning_rate=0.01", ...]`` into ``{"optimizer.learning_rate": 0.01}``.

    Values are parsed as YAML scalars/flow collections (``0.01`` -> float, ``[32,64]`` -> list,
    ``null`` -> None), so an override has the same types as the same text in the file.
    """
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"override {item!r}: expected key.sub=value (for example train.epochs=5)"
            )
        try:
            parsed[key] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(
                f"override {item!r}: value is not valid YAML ({_one_line(err)})"
            ) from None
    return parsed


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted-key overrides set (intermediate sections created)."""
    result = json.loads(json.dumps(raw, default=str))
    for dotted, value in overrides.items():
        node = result
        parts = dotted.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(f"override {dotted}: {prefix} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return result


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_one_line(err)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return raw


def validate(raw: Mapping[str, Any], source: str, overridden: Sequence[str] = ()) -> Config:
    """Validate a plain mapping into a Config; the first problem becomes one ConfigError line."""
    try:
        return _ADAPTER.validate_json(json.dumps(raw, default=str), strict=True)
    except pydantic.ValidationError as err:
        errors = err.errors(include_url=False)
        first = errors[0]
        key = _key_of(first["loc"], raw)
        if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            key = f"{key}.name" if key else "name"  # the tag is the section's name key
        where = " (set on the command line)" if key in overridden else ""
        more = f" [and {len(errors) - 1} more problem(s)]" if len(errors) > 1 else ""
        raise ConfigError(
            f"{source}: {key or '<top level>'}{where}: {_describe(first)}{more}"
        ) from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Load ``path``, apply overrides, and return a validated, frozen Config.

    Raises:
      ConfigError: unreadable or malformed file, bad override syntax, unknown key, wrong type or
        impossible value; the message names the file and the dotted key.
    """
    parsed = parse_overrides(overrides)
    raw = apply_overrides(load_yaml(path), parsed)
    return validate(raw, str(path), tuple(parsed))


def config_to_dict(config: Config) -> dict[str, Any]:
    """A plain, YAML/JSON-ready dict of every resolved setting (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def dump_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (sections in declaration order)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


def _key_of(loc: Sequence[Any], raw: Mapping[str, Any]) -> str:
    """Dotted key for a pydantic error location, dropping tagged-union tags (model.cnn.x)."""
    parts: list[str] = []
    node: Any = raw
    for part in loc:
        if isinstance(node, Mapping) and isinstance(part, str):
            if part not in node and node.get("name") == part:
                continue  # the union's tag, not a key the user wrote
            parts.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            parts.append(f"[{part}]")
            node = node[part] if part < len(node) else None
        else:
            parts.append(str(part))
            node = None
    return ".".join(parts).replace(".[", "[")


def _describe(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "unexpected_keyword_argument":
        return "unknown key"
    if kind == "missing" or kind == "missing_argument":
        return "required key is missing"
    message = error["msg"].replace("an object", "a section (a mapping of keys)")
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if "input" in error and kind not in ("union_tag_invalid",):
        return f"{message} (got {error['input']!r})"
    return message


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
