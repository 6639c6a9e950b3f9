"""Configs that compose: ``base:`` files, chains, cycles; ``jaxtrain --version``."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
import yaml

from jaxtrain.cli import main
from jaxtrain.config import ConfigError, config_to_dict, dump_config, load_config
from tests.support import CONFIGS

BASE = """
name: base_run
seed: 3
data: {name: digits, batch_size: 32, seed: 1}
model: {name: cnn, features: [8, 16], dense: 32, dropout: 0.1}
optimizer: {name: adamw, learning_rate: 0.003, schedule: {name: cosine, warmup_steps: 5}}
train: {epochs: 4, log_every: 5}
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_variant_states_only_its_differences(tmp_path: Path) -> None:
    _write(tmp_path / "shared" / "base.yaml", BASE)
    variant = _write(
        tmp_path / "variants" / "wider.yaml",
        "name: wider\nbase: ../shared/base.yaml\nmodel: {features: [16, 32]}\ntrain: {epochs: 6}\n",
    )
    # The same config written out whole, by hand: the reference.
    whole = yaml.safe_load(BASE)
    whole["name"] = "wider"
    whole["model"]["features"] = [16, 32]
    whole["train"]["epochs"] = 6
    expected = _write(tmp_path / "whole.yaml", yaml.safe_dump(whole))
    assert load_config(variant) == load_config(expected)
    # Overrides apply on top of the composed whole.
    assert load_config(variant, ["train.epochs=9"]).train.epochs == 9


def test_bases_chain_and_a_list_merges_in_order(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", BASE)
    _write(tmp_path / "b.yaml", "base: a.yaml\ntrain: {epochs: 7}\ndata: {batch_size: 16}\n")
    _write(tmp_path / "lr.yaml", "optimizer: {learning_rate: 0.01}\n")
    c = _write(tmp_path / "c.yaml", "name: c\nbase: [b.yaml, lr.yaml]\ndata: {seed: 5}\n")
    config = load_config(c)
    assert (config.name, config.train.epochs, config.train.log_every) == ("c", 7, 5)
    assert (config.data.batch_size, config.data.seed, config.data.name) == (16, 5, "digits")
    assert config.optimizer.learning_rate == 0.01
    assert config.optimizer.schedule.warmup_steps == 5  # the rest of the section is kept


def test_choosing_another_model_replaces_the_section(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", BASE)
    child = _write(tmp_path / "mlp.yaml", "base: base.yaml\nmodel: {name: mlp, hidden: [32]}\n")
    config = load_config(child)
    assert config.model.name == "mlp" and config.model.hidden == (32,)
    assert config.model.dropout == 0.0  # the cnn's dropout is not carried into the mlp
    same = _write(tmp_path / "same.yaml", "base: base.yaml\nmodel: {name: cnn, dense: 64}\n")
    assert load_config(same).model.features == (8, 16)  # same name: merged key by key


def test_a_cycle_is_refused_naming_the_chain(tmp_path: Path, capsys) -> None:
    _write(tmp_path / "a.yaml", "base: b.yaml\nname: a\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\ndata: {name: digits}\n")
    with pytest.raises(ConfigError, match=r"a\.yaml -> .*b\.yaml -> .*a\.yaml is a cycle"):
        load_config(tmp_path / "a.yaml")
    _write(tmp_path / "self.yaml", "base: self.yaml\nname: s\n")
    assert main(["train", str(tmp_path / "self.yaml"), "--runs-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a cycle" in err
    assert not (tmp_path / "r").exists()


def test_a_missing_or_malformed_base_names_the_file(tmp_path: Path) -> None:
    child = _write(tmp_path / "child.yaml", "name: c\nbase: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: base: 'nowhere\.yaml' not found"):
        load_config(child)
    bad = _write(tmp_path / "bad.yaml", "name: c\nbase: {a: 1}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: base: expected a config file name"):
        load_config(bad)
    _write(tmp_path / "broken.yaml", "data: {name: digits\n")
    child = _write(tmp_path / "uses_broken.yaml", "name: c\nbase: broken.yaml\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(child)
    _write(tmp_path / "typo.yaml", BASE.replace("epochs: 4", "epocs: 4"))
    child = _write(tmp_path / "uses_typo.yaml", "name: c\nbase: typo.yaml\n")
    with pytest.raises(ConfigError, match=r"uses_typo\.yaml \(with base .*typo\.yaml\).*epocs"):
        load_config(child)
    with pytest.raises(ConfigError, match="name the base in the file"):
        load_config(child, ["base=x.yaml"])


def test_the_run_config_is_the_resolved_whole(tmp_path: Path) -> None:
    composed = load_config(CONFIGS / "digits_lr_sweep.yaml")
    dump_config(composed, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "base" not in yaml.safe_load(text)
    assert load_config(tmp_path / "config.yaml") == composed
    # The sweep config states only the sweep; the rest is digits_cnn's.
    resolved = config_to_dict(composed)
    cnn = config_to_dict(load_config(CONFIGS / "digits_cnn.yaml"))
    differing = {k for k in resolved if resolved[k] != cnn[k]}
    assert differing == {"name", "sweep"}


def test_version_flag_prints_the_installed_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"jaxtrain {metadata.version('jaxtrain')}"


def test_an_override_into_a_default_section_keeps_its_default_choice(tmp_path: Path) -> None:
    path = _write(tmp_path / "bare.yaml", "name: bare\ndata: {name: digits}\n")
    config = load_config(path, ["optimizer.learning_rate=0.01", "model.dropout=0.2"])
    assert (config.optimizer.name, config.optimizer.learning_rate) == ("adamw", 0.01)
    assert (config.model.name, config.model.dropout) == ("mlp", 0.2)
    assert load_config(path, ["model.name=cnn"]).model.name == "cnn"
    # A sweep axis into the default optimizer is checked the same way.
    swept = _write(
        tmp_path / "swept.yaml",
        "name: s\ndata: {name: digits}\nsweep: {axes: {optimizer.learning_rate: [0.1, 0.01]}}\n",
    )
    assert load_config(swept).sweep.axes["optimizer.learning_rate"] == [0.1, 0.01]
