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
            if key not in node and ".".join(done) in _DEFAULT_NAMES:
                # A section chosen by name that the file leaves at its default: an override
                # of one of its keys (optimizer.learning_rate=0.01) keeps the default choice.
                node[key] = {"name": _DEFAULT_NAMES[".".join(done)]}
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


# The default choice of each section chosen by name (its dataclass default), for overrides
# into a section the file does not write.
_DEFAULT_NAMES = {
    key: Config.__pydantic_fields__[key].default_factory().name for key in ("model", "optimizer")
}
BASE_KEY = "base"
MAX_BASES = 32  # files in one composition (a sanity bound; a cycle is refused by name)
UNION_SECTIONS = ("model", "optimizer", "federated.server_optimizer")  # chosen by ``name``


def load_composed(path: str | Path) -> tuple[dict[str, Any], list[Path]]:
    """Read ``path`` and the files its ``base:`` names, merged: ``(raw, files)``.

    ``base: digits_cnn.yaml`` (a path relative to the file that names it, or a list of
    them, merged in order) is read first and the file's own keys are laid over it:
    sections merge key by key, any other value (a list included) replaces the base's. A
    section chosen by ``name`` (``model``, ``optimizer``, ``federated.server_optimizer``)
    is replaced whole when the file picks another ``name`` (an ``mlp`` keeps none of a
    ``cnn``'s keys). Bases may have bases; a file met twice on one chain is a cycle and an
    error naming the chain. ``files`` lists the files read, the given one first.
    """
    return _compose(Path(path), ())


def _compose(path: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], list[Path]]:
    here = path.resolve()
    if here in chain:
        names = " -> ".join(str(p) for p in (*chain, here))
        raise ConfigError(f"{chain[-1]}: base: {names} is a cycle")
    if len(chain) >= MAX_BASES:
        raise ConfigError(f"{path}: base: more than {MAX_BASES} files deep")
    raw = load_yaml(path)
    bases = raw.pop(BASE_KEY, None)
    if bases is None:
        return raw, [path]
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(
            f"{path}: base: expected a config file name (relative to this file) or a list of them"
        )
    merged: dict[str, Any] = {}
    files = [path]
    for name in bases:
        base_path = path.parent / name
        if not base_path.is_file():
            raise ConfigError(f"{path}: base: {name!r} not found (looked for {base_path})")
        base_raw, base_files = _compose(base_path, (*chain, here))
        merged = merge_configs(merged, base_raw)
        files += base_files
    return merge_configs(merged, raw), files


def merge_configs(base: Mapping[str, Any], child: Mapping[str, Any], at: str = "") -> dict:
    """``child`` laid over ``base`` (see :func:`load_composed`); neither is changed."""
    merged = dict(base)
    for key, value in child.items():
        dotted = f"{at}.{key}" if at else key
        below = merged.get(key)
        if isinstance(value, dict) and isinstance(below, dict):
            name = below.get("name")
            switched = dotted in UNION_SECTIONS and value.get("name", name) != name
            merged[key] = dict(value) if switched else merge_configs(below, value, dotted)
        else:
            merged[key] = value
    return merged


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

    The file may name a ``base:`` it varies (see :func:`load_composed`); the result is the
    whole composed config, which is what a run's ``config.yaml`` then holds.

    Raises:
      ConfigError: unreadable or malformed file, bad override syntax, unknown key, wrong type or
        impossible value, a missing base or a cycle of bases; the message names the file and
        the dotted key (or the line).
    """
    composed, files = load_composed(path)  # its errors name the file they are about
    try:
        parsed = parse_overrides(overrides)
        if BASE_KEY in parsed:
            raise ConfigError(f"override {BASE_KEY}=...: name the base in the file, not here")
        raw = apply_overrides(composed, parsed)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    source = str(path)
    if len(files) > 1:
        source += f" (with base {', '.join(str(f) for f in files[1:])})"
    return validate(raw, source, tuple(parsed))


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
