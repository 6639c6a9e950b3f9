"""Configs and command lines a hostile or careless user writes: each ends in one line, exit 2,
nothing written, or loads exactly as meant.

References: Python's ``float``/``Decimal`` and the YAML 1.2 core-schema float regex (numbers),
``yaml.safe_load`` (shipped configs load as before), grain and JAX themselves (the seed
bound), the JSON schema of ``Config`` (every numeric field of every section is walked), and
``sys.modules`` of a fresh interpreter (nothing heavy is imported before a config error).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import resource
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from jaxtrain.cli import _parse_args, main
from jaxtrain.config import Config, ConfigError, dump_config, load_config, validate
from jaxtrain.config.strict_yaml import MAX_ALIAS_NODES, MAX_DEPTH
from tests.support import CONFIGS, ROOT, small_mlp_yaml


@pytest.fixture
def config_file(tmp_path: Path):
    """Write ``text`` (str or bytes) as a config file and return its path."""

    def write(text: str | bytes = small_mlp_yaml(), name: str = "c.yaml") -> Path:
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    return write


CLI = " (set on the command line)"
ADAPTER = pydantic.TypeAdapter(Config)


def _error(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides))
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{path}: "), text
    return text


# 1. Bytes that are not UTF-8 ------------------------------------------------------------


def test_non_utf8_bytes_name_the_file_line_and_byte(config_file) -> None:
    path = config_file(small_mlp_yaml().encode() + b"# caf\xe9 au lait\n")
    line = small_mlp_yaml().count("\n") + 1
    assert _error(path) == (
        f"{path}: not UTF-8 text: byte 0xe9 at line {line}, column 6 (save the file as UTF-8)"
    )


def test_a_utf16_file_is_refused_and_a_utf8_bom_is_fine(config_file) -> None:
    assert "not UTF-8 text: byte 0xff at line 1" in _error(
        config_file(small_mlp_yaml().encode("utf-16"))
    )
    assert load_config(config_file(b"\xef\xbb\xbf" + small_mlp_yaml().encode())).name == (
        "small_mlp"
    )


def test_huge_and_unreadable_files_are_one_line(config_file, tmp_path: Path) -> None:
    assert "larger than 1 MiB" in _error(config_file(b"# x\n" * 300_000))
    assert "cannot read config file" in _error(tmp_path)  # a directory


# 2. Duplicate keys ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "name: a\nname: b\ndata: {name: digits}\n",
            "line 2: name: duplicate key (first set on line 1)",
        ),
        (
            "name: a\ndata:\n  name: digits\n  batch_size: 8\n  batch_size: 16\n",
            "line 5: data.batch_size: duplicate key (first set on line 4)",
        ),
        (
            "name: a\ndata: {name: digits}\nsweep: {axes: {seed: [1], seed: [2]}}\n",
            "line 3: sweep.axes.seed: duplicate key",
        ),
        ("name: a\ndata: {name: digits, 'name': wine}\n", "data.name: duplicate key"),
    ],
)
def test_duplicate_keys_in_files_name_key_and_lines(config_file, text: str, needle: str) -> None:
    assert needle in _error(config_file(text))


def test_duplicate_keys_in_override_values_are_refused(config_file) -> None:
    message = _error(config_file(), ["model={name: mlp, hidden: [8], hidden: [16]}"])
    assert "override 'model={name: mlp, hidden: [8], hidden: [16]}'" in message
    assert "line 1: model.hidden: duplicate key" in message


def test_merge_keys_may_be_overridden_explicitly(config_file) -> None:
    merged = "model={<<: {name: mlp, hidden: [8], dropout: 0.2}, dropout: 0.3}"
    config = load_config(config_file(), [merged])
    assert (config.model.hidden, config.model.dropout) == ((8,), 0.3)


def test_keys_must_be_text(config_file) -> None:
    assert "key 1 is read as a number, not text (quote it: '1')" in _error(
        config_file(small_mlp_yaml() + "1: x\n")
    )
    assert "key on is read as a boolean" in _error(config_file(small_mlp_yaml() + "on: x\n"))


# 3. Aliases ----------------------------------------------------------------------------


def _laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        prev, name = chr(96 + i), chr(97 + i)
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_in_well_under_a_tenth_of_a_second(config_file) -> None:
    text = _laughs()
    assert len(text) < 400  # 9**9 = 387 million strings once expanded
    path = config_file(text)
    started = time.perf_counter()
    message = _error(path)
    elapsed = time.perf_counter() - started
    assert f"aliases would add more than {MAX_ALIAS_NODES} values" in message
    assert elapsed < 0.1, elapsed


def test_self_referencing_aliases_are_refused(config_file) -> None:
    assert "an alias refers to its own anchor" in _error(config_file("name: &a [*a]\n"))
    assert "an alias refers to its own anchor" in _error(config_file("data: &d {x: *d}\n"))


def test_modest_aliases_still_work(config_file) -> None:
    text = small_mlp_yaml().replace(
        "data: {name: digits, batch_size: 32}",
        "data: {name: digits, batch_size: &b 32, eval_batch_size: *b}",
    )
    assert load_config(config_file(text)).data.eval_batch_size == 32


def test_deep_nesting_is_refused_not_a_recursion_error(config_file) -> None:
    deep = "[" * 5000 + "]" * 5000
    assert f"nested more than {MAX_DEPTH} levels deep" in _error(config_file(f"name: {deep}\n"))
    assert "nested more than" in _error(config_file(), [f"model.hidden={deep}"])
    assert "at most 32 parts" in _error(config_file(), [".".join(["a"] * 40) + "=1"])


def test_text_values_are_names_not_arbitrary_bytes(config_file) -> None:
    body = small_mlp_yaml().replace("name: digits", 'name: "dig\\0its"')
    assert "line 4: data.name: text with a NUL" in _error(config_file(body))
    for name in ("a b", "../../etc", "mnist/x/y/z", "x=1", "digits\n"):
        message = _error(config_file(), [f"data.name={json.dumps(name)}"])
        assert f"data.name (set on the command line): {name!r} is not a dataset name" in message
    for name in ("mnist", "mnist/plain:3.0.1", "my_ns:cifar10/x:1.*.*", "digits"):
        assert load_config(config_file(), [f"data.name={name}"]).data.name == name


# 4. Numbers as people write them --------------------------------------------------------

# YAML 1.2.2, section 10.3.2 (core schema): the float and int forms, written independently.
YAML12_FLOAT = r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"
YAML12_INT = r"[-+]?[0-9]+"


@pytest.mark.parametrize("text", ["1e-3", "3E-4", ".5", "2.5e-3", "1.0e+2", "6.25E-05", "1."])
def test_float_syntax_is_a_float_in_files_and_overrides(config_file, text: str) -> None:
    body = small_mlp_yaml().replace("learning_rate: 0.003", f"learning_rate: {text}")
    assert load_config(config_file(body)).optimizer.learning_rate == float(text)
    override = load_config(config_file(), [f"optimizer.learning_rate={text}"])
    assert override.optimizer.learning_rate == float(text)


@pytest.mark.parametrize("text", ["-2.5e-3", "-.5", "-1e-3"])
def test_negative_float_syntax_is_a_number_too(config_file, text: str) -> None:
    # Read as a number, so refused for its value (not as "not a number").
    message = _error(config_file(), [f"optimizer.learning_rate={text}"])
    assert f"Input should be greater than 0 (got {float(text)!r})" in message


@pytest.mark.parametrize(
    ("text", "expected"), [("1e6", 1_000_000), ("5E+2", 500), ("-2e3", -2000), ("01e3", 1000)]
)
def test_integral_exponent_form_reads_as_an_integer(text: str, expected: int) -> None:
    from jaxtrain.config.strict_yaml import load

    value = load(f"x: {text}")["x"]
    assert type(value) is int and value == expected == Decimal(text)


def test_integral_exponent_form_is_an_int_where_ints_are_meant(config_file) -> None:
    config = load_config(config_file(), ["train.epochs=1e3", "data.seed=5E+2"])
    assert (config.train.epochs, config.data.seed) == (1000, 500)
    assert type(config.train.epochs) is int
    assert "valid integer (got 1500.0)" in _error(config_file(), ["train.epochs=1.5e3"])
    assert "at most 1000000" in _error(config_file(), ["train.epochs=1e7"])
    assert (
        load_config(config_file(), ["optimizer.learning_rate=1e0"]).optimizer.learning_rate == 1.0
    )


@pytest.mark.parametrize("text", ["'0.01'", '"1e-3"', "abc", "1e-3x", "0.01.", "[0.01]", "true"])
def test_strings_where_numbers_are_meant_still_fail(config_file, text: str) -> None:
    message = _error(config_file(), [f"optimizer.learning_rate={text}"])
    assert f"optimizer.learning_rate{CLI}: Input should be a valid number" in message
    body = small_mlp_yaml().replace("learning_rate: 0.003", f"learning_rate: {text}")
    assert "optimizer.learning_rate: Input should be a valid number" in _error(config_file(body))


@settings(max_examples=150, deadline=None, database=None)
@given(text=st.from_regex(YAML12_FLOAT, fullmatch=True))
@example(text="99e99")  # an integer of 101 digits: too long for one, so YAML 1.2's float
@example(text="1e400")  # infinite as a float (and then refused by every schema field)
def test_every_yaml12_float_reads_as_its_value(text: str) -> None:
    from jaxtrain.config.strict_yaml import load

    assume(not re.fullmatch(YAML12_INT, text))  # the core schema's ints: YAML 1.1 rules stay
    value = load(f"x: {text}")["x"]
    if isinstance(value, int):  # 1e6: an integer mantissa times a non-negative power of ten
        assert "." not in text and "e-" not in text.lower(), text
        assert Decimal(value) == Decimal(text), text
    else:
        assert isinstance(value, float) and value == float(text), (text, value)


def test_a_resolved_config_with_number_like_text_loads_back(config_file, tmp_path) -> None:
    overrides = [
        "name='1e3'",
        "data.classes=['.5', '1E6', 'on']",
        "fairness={sensitive_feature: '0x1f'}",
    ]
    config = load_config(config_file(), overrides)
    dump_config(config, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == config


@settings(max_examples=300, deadline=None, database=None)
@given(
    value=st.text()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
    | st.dictionaries(st.text(), st.text() | st.floats(allow_nan=False), max_size=3)
)
def test_dump_then_load_is_the_identity(value) -> None:
    from jaxtrain.config.strict_yaml import dump, load

    assume("\\u0000" not in json.dumps(value))  # text with a NUL is refused by design
    assert load(dump({"k": [value]})) == {"k": [value]}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_exactly_as_with_safe_load(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    if "base" in raw:  # shipped variants (base: ...) add or replace whole top-level sections
        raw = {**yaml.safe_load((path.parent / raw.pop("base")).read_text()), **raw}
    assert load_config(path) == validate(raw, str(path))


# 5 and 6. Every float is finite, every integer bounded: walked over the whole schema ------


def _numeric_fields() -> list[tuple[tuple[Any, ...], set[str]]]:
    """(path through a raw config, JSON types) for every number/integer field of the schema;
    path entries are keys, list indices, or ``("name", tag)`` for a tagged section."""
    schema = ADAPTER.json_schema()
    defs = schema["$defs"]
    found: list[tuple[tuple[Any, ...], set[str]]] = []

    def resolve(node):
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        return node

    def walk(node, path):
        node = resolve(node)
        options = node.get("anyOf") or node.get("oneOf")
        if "discriminator" in node:
            for tag, ref in node["discriminator"]["mapping"].items():
                walk({"$ref": ref}, (*path, ("name", tag)))
            return
        if options:
            kinds = {resolve(o).get("type") for o in options} & {"number", "integer"}
            if kinds:
                found.append((path, kinds))
            for option in options:
                if resolve(option).get("type") not in ("number", "integer", "null"):
                    walk(option, path)
            return
        kind = node.get("type")
        if kind in ("number", "integer"):
            found.append((path, {kind}))
        elif kind == "object":
            for key, child in node.get("properties", {}).items():
                walk(child, (*path, key))
            for child in [
                node.get("additionalProperties"),
                *node.get("patternProperties", {}).values(),
            ]:
                if isinstance(child, dict):
                    walk(child, (*path, "k"))
        elif kind == "array":
            for i, child in enumerate(node.get("prefixItems", [])):
                walk(child, (*path, i))
            if isinstance(node.get("items"), dict):
                walk(node["items"], (*path, 0))

    walk(schema, ())
    return found


def _raw_with(path: tuple[Any, ...], value: Any) -> dict:
    """A raw config (the small MLP) with ``value`` placed at ``path``."""
    raw = yaml.safe_load(small_mlp_yaml())
    node: Any = raw
    for step, following in zip(path, (*path[1:], None), strict=True):
        if isinstance(step, tuple):  # a tagged section: its name picks the kind
            node["name"] = step[1]
            continue
        fresh = [] if isinstance(following, int) else {}
        if isinstance(node, list):
            while len(node) <= step:
                node.append(None)
            if following is None:
                node[step] = value
            else:
                node[step] = node[step] if isinstance(node[step], type(fresh)) else fresh
                node = node[step]
        elif following is None:
            node[step] = value
        else:
            if not isinstance(node.get(step), type(fresh)):
                node[step] = fresh
            node = node[step]
    return raw


def _errors_at(path: tuple[Any, ...], value: Any) -> list[dict]:
    """pydantic's errors for ``value`` placed at ``path`` that are about that very value."""
    try:
        ADAPTER.validate_json(json.dumps(_raw_with(path, value)), strict=True)
    except pydantic.ValidationError as err:
        errors = err.errors(include_url=False)
    else:
        return []
    keys = [p for p in path if not isinstance(p, tuple)]

    def about(error) -> bool:
        it = iter(error["loc"])  # the path's keys in order, union labels in between
        here = all(any(part == key for part in it) for key in keys)
        got = error.get("input")
        same = got == value or (isinstance(got, float) and math.isnan(got) and math.isnan(value))
        return here and same

    return [e for e in errors if about(e)]


