"""The typed registry: a user's model family with its own config class in Python, strict
like the built-ins; and inputs of any shape (sequences through the 1-D CNN)."""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pydantic.dataclasses import dataclass

import jaxtrain
from jaxtrain import registry
from jaxtrain.config import Config, ConfigError, DataConfig, config_to_dict, validate
from jaxtrain.models import CNN, build_model, check_model_fits_data
from jaxtrain.runner import train


@dataclass(frozen=True)
class TinyConfig:
    width: int = 4
    scale: float = 1.0


class Tiny(nn.Module):
    width: int
    outputs: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.outputs)(nn.tanh(nn.Dense(self.width)(x.reshape((len(x), -1)))))


def _build_tiny(config: TinyConfig, num_outputs: int, input_shape):
    return Tiny(config.width, num_outputs)


@pytest.fixture
def tiny():
    jaxtrain.register_model("tiny", _build_tiny, TinyConfig, tasks=("classification",),
                            input_ranks=(1,), replace=True)  # fmt: skip
    yield
    registry.unregister("model", "tiny")


def test_a_registered_family_validates_strictly_and_round_trips(tiny) -> None:
    raw = {"name": "x", "data": {"name": "iris"}, "model": {"name": "tiny", "width": 6}}
    config = validate(raw, "c.yaml")
    assert isinstance(config.model, TinyConfig) and config.model.width == 6
    assert config_to_dict(config)["model"] == {"width": 6, "scale": 1.0, "name": "tiny"}
    assert validate(config_to_dict(config), "again") == config
    with pytest.raises(ConfigError, match=r"model.scale: Input should be a valid number"):
        validate({**raw, "model": {"name": "tiny", "scale": "big"}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"model.widht: unknown key \(did you mean 'width'"):
        validate({**raw, "model": {"name": "tiny", "widht": 6}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"model.scale: Input should be a finite number"):
        validate({**raw, "model": {"name": "tiny", "scale": float("inf")}}, "c.yaml")


def test_a_config_built_in_python_takes_the_users_config_class(tiny) -> None:
    config = Config(name="x", data=DataConfig(name="iris"), model=TinyConfig(width=3))
    assert config.model.name == "tiny" and config.model.width == 3


def test_the_family_builds_and_its_tasks_and_ranks_are_checked(tiny) -> None:
    config = validate({"name": "x", "data": {"name": "iris"}, "model": {"name": "tiny"}}, "c")
    model = build_model(config.model, 3, (4,))
    assert isinstance(model, Tiny) and model.width == 4

    class Data:
        task, input_shape = "regression", (4,)

    with pytest.raises(ValueError, match="model.name: tiny does not do regression"):
        check_model_fits_data(config.model, Data)
    Data.task, Data.input_shape = "classification", (2, 2)
    with pytest.raises(ValueError, match=r"needs examples of rank 1 \(length\)"):
        check_model_fits_data(config.model, Data)


def test_registration_mistakes_are_clear() -> None:
    with pytest.raises(registry.RegistryError, match="'mlp' is a built-in model"):
        jaxtrain.register_model("mlp", _build_tiny, TinyConfig)
    with pytest.raises(registry.RegistryError, match="config_class must be a .*dataclass"):
        jaxtrain.register_model("tiny_bad", _build_tiny, dict)
    with pytest.raises(registry.RegistryError, match="not a valid name"):
        jaxtrain.register_model("my:model", _build_tiny, TinyConfig)
    jaxtrain.register_model("tiny_twice", _build_tiny, TinyConfig)
    try:
        jaxtrain.register_model("tiny_twice", _build_tiny, TinyConfig)  # the same: fine
        with pytest.raises(registry.RegistryError, match="pass replace=True"):
            jaxtrain.register_model("tiny_twice", lambda *a: None, TinyConfig)
    finally:
        registry.unregister("model", "tiny_twice")
    with pytest.raises(registry.RegistryError, match="no learning_rate key"):
        jaxtrain.register_optimizer("no_rate", lambda momentum=0.9: None)


def test_a_builder_that_does_not_make_a_flax_module_is_named(tiny) -> None:
    jaxtrain.register_model("not_flax", lambda c, n, s: "a string", TinyConfig)
    try:
        config = validate({"name": "x", "data": {"name": "iris"}, "model": {"name": "not_flax"}},
                          "c")  # fmt: skip
        with pytest.raises(TypeError, match="expected a Flax module .* got str"):
            build_model(config.model, 3, (4,))
    finally:
        registry.unregister("model", "not_flax")


# --- inputs of any shape: sequences through the CNN ------------------------------------------


def test_the_cnn_convolves_sequences_in_one_dimension() -> None:
    model = CNN(features=(4, 8), num_classes=2, kernel_size=3, dense=16)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32)), jnp.float32)
    variables = model.init(jax.random.key(0), x, train=False)
    kernels = [variables["params"][f"Conv_{i}"]["kernel"].shape for i in range(2)]
    assert kernels == [(3, 1, 4), (3, 4, 8)]  # width x in x out: 1-D kernels
    # 32 -> conv 4 -> pool 16 -> conv 8 -> pool 8 -> flatten 64 -> dense 16 -> 2
    closed_form = (3 * 1 * 4 + 4) + (3 * 4 * 8 + 8) + (8 * 8 * 16 + 16) + (16 * 2 + 2)
    assert sum(v.size for v in jax.tree.leaves(variables)) == closed_form
    same = model.apply(variables, x[..., None], train=False)  # [b, L] is [b, L, 1]
    np.testing.assert_array_equal(model.apply(variables, x, train=False), same)


