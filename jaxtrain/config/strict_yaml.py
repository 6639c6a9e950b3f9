"""YAML for configs: ``yaml.safe_load`` semantics, numbers as people write them, and no traps.

What differs from ``yaml.safe_load`` (every difference refuses or reads a hostile or mistaken
file; no Python object is ever constructed):

- **Numbers**: YAML 1.2 float syntax on top of YAML 1.1's, so ``1e-3``, ``3E-4``, ``.5``,
  ``-.5``, ``2.5e3`` and ``-2.5e-3`` are floats (PyYAML alone reads ``1e-3`` as a string).
  An integer mantissa with a non-negative exponent and no point (``1e6``, ``5E3``) is an
  integer, so ``train.epochs: 1e6`` works; it is also accepted wherever a float is expected
  (past ``MAX_INT_DIGITS`` digits, such as ``99e99``, it stays a float).
  Quoted numbers (``"0.01"``) stay strings. Integers of more than ``MAX_INT_DIGITS`` digits
  are refused (Python cannot even convert such text). Dates stay the text written.
- **Duplicate keys** in any mapping are an error naming the key's path and both lines (YAML
  requires unique keys; PyYAML keeps the last one silently). ``<<`` merge keys may still be
  overridden by explicit keys, as YAML's merge semantics say.
- **Keys are text**: a number, boolean or null used as a key is refused (every config key is a
  name; ``on:`` is a boolean in YAML 1.1).
- **Aliases** (``*anchor``, and ``<<: *anchor`` merges) are allowed, but everything they copy
  together may add at most ``MAX_ALIAS_NODES`` values to the document, and an alias inside
  its own anchor is refused: a 381-byte "billion laughs" file is refused in a millisecond
  instead of expanding to gigabytes.
- **Nesting** deeper than ``MAX_DEPTH`` levels (after aliases) is refused before Python's
  recursion limit is reached.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_DEPTH = 64
MAX_ALIAS_NODES = 10_000
MAX_INT_DIGITS = 100

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_MERGE = "tag:yaml.org,2002:merge"
_DROPPED = (_FLOAT, "tag:yaml.org,2002:timestamp")

# 1e6, -5E+3: an integer times a power of ten (two exponent digits at most; 1e400 is a float,
# and an infinite one, which the schema then refuses as not finite).
_EXPONENT_INT = re.compile(r"^[-+]?[0-9]+[eE]\+?[0-9]{1,2}$")
# YAML 1.1 floats (PyYAML's) plus YAML 1.2's: optional point, optional exponent sign.
_FLOAT_SYNTAX = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


class YAMLRefused(ValueError):
    """Valid YAML that a config may not contain; the message says where and why (one line)."""


class _Loader(yaml.SafeLoader):
    """SafeLoader with the resolver above and a nesting bound while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YAMLRefused(f"line {mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: ScalarNode) -> int | float:
        text = str(node.value)
        if _EXPONENT_INT.match(text):  # decimal mantissa: 01e3 is 1000, not YAML 1.1's octal
            mantissa, _, exponent = text.lower().partition("e")
            if len(mantissa.lstrip("+-").lstrip("0")) + int(exponent) > MAX_INT_DIGITS:
                return float(text)  # too long for an integer setting: YAML 1.2's float
            return int(mantissa) * 10 ** int(exponent)
        if sum(c.isdigit() for c in text) > MAX_INT_DIGITS:
            raise YAMLRefused(
                f"line {node.start_mark.line + 1}: an integer of more than {MAX_INT_DIGITS} "
                "digits is not a setting"
            )
        return super().construct_yaml_int(node)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "-+0123456789.":
    _Loader.yaml_implicit_resolvers.setdefault(_first, [])
    _numbers = (
        [(_FLOAT, _FLOAT_SYNTAX)]
        if _first == "."
        else [(_INT, _EXPONENT_INT), (_FLOAT, _FLOAT_SYNTAX)]
    )
    _Loader.yaml_implicit_resolvers[_first][:0] = _numbers
_Loader.add_constructor(_INT, _Loader.construct_yaml_int)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes every string ``load`` would read as something else (``1e3``)."""


_Dumper.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


def dump(data: Any) -> str:
    """YAML text that :func:`load` reads back as ``data`` (plain data: dicts in their order,
    lists, str, int, float, bool, None)."""
    # Non-ASCII text is escaped, as safe_dump does: written raw, PyYAML folds U+0085, U+2028
    # and U+2029 inside quotes into spaces on reading.
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def load(text: str, root: str = "") -> Any:
    """Parse one YAML document as described in the module docstring; ``root`` is the dotted
    key the document is the value of (an override's key), for messages.

    Raises:
      yaml.YAMLError: malformed YAML (PyYAML's own message and position).
      YAMLRefused: well-formed YAML a config may not contain (duplicate key, key that is not
        text, alias bomb or self-reference, nesting, an integer too long to be a setting).
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _Check(loader).run(node, root)
        return loader.construct_document(node)
    finally:
        loader.dispose()


class _Check:
    """One pass over the composed node graph (aliases are shared nodes, visited once)."""

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.seen: dict[int, tuple[int, int]] = {}  # id -> (expanded size, expanded height)
        self.open: set[int] = set()  # nodes on the current path: an alias back to one is a loop

    def run(self, node: Node, root: str) -> None:
        size, _ = self.visit(node, root, 1)
        extra = size - len(self.seen)
        if extra > MAX_ALIAS_NODES:
            raise YAMLRefused(
                f"aliases would add more than {MAX_ALIAS_NODES} values to the document "
                f"({extra}): write the values out, or alias less"
            )

    def visit(self, node: Node, path: str, depth: int) -> tuple[int, int]:
        where = path or "<top level>"
        if id(node) in self.open:
            raise YAMLRefused(f"line {_line(node)}: {where}: an alias refers to its own anchor")
        if id(node) in self.seen:
            size, height = self.seen[id(node)]
        else:
            self.open.add(id(node))
            size, height = self.children(node, path, depth)
            self.open.discard(id(node))
            self.seen[id(node)] = (size, height)
        if depth + height - 1 > MAX_DEPTH:
            raise YAMLRefused(
                f"line {_line(node)}: {where}: nested more than {MAX_DEPTH} levels deep"
            )
        return size, height

    def children(self, node: Node, path: str, depth: int) -> tuple[int, int]:
        if isinstance(node, ScalarNode):
            if "\x00" in node.value:  # only a "\0" escape makes one; no setting holds it
                raise YAMLRefused(f"line {_line(node)}: {path or '<top level>'}: text with a NUL")
            return 1, 1
        size, height = 1, 1
        if isinstance(node, SequenceNode):
            pairs = [(f"{path}[{i}]", child) for i, child in enumerate(node.value)]
        else:
            assert isinstance(node, MappingNode)
            pairs = self.keys(node, path)
        for child_path, child in pairs:
            child_size, child_height = self.visit(child, child_path, depth + 1)
            size += child_size
            height = max(height, child_height + 1)
        return size, height

    def keys(self, node: MappingNode, path: str) -> list[tuple[str, Node]]:
        """The mapping's values by dotted path; refuses keys that are not text, or repeated."""
        first_line: dict[str, int] = {}
        pairs = []
        for key_node, value in node.value:
            if key_node.tag == _MERGE:
                pairs.append((path, value))  # merged keys land in this very mapping
                continue
            key = (
                self.loader.construct_object(key_node) if isinstance(key_node, ScalarNode) else None
            )
            if not isinstance(key, str):
                raise YAMLRefused(
                    f"line {_line(key_node)}: {path or '<top level>'}: {_not_text(key_node, key)}"
                )
            dotted = f"{path}.{key}" if path else key
            if key in first_line:
                raise YAMLRefused(
                    f"line {_line(key_node)}: {dotted}: duplicate key (first set on line "
                    f"{first_line[key]}); a mapping holds each key once"
                )
            first_line[key] = _line(key_node)
            pairs.append((dotted, value))
        return pairs


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _not_text(node: Node, key: Any) -> str:
    if not isinstance(node, ScalarNode):
        return "a key must be text, not a collection"
    kind = {bool: "a boolean", type(None): "null", int: "a number", float: "a number"}
    what = kind.get(type(key), f"a {type(key).__name__}")
    return f"key {node.value} is read as {what}, not text (quote it: '{node.value}')"