NUMERIC = _numeric_fields()


def test_the_schema_walk_sees_every_section() -> None:
    names = {
        ".".join(str(p[1] if isinstance(p, tuple) else p) for p in path) for path, _ in NUMERIC
    }
    for expected in (
        "optimizer.adamw.learning_rate",
        "optimizer.sgd.momentum",
        "model.transformer_lm.d_model",
        "sweep.axes.k.low",
        "federated.dp.delta",
        "federated.server_optimizer.yogi.b2",
        "transfer.lora.alpha",
        "data.prepare.ranges.k.0",
        "data.prepare.label_errors.learning_rate",
        "distributed.initialization_timeout",
        "train.reduce_on_plateau.factor",
        "seed",
        "data.seed",
        "sweep.seed",
        "federated.seed",
    ):
        assert expected in names, expected
    assert len(NUMERIC) > 100


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_every_float_field_refuses_inf_and_nan(bad: float) -> None:
    floats = [path for path, kinds in NUMERIC if "number" in kinds]
    accepted = [path for path in floats if not _errors_at(path, bad)]
    assert not accepted, f"{bad} accepted at {accepted}"


def test_every_integer_field_has_an_upper_bound() -> None:
    # A distribution's ends are also floats; what bounds them is the key they sweep (each end
    # is validated there, see test_bounded_integers_are_refused_naming_the_key).
    ints = [path for path, kinds in NUMERIC if "integer" in kinds and path[:2] != ("sweep", "axes")]
    unbounded = [path for path in ints if not _errors_at(path, 2**64)]
    assert not unbounded, f"2**64 accepted at {unbounded}"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        (
            "optimizer.learning_rate=.inf",
            f"optimizer.learning_rate{CLI}: Input should be a finite number (got inf)",
        ),
        (
            "optimizer.b1=.nan",
            f"optimizer.b1{CLI}: Input should be a finite number (got nan)",
        ),
        ("optimizer.schedule.final_fraction=.nan", "optimizer.schedule.final_fraction"),
        ("data.validation_fraction=.nan", "data.validation_fraction"),
        ("train.label_smoothing=-.inf", "train.label_smoothing"),
        (
            "federated={dp: {noise_multiplier: .inf}}",
            f"federated.dp.noise_multiplier{CLI}: Input should be a finite number",
        ),
        ("transfer={init_from: r, layer_decay: .nan}", "transfer.layer_decay"),
        ("data.prepare={ranges: {age: [0, .inf]}}", "data.prepare.ranges.age[1]"),
        (
            "sweep={samples: 2, axes: {optimizer.learning_rate: "
            "{distribution: log_uniform, low: 1e-4, high: .inf}}}",
            f"sweep.axes.optimizer.learning_rate.high{CLI}: Input should be a finite number",
        ),
        (
            "sweep={axes: {optimizer.weight_decay: [0, .nan]}}",
            "sweep.axes.optimizer.weight_decay[1]",
        ),
    ],
)
def test_inf_and_nan_are_refused_naming_the_key(config_file, override: str, needle: str) -> None:
    assert needle in _error(config_file(), [override])


