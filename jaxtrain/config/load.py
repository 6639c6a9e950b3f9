"""Read a YAML experiment file, apply ``key.sub=value`` overrides, validate into a Config.

Whatever the bytes of the file and the text of the overrides, the result is a valid Config or
one ConfigError: one line naming the file, the dotted key (or the line) and what was expected.
Nothing here imports JAX, so a mistake is reported before the heavy stack loads.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic
import yaml

from jaxtrain.config import messages, strict_yaml
from jaxtrain.config.schema import Config
from jaxtrain.files import write_text_atomic

_ADAPTER = pydantic.TypeAdapter(Config)
MAX_FILE_BYTES = 1 << 20
MAX_KEY_PARTS = 32


class ConfigError(ValueError):
    """A config the user must fix; its message is one line naming the file and the key.

    Characters that would break the line or the terminal (newlines, escapes, unpaired
    surrogates from undecodable argv bytes) are shown escaped.
    """

    def __init__(self, message: str) -> None:
        super().__init__(messages.printable(message))


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["optimizer.learning_rate=0.01", ...]`` into ``{"optimizer.learning_rate": 0.01}``.

    Values are parsed as YAML scalars/flow collections (``0.01`` -> float, ``[32,64]`` -> list,
    ``null`` -> None, ``1e-3`` -> float), by the same loader as files
    (:mod:`jaxtrain.config.strict_yaml`), so an override has the same types as the same text
    in the file.
    """
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not key or any(not part for part in parts):
            raise ConfigError(
                f"override {item!r}: expected key.sub=value (for example train.epochs=5)"
            )
        if not key.isprintable():  # newlines, escapes, undecodable argv bytes
            raise ConfigError(f"override {item!r}: the key is not printable text")
        if len(parts) > MAX_KEY_PARTS:
            raise ConfigError(f"override {item!r}: a key has at most {MAX_KEY_PARTS} parts")
        try:
            parsed[key] = strict_yaml.load(text, root=key) if text.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(
                f"override {item!r}: value is not valid YAML ({_one_line(err)})"
            ) from None
        except strict_yaml.YAMLRefused as err:
            raise ConfigError(f"override {item!r}: {_one_line(err)}") from None
    return parsed


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted-key overrides set (intermediate sections created).

    A key that itself holds dots (a sweep axis such as ``optimizer.learning_rate``, a weights
    file's ``conv1.weight``) is matched whole where it exists, so
    ``sweep.axes.optimizer.learning_rate.low=0.1`` sets that axis's ``low``.
    """
    result = json.loads(json.dumps(raw, default=str))
    for dotted, value in overrides.items():
        node, rest, done = result, dotted.split("."), []
        while True:
            whole = (j for j in range(len(rest), 0, -1) if ".".join(rest[:j]) in node)
            take = next(whole, 1)
            key, rest = ".".join(rest[:take]), rest[take:]
            done.append(key)
            if not rest:
                node[key] = value
                break
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                prefix = ".".join(done)
                raise ConfigError(f"override {dotted}: {prefix} is a value, not a section")
    return result


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (UTF-8, at most 1 MiB) with :func:`strict_yaml.load` (safe_load
    semantics); errors name the file and the line."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than 1 MiB; a config is a short text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(
            f"{path}: not UTF-8 text: byte 0x{data[err.start]:02x} at line {line}, column "
            f"{column} (save the file as UTF-8)"
        ) from None
    try:
        raw = strict_yaml.load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_one_line(err)}") from None
    except strict_yaml.YAMLRefused as err:
        raise ConfigError(f"{path}: {_one_line(err)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return raw


def validate(raw: Mapping[str, Any], source: str, overridden: Sequence[str] = ()) -> Config:
    """Validate a plain mapping into a Config; the first problem becomes one ConfigError line.

    With a ``sweep:`` section, every listed value of every axis (and both ends of every
    distribution) is also checked at its key, so a swept value that cannot work is reported
    now, not when its member starts.
    """
    config, problem = _checked(raw, overridden)
    if problem is not None:
        raise ConfigError(f"{source}: {problem}")
    if config.sweep is not None:
        _check_sweep_values(raw, config, source, overridden)
    return config


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Load ``path``, apply overrides, and return a validated, frozen Config.

    Raises:
      ConfigError: unreadable or malformed file, bad override syntax, unknown key, wrong type or
        impossible value; the message names the file and the dotted key (or the line).
    """
    try:
        parsed = parse_overrides(overrides)
        raw = apply_overrides(load_yaml(path), parsed)
    except ConfigError as err:
        message = str(err)
        if message.startswith(f"{path}: "):
            raise
        raise ConfigError(f"{path}: {message}") from None
    return validate(raw, str(path), tuple(parsed))


def config_to_dict(config: Config) -> dict[str, Any]:
    """A plain, YAML/JSON-ready dict of every resolved setting (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def dump_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (sections in declaration order) that loads back to
    the same config: a string such as ``1e3`` is quoted, since the loader reads it as a number."""
    write_text_atomic(path, strict_yaml.dump(config_to_dict(config)))


def _checked(raw: Mapping[str, Any], overridden: Sequence[str]) -> tuple[Config | None, str | None]:
    """``(config, None)``, or ``(None, "key: what was expected")`` for the first problem."""
    try:
        return _ADAPTER.validate_json(json.dumps(raw, default=str), strict=True), None
    except pydantic.ValidationError as err:
        return None, messages.problem(err.errors(include_url=False), raw, overridden)


def _check_sweep_values(
    raw: Mapping[str, Any], config: Config, source: str, overridden: Sequence[str]
) -> None:
    """Each swept value alone must make a valid config, under the settings that turn its axis
    on (``when``) and under each kind of a swept ``optimizer.name``/``model.name``
    (combinations are checked when the sweep expands into members)."""
    from jaxtrain.config.members import member_raw
    from jaxtrain.config.sweep import choices_of, sweep_contexts

    base = {k: v for k, v in raw.items() if k != "sweep"}
    for key, axis in config.sweep.axes.items():
        if choices_of(axis):
            values = [(f"[{i}]", value) for i, value in enumerate(choices_of(axis))]
        else:
            values = [(".low", axis.low), (".high", axis.high)]
        checked: set[str] = set()
        for suffix, value in values:
            text = json.dumps(value, default=str)
            if text in checked:
                continue
            checked.add(text)
            for context in sweep_contexts(config.sweep, key):
                try:
                    member = member_raw(base, {**context, key: value})
                except ConfigError as err:
                    problem = str(err)
                else:
                    _, problem = _checked(member, ())
                if problem is not None:
                    axis_key = f"sweep.axes.{key}{suffix}"
                    where = messages.set_where(axis_key, overridden)
                    shown = messages.short(value)
                    under = ", ".join(f"{k}={messages.short(v)}" for k, v in context.items())
                    under = f" (with {under})" if under else ""
                    raise ConfigError(
                        f"{source}: {axis_key}{where}: the swept value {shown} does not fit"
                        f"{under}: {problem}"
                    )


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