def _bumps(n: int, length: int = 24, seed: int = 0):
    """Class 1: an up-then-down step somewhere; class 0: down-then-up (position random)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    x = rng.normal(0, 0.2, (n, length))
    for i, label in enumerate(labels):
        at = rng.integers(0, length - 4)
        x[i, at : at + 2] += 2.0 if label else -2.0
        x[i, at + 2 : at + 4] += -2.0 if label else 2.0
    return x.astype(np.float32), labels


def test_a_cnn_learns_sequences_from_an_npz_file(tmp_path: Path) -> None:
    x, y = _bumps(600)
    np.savez(tmp_path / "bumps.npz", x=x, y=y)
    config = tmp_path / "seq.yaml"
    config.write_text(
        f"name: seq\ndata: {{path: {tmp_path / 'bumps.npz'}, batch_size: 32}}\n"
        "model: {name: cnn, features: [8], dense: 16}\n"
        "optimizer: {name: adamw, learning_rate: 0.01}\ntrain: {epochs: 4, log_every: 20}\n"
    )
    result = train(config, runs_dir=tmp_path / "runs", progress=False, report=False)
    assert result.test["accuracy"] > 0.9  # chance is 0.5


def test_a_sweep_member_switches_to_a_registered_model_keeping_only_its_keys(tiny) -> None:
    from jaxtrain.config.members import member_raw

    base = {"name": "m", "data": {"name": "digits"},
            "model": {"name": "mlp", "hidden": [16], "dropout": 0.1}}  # fmt: skip
    raw = member_raw(base, {"model.name": "tiny", "model.width": 8})
    # The MLP's keys the tiny family lacks are dropped, its own keys set or defaulted.
    assert raw["model"] == {"name": "tiny", "width": 8}
    model = validate(raw, "member").model
    assert (model.name, model.width, model.scale) == ("tiny", 8, 1.0)
    back = member_raw(raw, {"model.name": "mlp"})  # and back to a built-in: the MLP's defaults
    assert back["model"] == {"name": "mlp"}
    unknown = member_raw(base, {"model.name": "no_such_family"})  # left for validation to name
    assert unknown["model"]["name"] == "no_such_family" and unknown["model"]["hidden"] == [16]


def test_registered_data_is_held_in_memory_and_refuses_streaming() -> None:
    from jaxtrain.data import DatasetError, prepare_data

    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    jaxtrain.register_dataset("mem_blobs", lambda: (x, (x[:, 0] > 0).astype(np.int32)))
    try:
        # auto: registered data never streams (its loader already holds it in memory)
        data = prepare_data(DataConfig(name="mem_blobs", stream_above_mb=0), streamable=True)
        assert (
            len(data.splits["train"]) + len(data.splits["validation"]) + len(data.splits["test"])
            == 60
        )
        with pytest.raises(DatasetError, match="data.stream: true.*'mem_blobs' is registered"):
            prepare_data(DataConfig(name="mem_blobs", stream=True), streamable=True)
    finally:
        registry.unregister("dataset", "mem_blobs")