def test_seed_bound_is_what_grain_and_jax_accept(config_file) -> None:
    import grain.python as grain
    import jax

    top = 2**32 - 1
    assert load_config(config_file(), [f"seed={top}", f"data.seed={top}"]).data.seed == top
    list(grain.MapDataset.range(4).shuffle(seed=top))  # grain takes the largest seed...
    with pytest.raises(ValueError):
        list(grain.MapDataset.range(4).shuffle(seed=top + 1))  # ...and refuses the next,
    fold = jax.random.key_data(jax.random.key(top + 1 + 5)).tolist()
    assert fold == jax.random.key_data(jax.random.key(5)).tolist()  # JAX folds it silently
    for key in ("seed", "data.seed", "sweep.seed", "federated.seed"):
        extra = ["sweep={axes: {seed: [1]}}"] if key == "sweep.seed" else []
        message = _error(config_file(), [*extra, f"{key}={top + 1}"])
        assert f"{key} (set on the command line): Input should be at most {top}" in message


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        (
            "seed=18446744073709551616",
            f"seed{CLI}: Input should be at most 4294967295",
        ),
        (
            "data.seed=-1",
            f"data.seed{CLI}: Input should be greater than or equal to 0 (got -1)",
        ),
        (
            "train.epochs=10**20",
            f"train.epochs{CLI}: Input should be a valid integer",
        ),
        (
            "train.epochs=1e20",
            f"train.epochs{CLI}: Input should be at most 1000000 (a sanity cap",
        ),
        (
            "data.batch_size=1e7",
            f"data.batch_size{CLI}: Input should be at most 1048576",
        ),
        (
            "data.sequence_length=1e9",
            f"data.sequence_length{CLI}: Input should be at most",
        ),
        (
            "model.hidden=[1e6]",
            f"model.hidden[0]{CLI}: Input should be at most 65536",
        ),
        (
            "model={name: random_forest, n_estimators: 1e9}",
            f"model.n_estimators{CLI}",
        ),
        (
            "federated={num_clients: 1e8}",
            f"federated.num_clients{CLI}: Input should be at most 1000000",
        ),
        ("federated={rounds: 1e7}", "federated.rounds"),
        (
            "optimizer.schedule.warmup_steps=3e9",
            f"optimizer.schedule.warmup_steps{CLI}: Input should be at most 2147483647 (JAX counts",
        ),
        (
            "sweep={samples: 1e6, axes: {seed: {distribution: int_uniform, low: 0, high: 9}}}",
            "sweep.samples",
        ),
        (
            "sweep={axes: {seed: [0, 1e10]}}",
            f"sweep.axes.seed[1]{CLI}: the swept value 10000000000 does not fit: seed: Input "
            "should be at most 4294967295",
        ),
        (
            "distributed={num_processes: 2, process_id: 2}",
            f"distributed.process_id{CLI}: 2 is not below",
        ),
    ],
)
def test_bounded_integers_are_refused_naming_the_key(
    config_file, override: str, needle: str
) -> None:
    assert needle in _error(config_file(), [override])


