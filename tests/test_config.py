"""Config: typed loading, overrides, and one-line errors that write nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jaxtrain.cli import main
from jaxtrain.config import (
    CNNConfig,
    ConfigError,
    SGDConfig,
    config_to_dict,
    dump_config,
    load_config,
)
from tests.support import CONFIGS, small_mlp_yaml


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates_and_round_trips(path: Path, tmp_path: Path) -> None:
    config = load_config(path)
    dump_config(config, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == config


def test_overrides_set_nested_keys_with_yaml_types(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(small_mlp_yaml())
    config = load_config(
        path,
        [
            "optimizer.learning_rate=0.05",
            "model={name: cnn, features: [4, 8]}",
            "optimizer.name=sgd",
            "optimizer.schedule.warmup_steps=0",
            "train.epochs=3",
        ],
    )
    assert config.optimizer == SGDConfig(learning_rate=0.05, schedule=config.optimizer.schedule)
    assert config.optimizer.schedule.name == "cosine"
    assert config.model == CNNConfig(features=(4, 8))
    assert config.train.epochs == 3
    assert config_to_dict(config)["model"]["features"] == [4, 8]


def test_config_is_frozen(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(small_mlp_yaml())
    config = load_config(path)
    with pytest.raises(Exception, match="frozen|assign"):
        config.seed = 3  # type: ignore[misc]


BAD_OVERRIDES = [
    (["optimizer.learning_rate=-0.1"], "optimizer.learning_rate", "greater than 0"),
    (["data.batch_size=0"], "data.batch_size", "greater than 0"),
    (["data.batch_size=abc"], "data.batch_size", "valid integer"),
    (["data.batch_size=true"], "data.batch_size", "valid integer"),
    (["train.epochs=2.5"], "train.epochs", "valid integer"),
    (["model.hiden=[3]"], "model.hiden", "unknown key"),
    (["trian.epochs=3"], "trian", "unknown key"),
    (["model.name=resnet9000"], "model.name", "is not a model"),
    (["data.name=null"], "data.name", "valid string"),
    (["data.normalize=zscore"], "data.normalize", "'none', 'standard' or 'minmax'"),
    (["name=../escape"], "name", "pattern"),
    (["data.test_fraction=0.5", "data.validation_fraction=0.5"], "data", "below 0.9"),
]


@pytest.mark.parametrize(("overrides", "key", "message"), BAD_OVERRIDES)
def test_bad_values_are_one_line_errors_naming_file_and_key(
    tmp_path: Path, overrides: list[str], key: str, message: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(small_mlp_yaml())
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: {key}")
    assert message in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: x\n", "data: required key is missing"),
        ("name: x\ndata: {name: digits}\nmodel: [1, 2]\n", "model: "),
        ("name: x\ndata: {name: digits\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("name: x\ndata: {name: digits}\noptimizer: {name: adamw, lr: 0.1}\n", "optimizer.lr"),
    ],
)
def test_malformed_files_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_python_objects_in_yaml_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\ndata: {name: digits}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def _cli_error(capsys, tmp_path: Path, args: list[str]) -> str:
    runs = tmp_path / "runs"
    code = main(["train", *args, "--runs-dir", str(runs), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2
    assert not runs.exists(), "a failed config check must not create the run directory"
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxtrain: error: "), captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optimizer.learning_rate=-1", "optimizer.learning_rate"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.name=mnist", "not prepared"),  # a catalog dataset that is not on disk
        ("data.name=no_such_dataset", "unknown dataset"),
        ("data.batch_size=5000", "larger than the training split"),
        ("bogus_key=1", "bogus_key (set on the command line): unknown key"),
        ("data.name=breast_cancer model={name: vit}", "model.name: vit needs examples of rank 3"),
    ],
)
def test_cli_exits_2_with_one_line_and_writes_nothing(
    capsys, tmp_path: Path, override: str, needle: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(small_mlp_yaml())
    line = _cli_error(capsys, tmp_path, [str(path), *override.split(" ", 1)])
    assert needle in line
    assert str(path) in line, "the error names the config file"
    assert "Traceback" not in line


def test_cli_missing_config_file(capsys, tmp_path: Path) -> None:
    line = _cli_error(capsys, tmp_path, [str(tmp_path / "absent.yaml")])
    assert "config file not found" in line


def test_console_script_reports_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(small_mlp_yaml())
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxtrain",
            "train",
            str(path),
            "optimizer.learning_rate=-1",
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path}: optimizer.learning_rate (set on the command line)" in result.stderr
    assert not (tmp_path / "runs").exists()
    assert yaml.safe_load(path.read_text())["name"] == "small_mlp"
