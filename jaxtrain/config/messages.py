"""One line for a pydantic validation error: the dotted key as the user wrote it, whether
it was set on the command line, and what was expected (``got`` what)."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from jaxtrain import registry
from jaxtrain.config.schema import Config


def problem(errors: list[Any], raw: Mapping[str, Any], overrides: Sequence[str]) -> str:
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
    message = _describe(branches, raw)
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        key = f"{key}.name" if key else "name"  # the tag is the section's name key
    elif first["type"] == "value_error":  # a section's check: "field: what is wrong"
        field, sep, rest = message.partition(": ")
        if sep and field.split(".")[0] in _known_keys(tuple(first["loc"]), raw):
            key, message = (f"{key}.{field}" if key else field), rest
    where = set_where(key, overrides)
    others = {k for k, _ in keyed if k != key and not k.startswith((f"{key}.", f"{key}["))}
    others -= {k for k, _ in related}
    more = f" [and {len(others)} more problem(s)]" if others else ""
    return f"{key or '<top level>'}{where}: {message}{more}"


def set_where(key: str, overrides: Sequence[str]) -> str:
    """`` (set on the command line)`` when ``key`` is an override's key or lies inside one
    (``model={...}``), else nothing."""
    inside = any(key == o or key.startswith((f"{o}.", f"{o}[")) for o in overrides)
    return " (set on the command line)" if inside else ""


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


def _describe(branches: list[Mapping[str, Any]], raw: Mapping[str, Any]) -> str:
    first = branches[0]
    kind = first["type"]
    if kind == "unexpected_keyword_argument":
        return f"unknown key{_suggestion(first['loc'], raw)}"
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
        return f"{message} (got {short(first['input'])})"
    return message


def _suggestion(loc: Sequence[Any], raw: Mapping[str, Any]) -> str:
    """`` (did you mean 'hidden'?)`` or `` (keys here: a, b, c)``, from the schema."""
    known = _known_keys(tuple(loc[:-1]), raw)
    if not known:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (keys here: {', '.join(known)})"


def _known_keys(loc: tuple[Any, ...], raw: Mapping[str, Any]) -> list[str]:
    """The keys the schema allows at ``loc`` (a pydantic location, branch labels included);
    a registered or import-path family's keys come from its own section class."""
    schema = _json_schema()
    node: Any = schema
    for index, part in enumerate(loc):
        if part == registry.OPEN_TAG and index:
            return registry.section_keys(str(loc[index - 1]), _value_at(raw, loc[:index]))
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


def _value_at(raw: Any, loc: Sequence[Any]) -> Any:
    """The user's value at the keys of ``loc`` (branch labels skipped)."""
    for part in loc:
        if isinstance(raw, Mapping) and part in raw:
            raw = raw[part]
    return raw


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
    return pydantic.TypeAdapter(Config).json_schema()


def short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def printable(text: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