# 7. Messages name the dotted key, the file and what was expected ---------------------------


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (
            ["model={name: cnn, features: [8, 0]}"],
            f"model.features[1]{CLI}: Input should be greater than 0",
        ),
        (
            ["model={name: mlp, hiden: [3]}"],
            f"model.hiden{CLI}: unknown key (did you mean 'hidden'?)",
        ),
        (
            ["optimizer.schedule.warmup=3"],
            f"optimizer.schedule.warmup{CLI}: unknown key (did you mean 'warmup_steps'?)",
        ),
        (
            ["optimizer={name: sgd, momentum: 1.5}"],
            f"optimizer.momentum{CLI}: Input should be less than 1 (got 1.5)",
        ),
        (
            ["federated={server_optimizer: {name: adam, b1: 2}}"],
            f"federated.server_optimizer.b1{CLI}",
        ),
        (
            ["train.micro_batches=3"],
            f"train.micro_batches{CLI}: 3 does not divide data.batch_size=32",
        ),
        (
            ["data.classes=[1.5]"],
            f"data.classes[0]{CLI}: Input should be a valid integer or a valid string (got 1.5)",
        ),
        (
            ["sweep={samples: 2, axes: {seed: {distribution: int_uniform}}}"],
            f"sweep.axes.seed.low{CLI}: required key is missing",
        ),
        (
            ["model.name=resnet9000"],
            "model.name (set on the command line): 'resnet9000' is not a model (did you mean",
        ),
        (["trian.epochs=3"], "trian: unknown key (did you mean 'train'?)"),
    ],
)
def test_nested_and_union_errors_name_the_dotted_key(config_file, overrides, needle) -> None:
    assert needle in _error(config_file(), overrides)


