"""Read a YAML experiment file, apply ``key.sub=value`` overrides, validate into a Config.

Whatever the bytes of the file and the text of the overrides, the result is a valid Config or
one ConfigError: one line naming the file, the dotted key (or the line) and what was expected.
Nothing here imports JAX, so a mistake is reported before the heavy stack loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic
import yaml

from jaxtrain.config import strict_yaml
from jaxtrain.config.schema import Config

_ADAPTER = pydantic.TypeAdapter(Config)
MAX_FILE_BYTES = 1 << 20
MAX_KEY_PARTS = 32


class ConfigError(ValueError):
    """A config the user must fix; its message is one line naming the file and the key.

    Characters that would break the line or the terminal (newlines, escapes, unpaired
    surrogates from undecodable argv bytes) are shown escaped.
    """

    def __init__(self, message: str) -> None:
        super().__init__(_printable(message))


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
            parsed[key] = strict_yaml.load(text) if text.strip() else None
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
    Path(path).write_text(strict_yaml.dump(config_to_dict(config)))


def _checked(raw: Mapping[str, Any], overridden: Sequence[str]) -> tuple[Config | None, str | None]:
    """``(config, None)``, or ``(None, "key: what was expected")`` for the first problem."""
    try:
        return _ADAPTER.validate_json(json.dumps(raw, default=str), strict=True), None
    except pydantic.ValidationError as err:
        return None, _problem(err.errors(include_url=False), raw, overridden)


def _problem(errors: list[Any], raw: Mapping[str, Any], overridden: Sequence[str]) -> str:
    """One line for the first problem pydantic found.

    A union (a tagged section, ``float | str``, a list or a distribution) reports one error
    per branch: the branch that got furthest into the value (the deepest key) is reported,
    and branches failing at the same key are joined (``a finite number or a valid string``).
    """
    keyed = [(_key_of(error, raw), error) for error in errors]
    key, first = keyed[0]
    related = [(k, e) for k, e in keyed if k == key or k.startswith((f"{key}.", f"{key}["))]
    key = max((k for k, _ in related), key=lambda k: k.count(".") + k.count("["))
    branches = [e for k, e in related if k == key]
    first = branches[0]
    message = _describe(branches)
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        key = f"{key}.name" if key else "name"  # the tag is the section's name key
    elif first["type"] == "value_error":  # a section's check: "field: what is wrong"
        field, sep, rest = message.partition(": ")
        if sep and field.split(".")[0] in _known_keys(tuple(first["loc"])):
            key, message = (f"{key}.{field}" if key else field), rest
    where = " (set on the command line)" if _overridden(key, overridden) else ""
    others = {k for k, _ in keyed if k != key and not k.startswith((f"{key}.", f"{key}["))}
    others -= {k for k, _ in related}
    more = f" [and {len(others)} more problem(s)]" if others else ""
    return f"{key or '<top level>'}{where}: {message}{more}"


def _overridden(key: str, overridden: Sequence[str]) -> bool:
    """Whether ``key`` is an override's key or lies inside one (``model={...}``)."""
    return any(key == o or key.startswith((f"{o}.", f"{o}[")) for o in overridden)


def _check_sweep_values(
    raw: Mapping[str, Any], config: Config, source: str, overridden: Sequence[str]
) -> None:
    """Each swept value alone must make a valid config (combinations are checked when the
    sweep expands into members)."""
    base = {k: v for k, v in raw.items() if k != "sweep"}
    for key, axis in config.sweep.axes.items():
        if isinstance(axis, list):
            values = [(f"[{i}]", value) for i, value in enumerate(axis)]
        else:
            values = [(".low", axis.low), (".high", axis.high)]
        checked: set[str] = set()
        for suffix, value in values:
            text = json.dumps(value, default=str)
            if text in checked:
                continue
            checked.add(text)
            try:
                member = apply_overrides(base, {key: value})
            except ConfigError as err:
                problem = str(err)
            else:
                _, problem = _checked(member, ())
            if problem is not None:
                axis_key = f"sweep.axes.{key}{suffix}"
                where = " (set on the command line)" if _overridden(axis_key, overridden) else ""
                raise ConfigError(
                    f"{source}: {axis_key}{where}: the swept value {_short(value)} does not "
                    f"fit: {problem}"
                )


def _key_of(error: Mapping[str, Any], raw: Mapping[str, Any]) -> str:
    """Dotted key of a pydantic error, following its location through the user's own data:
    union branch labels (``cnn`` of a tagged section, ``float``, ``list[any]``) are not keys."""
    loc = error["loc"]
    missing = error["type"] in ("missing", "missing_argument")
    parts: list[str] = []
    node: Any = raw
    for index, part in enumerate(loc):
        if isinstance(node, Mapping) and isinstance(part, str):
            if part in node:
                parts.append(part)
                node = node[part]
            elif missing and index == len(loc) - 1:
                parts.append(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            parts.append(f"[{part}]")
            node = node[part]
        else:
            break  # below a scalar only branch labels remain
    return ".".join(parts).replace(".[", "[")


def _describe(branches: list[Mapping[str, Any]]) -> str:
    first = branches[0]
    kind = first["type"]
    if kind == "unexpected_keyword_argument":
        return f"unknown key{_suggestion(first['loc'])}"
    if kind == "missing" or kind == "missing_argument":
        return "required key is missing"
    if kind == "value_error":
        return first["msg"].removeprefix("Value error, ")
    messages = []
    for error in branches:
        message = error["msg"].replace("an object", "a section (a mapping of keys)")
        if error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        elif messages:
            message = message.removeprefix("Input should be ")
        if message not in messages:
            messages.append(message)
    message = " or ".join(messages)
    if "input" in first and kind != "union_tag_invalid" and "(got " not in message:
        return f"{message} (got {_short(first['input'])})"
    return message


def _suggestion(loc: Sequence[Any]) -> str:
    """`` (did you mean 'hidden'?)`` or `` (keys here: a, b, c)``, from the schema."""
    known = _known_keys(tuple(loc[:-1]))
    if not known:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (keys here: {', '.join(known)})"


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the schema allows at ``loc`` (a pydantic location, branch labels included)."""
    schema = _json_schema()
    node: Any = schema
    for part in loc:
        node = _resolve(node, schema)
        if part in node.get("properties", {}):
            node = node["properties"][part]
        elif part in node.get("discriminator", {}).get("mapping", {}):
            node = {"$ref": node["discriminator"]["mapping"][part]}
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif node.get("patternProperties"):  # sweep.axes: keys of a given form
            node = next(iter(node["patternProperties"].values()))
        else:
            options = [_resolve(o, schema) for o in node.get("anyOf", [])]
            titled = [o for o in options if o.get("title") == part]
            if not titled:
                return []
            node = titled[0]
    return sorted(_resolve(node, schema).get("properties", {}))


def _resolve(node: Any, schema: Mapping[str, Any]) -> Any:
    """Follow ``$ref`` and unwrap ``X | None`` (``anyOf`` with a null)."""
    while True:
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
            continue
        options = [o for o in node.get("anyOf", []) if o.get("type") != "null"]
        if "anyOf" in node and len(options) == 1:
            node = options[0]
            continue
        return node


@functools.cache
def _json_schema() -> dict[str, Any]:
    return _ADAPTER.json_schema()


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