def test_a_file_error_does_not_claim_the_command_line(config_file) -> None:
    body = small_mlp_yaml().replace("batch_size: 32", "batch_size: 0")
    message = _error(config_file(body), ["train.epochs=3"])
    assert message.endswith("data.batch_size: Input should be greater than 0 (got 0)")


def test_override_syntax_errors_name_the_file(config_file) -> None:
    path = config_file()
    assert _error(path, ["epochs"]).startswith(f"{path}: override 'epochs': expected key.sub=value")
    assert "name is a value, not a section" in _error(path, ["name.x=1"])
    assert "the key is not printable text" in _error(path, ["a\nb=1"])


# 8. Overrides after options, for every verb ---------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "c.yaml", "--runs-dir", "d", "--no-progress", "train.epochs=3", "seed=1"],
        ["train", "--no-progress", "c.yaml", "train.epochs=3", "--runs-dir", "d", "seed=1"],
        ["sweep", "c.yaml", "--no-progress", "train.epochs=3", "--runs-dir", "d", "seed=1"],
        ["federated", "c.yaml", "--runs-dir", "d", "train.epochs=3", "--no-progress", "seed=1"],
        [
            "learning-curve",
            "c.yaml",
            "--fractions",
            "0.5",
            "1",
            "--no-progress",
            "train.epochs=3",
            "seed=1",
        ],
    ],
)
def test_overrides_after_options_are_parsed_for_every_verb(argv: list[str]) -> None:
    args = _parse_args(argv)
    assert (args.verb, args.config, args.overrides) == (
        argv[0],
        "c.yaml",
        ["train.epochs=3", "seed=1"],
    )
    assert args.no_progress


def test_train_with_an_override_after_options_reaches_validation(
    config_file, tmp_path, capsys
) -> None:
    runs = tmp_path / "runs"
    code = main(
        ["train", str(config_file()), "--runs-dir", str(runs), "--no-progress", "train.epochs=0"]
    )
    err = capsys.readouterr().err
    assert code == 2 and not runs.exists()
    assert "train.epochs (set on the command line): Input should be greater than 0" in err


def test_resume_keeps_its_first_word_as_an_override() -> None:
    args = _parse_args(["train", "--resume", "RUN", "--no-progress", "train.epochs=40"])
    assert (args.resume, args.config, args.overrides) == ("RUN", "train.epochs=40", [])


def test_runs_dir_that_is_a_file_is_refused_before_any_work(config_file, tmp_path, capsys):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("keep me")
    for runs in (blocker, blocker / "runs"):
        code = main(["train", str(config_file()), "--runs-dir", str(runs), "--no-progress"])
        err = capsys.readouterr().err
        assert (
            code == 2
            and err == f"jaxtrain: error: --runs-dir {runs}: {blocker} is not a directory\n"
        )
    assert blocker.read_text() == "keep me"


def test_user_text_in_any_error_stays_on_one_line(config_file, tmp_path, capsys) -> None:
    body = small_mlp_yaml().replace(
        "data: {name: digits, batch_size: 32}",
        'data: {name: digits, batch_size: 32, path: "no\\nsuch\\e[31m.csv", label_column: y}',
    )
    runs = tmp_path / "runs"
    code = main(["train", str(config_file(body)), "--runs-dir", str(runs), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and not runs.exists()
    assert err.count("\n") == 1 and "no\\nsuch\\x1b[31m.csv" in err, err


# 9. A config error is reported before the heavy stack is imported --------------------------

HEAVY = ("jax", "jaxlib", "tensorflow_datasets", "grain", "orbax", "matplotlib", "flax", "optax")


def test_a_config_error_imports_nothing_heavy_and_is_quick() -> None:
    code = (
        "import sys, json; from jaxtrain.cli import main; "
        "rc = main(['train', 'configs/digits_cnn.yaml', 'optimizer.learning_rate=-1']); "
        f"print(json.dumps([rc, [m for m in {HEAVY!r} if m in sys.modules]]))"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert json.loads(out.stdout) == [2, []], out.stderr
    assert out.stderr.startswith(
        "jaxtrain: error: configs/digits_cnn.yaml: optimizer.learning_rate"
    )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 1.0, f"{cpu:.2f} s of CPU for a config error (importing JAX takes ~2 s)"


def test_importing_the_package_and_its_config_is_light() -> None:
    code = (
        "import sys, json; import jaxtrain, jaxtrain.config, jaxtrain.cli; "
        f"print(json.dumps([m for m in {HEAVY!r} + ('numpy',) if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout) == [], out.stderr


# 10. Fuzz: whatever the bytes, structure and overrides, the CLI ends in one line and exit 2,
# or hands a valid config to the runner; it never writes anything for a bad config. -------


class _Reached(Exception):
    """Raised by the stubbed runner: the CLI accepted the config and would start work."""


VERBS = {
    "train": "train",
    "sweep": "sweep_run",
    "federated": "federated_run",
    "learning-curve": "learning_curve_run",
}


def _stub(*args, **kwargs):
    raise _Reached


def _run_cli(verb: str, path: Path, overrides: list[str], runs: Path) -> None:
    """The fuzz rule. Valid configs are stopped where the CLI hands them to the runner (the
    runner's own data checks are tested elsewhere): training them is not what is tested."""
    import jaxtrain.runner

    stderr, stdout = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jaxtrain.runner, VERBS[verb], _stub)
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
                code = main([verb, str(path), "--runs-dir", str(runs), "--no-progress", *overrides])
        except _Reached:
            load_config(path, overrides)  # reached only with a config that loads
            assert not runs.exists()
            return
    err = stderr.getvalue()
    assert code == 2, (code, err)
    assert err.count("\n") == 1 and err.startswith("jaxtrain: error: "), err
    assert "Traceback" not in err and not stdout.getvalue()
    assert not runs.exists()


FUZZ = settings(
    max_examples=int(os.environ.get("JAXTRAIN_FUZZ_EXAMPLES", "40")),  # more: hunt for bugs
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SHIPPED = [p.read_bytes() for p in sorted(CONFIGS.glob("*.yaml"))] + [small_mlp_yaml().encode()]


@st.composite
def mutated_bytes(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SHIPPED)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "duplicate_line", "truncate"]))
        if kind == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(
                st.sampled_from([b"\xff", b"\xc3", b"\t", b"&a ", b"*a", b"<<: ", b"{", b"]",
                                 b": ", b"- ", b"!!python/name:os.system ", b"\x00", b"\n  "])
                | st.binary(max_size=6)
            )  # fmt: skip
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 20))]
        elif kind == "duplicate_line":
            start = data.rfind(b"\n", 0, at) + 1
            end = data.find(b"\n", at)
            end = len(data) if end < 0 else end + 1
            data[end:end] = data[start:end]
        else:
            del data[at:]
    return bytes(data)


@FUZZ
@given(verb=st.sampled_from(sorted(VERBS)), data=st.binary(max_size=300) | mutated_bytes())
def test_fuzz_config_bytes(tmp_path_factory, verb: str, data: bytes) -> None:
    tmp = tmp_path_factory.mktemp("bytes")
    path = tmp / "fuzz.yaml"
    path.write_bytes(data)
    _run_cli(verb, path, [], tmp / "runs")


SECTION_KEYS = {
    "": ["name", "seed", "data", "model", "optimizer", "train", "sweep", "federated",
         "fairness", "distributed", "transfer"],
    "data": ["name", "seed", "batch_size", "validation_fraction", "test_fraction", "classes",
             "sequence_length", "prepare", "path", "normalize"],
    "model": ["name", "hidden", "features", "dropout", "d_model", "num_heads", "max_features"],
    "optimizer": ["name", "learning_rate", "b1", "momentum", "schedule", "grad_clip_norm"],
    "train": ["epochs", "eval_every", "micro_batches", "early_stopping", "augment", "checkpoint"],
    "sweep": ["axes", "samples", "seed", "halving", "pbt"],
    "federated": ["num_clients", "clients_per_round", "dp", "server_optimizer", "seed", "rounds"],
    "transfer": ["init_from", "train", "head", "lora", "layer_decay", "step"],
}  # fmt: skip
NAMES = ["mlp", "cnn", "resnet", "linear", "transformer_lm", "vit", "decision_tree",
         "random_forest", "adam", "adamw", "sgd", "digits", "cosine", "uniform"]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63, 2**64])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(NAMES)
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(sum(SECTION_KEYS.values(), [])) | st.text(max_size=6), inner, max_size=4
        )
    ),  # fmt: skip
    max_leaves=12,
)


@st.composite
def structures(draw) -> str:
    """A valid config with random values under known sections, as YAML text."""
    raw = yaml.safe_load(small_mlp_yaml())
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(sorted(SECTION_KEYS)))
        key = draw(st.sampled_from(SECTION_KEYS[section]) | st.text(min_size=1, max_size=6))
        node = raw
        if section:
            if not isinstance(raw.get(section), dict):
                raw[section] = {}
            node = raw[section]
        node[key] = draw(values)
    return yaml.safe_dump(raw, default_flow_style=draw(st.booleans()), allow_unicode=True)


@FUZZ
@given(verb=st.sampled_from(sorted(VERBS)), text=structures())
def test_fuzz_yaml_structure(tmp_path_factory, verb: str, text: str) -> None:
    tmp = tmp_path_factory.mktemp("structure")
    path = tmp / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    _run_cli(verb, path, [], tmp / "runs")


DOTTED = [f"{s}.{k}" if s else k for s, keys in SECTION_KEYS.items() for k in keys] + [
    "optimizer.schedule.warmup_steps", "model.hidden", "data.prepare.ranges", "sweep.axes.seed",
    "federated.dp.delta", "train.early_stopping.patience", "transfer.lora.rank",
]  # fmt: skip
NUMBER_TEXT = ["1e-3", "3E-4", "1e6", ".5", "-2.5e-3", ".inf", "-.inf", ".nan", "1e400",
               "0x1f", "0o17", "1_000", "2**64", "18446744073709551616", "1e99", "9" * 120,
               "-0", "+.5e+3", "1:30", "'0.01'", "~", "yes", "off"]  # fmt: skip
override_values = (
    st.sampled_from(NUMBER_TEXT)
    | st.sampled_from(NAMES)
    | values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).replace("\n...", "").strip())
    | st.text(max_size=20)
)
not_an_option = st.text(max_size=10).filter(lambda t: not t.startswith("-"))
key = st.sampled_from(DOTTED) | st.from_regex(r"[a-z_][a-z_.]{0,15}", fullmatch=True)
key_value = st.tuples(key, override_values).map(lambda kv: f"{kv[0]}={kv[1]}")
junk = not_an_option | st.tuples(not_an_option, override_values).map("=".join)
# key=value with a key of the right form, so that validation gets deep; in one case of five,
# one more item of any text at the end.
overrides = st.tuples(
    st.lists(key_value, min_size=1, max_size=3), st.sampled_from([0, 0, 0, 0, 1]), junk
).map(lambda t: t[0] + [t[2]] * t[1])


@FUZZ
@given(verb=st.sampled_from(sorted(VERBS)), items=overrides)
def test_fuzz_overrides(tmp_path_factory, verb: str, items: list[str]) -> None:
    tmp = tmp_path_factory.mktemp("overrides")
    path = tmp / "small.yaml"
    path.write_text(small_mlp_yaml())
    _run_cli(verb, path, items, tmp / "runs")
