"""Sharded parameters on a device mesh: FSDP and tensor parallel equal the single-device run.

The multi-device checks run in subprocesses with 8 forced CPU devices
(``tests/mesh_worker.py``: the loop's own pieces, placement and step; ``tests/parallel_worker.py``:
whole runs through ``train_and_evaluate``). The reference is always the plain single-device
``jax.jit`` run of the same config; the layout rules are checked against specs written out
by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from jaxtrain.config import ConfigError, load_config
from jaxtrain.config.verbs import check_verb
from jaxtrain.models.partitioning import logical_axes
from jaxtrain.models.transformer import TransformerLM
from jaxtrain.train.mesh import make_mesh, param_spec, state_specs
from jaxtrain.train.parallel import build_placement
from jaxtrain.train.state import TrainState
from tests.parallel_worker import LM_YAML
from tests.support import ROOT, forced_devices

PARAMS_ATOL = 1e-5  # float32 sums in another order, amplified a little by Adam
# Forced host devices exist on the CPU platform only (also where a GPU is the default).
EIGHT = {"XLA_FLAGS": forced_devices(8), "JAX_PLATFORMS": "cpu"}
MLP_IN = "['block_0']['mlp_in']['kernel']"
QKV = "['block_0']['attn']['qkv']['kernel']"


def _run(module: str, *args: str, timeout: float = 600) -> None:
    process = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**os.environ, **EIGHT},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert process.returncode == 0, (process.stdout + process.stderr)[-3000:]


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as loaded:
        return {k: loaded[k] for k in loaded.files}


def _max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)


# -- layout rules (one device, no subprocess) -------------------------------------------

MESH_4X2 = {"data": 4, "model": 2}


@pytest.mark.parametrize(
    ("shape", "names", "fsdp", "expected"),
    [
        # Megatron: the MLP's inner dimension and the heads on "model"; FSDP puts "embed"
        # on "data" (MaxText's rule), plain data parallel keeps it whole.
        ((32, 128), ("embed", "mlp"), True, P("data", "model")),
        ((32, 128), ("embed", "mlp"), False, P(None, "model")),
        ((128, 32), ("mlp", "embed"), True, P("model", "data")),
        ((32, 3, 4, 8), ("embed", None, "heads", "kv"), False, P(None, None, "model")),
        ((256, 32), ("vocab", "embed"), True, P("model", "data")),
        # Uneven: 3 heads do not split over 2 devices, so that dimension stays whole and
        # FSDP takes the largest dimension that does divide by 4.
        ((32, 3, 3, 8), ("embed", None, "heads", "kv"), False, P()),
        ((12, 3, 3, 8), (None, None, "heads", "kv"), True, P("data")),
        # Unannotated (an MLP's Dense): replicated, or under FSDP the largest even dimension.
        ((64, 32), None, False, P()),
        ((64, 32), None, True, P("data")),
        ((30, 64), None, True, P(None, "data")),
        ((10,), None, True, P()),  # nothing divides by 4: replicated
    ],
)
def test_parameter_layout_follows_the_logical_rules(shape, names, fsdp, expected) -> None:
    assert param_spec(shape, names, MESH_4X2, fsdp) == expected


def test_optimizer_moments_are_laid_out_like_their_parameters() -> None:
    params = {"dense": {"kernel": jnp.ones((64, 32)), "bias": jnp.ones((32,))}}
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.adamw)(1e-3))

    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), {}, jax.random.key(0))
    specs = state_specs(state, {}, {"data": 8, "model": 1}, True)
    adam = specs.opt_state[1].inner_state[0]
    expected = {"dense": {"kernel": P("data"), "bias": P("data")}}
    assert specs.params == expected
    assert adam.mu == expected and adam.nu == expected
    assert adam.count == P() and specs.opt_state[1].hyperparams["learning_rate"] == P()


def test_transformer_names_its_parameter_axes_and_keeps_plain_arrays() -> None:
    model = TransformerLM(vocab_size=64, d_model=32, num_heads=4, num_layers=1, max_len=16)
    axes = logical_axes(model, (16,), jnp.int32)
    assert axes[MLP_IN] == ("embed", "mlp")
    assert axes["['block_0']['mlp_out']['kernel']"] == ("mlp", "embed")
    assert axes[QKV] == ("embed", None, "heads", "kv")
    assert axes["['block_0']['attn']['out']['kernel']"] == ("heads", "kv", "embed")
    assert axes["['embed']['embedding']"] == ("vocab", "embed")
    tokens = jnp.zeros((1, 16), jnp.int32)
    params = jax.jit(lambda t: model.init(jax.random.key(0), t)["params"])(tokens)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    # Every parameter is named, and the state holds arrays, never Flax's boxes.
    assert {jax.tree_util.keystr(path) for path, _ in leaves} == set(axes)
    assert all(isinstance(leaf, jax.Array) for _, leaf in leaves)
    assert not any(
        isinstance(x, nn.LogicallyPartitioned)
        for x in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    )


def test_transfer_wrappers_are_looked_through_for_the_base_models_axes() -> None:
    from jaxtrain.transfer.lora import LoRAModel
    from jaxtrain.transfer.model import FrozenModel

    base = TransformerLM(vocab_size=64, d_model=32, num_heads=4, num_layers=1, max_len=16)
    lora = LoRAModel(base, ("*/attn/qkv/kernel",), 2, 4.0)
    expected = logical_axes(base, (16,), jnp.int32)
    assert logical_axes(lora, (16,), jnp.int32) == expected  # adapters: unannotated
    assert logical_axes(FrozenModel(lora, frozenset({"embed"})), (16,), jnp.int32) == expected


def test_annotations_leave_the_initial_parameters_bitwise_unchanged(monkeypatch) -> None:
    import jaxtrain.models.transformer as transformer

    def init(model):
        tokens = jnp.zeros((1, 16), jnp.int32)
        return jax.jit(lambda t: model.init(jax.random.key(3), t)["params"])(tokens)

    kwargs = {"vocab_size": 64, "d_model": 32, "num_heads": 4, "num_layers": 2, "max_len": 16}
    annotated = init(TransformerLM(**kwargs, norm="rmsnorm", tie_embeddings=False))
    monkeypatch.setattr(transformer, "logical", lambda init, *names: init)  # no annotations
    plain = init(TransformerLM(**kwargs, norm="rmsnorm", tie_embeddings=False))
    assert jax.tree.structure(annotated) == jax.tree.structure(plain)
    for a, b in zip(jax.tree.leaves(annotated), jax.tree.leaves(plain), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_mesh_that_does_not_match_the_devices_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"train.parallel.mesh: data=4 x model=2 = 8 devices"):
        make_mesh(4, 2)
    with pytest.raises(ConfigError, match=r"train.parallel.mesh.model=2 does not divide the 1"):
        make_mesh(None, 2)
    one = build_placement(load_config_text(LM_YAML, "train.parallel=fsdp").train.parallel)
    assert one.describe() == {
        "placement": "sharded",
        "devices": 1,
        "mesh": {"data": 1, "model": 1},
        "fsdp": True,
    }


def test_a_batch_must_split_over_the_data_axis_only() -> None:
    from jaxtrain.train.parallel import Placement

    Placement("sharded", 4).check_batch(20, "data.batch_size")  # 4 x 2 devices: 20 rows is fine
    with pytest.raises(
        ConfigError,
        match=r"data.batch_size=30 does not split evenly over the "
        r"mesh's data axis of 4 devices \(train.parallel\); use a multiple of 4",
    ):
        Placement("sharded", 4).check_batch(30, "data.batch_size")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.parallel={mesh: {data: 4, model: 2}}", "data=4 x model=2 = 8 devices, but 1 are"),
        ("train.parallel={mesh: {model: 3}}", "mesh.model=3 does not divide the 1 devices"),
    ],
)
def test_an_impossible_mesh_stops_the_command_before_a_run_exists(
    tmp_path: Path, capsys, override: str, message: str
) -> None:
    from jaxtrain.cli import main

    config = tmp_path / "lm.yaml"
    config.write_text(LM_YAML)
    code = main(["train", str(config), override, "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"{config}: train.parallel" in err and message in err
    assert not (tmp_path / "runs").exists()


def load_config_text(text: str, *overrides: str):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(text)
        return load_config(path, list(overrides))


@pytest.mark.parametrize(
    "value",
    ["sharded", "fsdp", "{mesh: {data: 4, model: 2}, fsdp: true}", "{mesh: {model: 2}}"],
)
def test_mesh_spellings_are_read_and_refused_where_a_verb_places_itself(value) -> None:
    config = load_config_text(LM_YAML, f"train.parallel={value}")
    check_verb(config, "train")
    check_verb(config, "learning-curve")
    for verb in ("sweep", "federated"):
        with pytest.raises(ConfigError, match=f"train.parallel: jaxtrain {verb} cannot honour"):
            check_verb(config, verb)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fsdpp", r"train.parallel.*Input should be 'none', 'pmap', 'sharded' or 'fsdp'"),
        ("{mesh: {data: 0}}", r"train.parallel.mesh.data.*greater than 0"),
        ("{mesh: {modle: 2}}", r"train.parallel.mesh.modle.*unknown key"),
    ],
)
def test_bad_parallel_settings_name_the_key(value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config_text(LM_YAML, f"train.parallel={value}")


def test_a_one_device_mesh_trains_like_plain_jit(tmp_path: Path) -> None:
    """A 1x1 mesh (what one GPU runs under train.parallel: fsdp) is the same step: same
    numbers as ``jax.jit`` on the default device, whatever the backend."""
    from tests.mesh_worker import train

    path = tmp_path / "lm.yaml"
    path.write_text(LM_YAML)
    _, pieces, _, plain = train(path, "none", 3)
    _, _, placement, meshed = train(path, "fsdp", 3, pieces.data)
    assert placement.describe()["mesh"] == {"data": 1, "model": 1}
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(meshed.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


# -- 8 forced CPU devices ------------------------------------------------------------


@pytest.fixture(scope="module")
def lm_mesh(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lm_mesh")
    _run("tests.mesh_worker", str(out), "12", "single", "4x2_fsdp")
    return out


@pytest.mark.slow
def test_fsdp_with_tensor_parallel_equals_the_single_device_run(lm_mesh) -> None:
    report = json.loads((lm_mesh / "mesh.json").read_text())
    assert report["devices"] == 8
    layout = report["layouts"]["4x2_fsdp"]
    assert layout["describe"]["mesh"] == {"data": 4, "model": 2}
    # The layout really is FSDP x tensor parallel ...
    assert layout["specs"] == {MLP_IN: "P('data', 'model')", QKV: "P('data', None, 'model')"}
    # ... and trains the same parameters and optimizer state as one device.
    difference = _max_difference(_arrays(lm_mesh / "4x2_fsdp.npz"), _arrays(lm_mesh / "single.npz"))
    assert difference < PARAMS_ATOL


@pytest.mark.slow
def test_fsdp_keeps_under_a_sixth_of_the_replicated_bytes_per_device(lm_mesh) -> None:
    layouts = json.loads((lm_mesh / "mesh.json").read_text())["layouts"]
    replicated = layouts["single"]["max_bytes_per_device"]  # a whole copy on each device
    expected = sum(a.nbytes for a in _arrays(lm_mesh / "single.npz").values())
    assert replicated == expected
    assert layouts["4x2_fsdp"]["max_bytes_per_device"] <= replicated / 6


@pytest.mark.parametrize("direction", ["fsdp_to_single", "single_to_fsdp"])
def test_a_checkpoint_restores_bitwise_into_another_layout(lm_mesh, direction) -> None:
    saved = _arrays(lm_mesh / f"roundtrip_{direction}_saved.npz")
    restored = _arrays(lm_mesh / f"roundtrip_{direction}_restored.npz")
    assert saved.keys() == restored.keys() and len(saved) > 10
    for key in saved:
        assert saved[key].dtype == restored[key].dtype
        np.testing.assert_array_equal(saved[key], restored[key], err_msg=key)
    layout = json.loads((lm_mesh / "mesh.json").read_text())[direction]
    if direction == "fsdp_to_single":
        assert layout["restored_devices"] == [1]
    else:  # sharded leaves span the 8 devices, laid out as a fresh FSDP state is
        assert 8 in layout["restored_devices"] and layout["restored_as_placed"]


# -- slow: 50 steps, every layout, through the train loop ------------------------------

LM = "@lm;@until=50"
FIFTY_STEP_SPECS = {
    "lm_single": LM,
    "lm_fsdp": f"{LM};train.parallel=fsdp",
    "lm_4x2": f"{LM};train.parallel={{mesh: {{data: 4, model: 2}}}}",
    "lm_4x2_fsdp": f"{LM};train.parallel={{mesh: {{data: 4, model: 2}}, fsdp: true}}",
    # Saved under one layout at step 25, resumed under another.
    "lm_fsdp_then_single": f"{LM};train.parallel=fsdp>25>train.parallel=none",
    "lm_single_then_fsdp": f"{LM}>25>train.parallel=fsdp",
}


@pytest.mark.slow
def test_fifty_steps_of_every_layout_equal_the_single_device_run(tmp_path: Path) -> None:
    _run("tests.parallel_worker", str(tmp_path), *[f"{k}={v}" for k, v in FIFTY_STEP_SPECS.items()])
    expected = _arrays(tmp_path / "lm_single.npz")
    for name in FIFTY_STEP_SPECS:
        summary = json.loads((tmp_path / f"{name}.json").read_text())
        assert (summary["step"], summary["devices"]) == (50, 8)
        assert _max_difference(_arrays(tmp_path / f"{name}.npz"), expected) < PARAMS_ATOL, name
    run_dir = Path(json.loads((tmp_path / "lm_4x2_fsdp.json").read_text())["run_dir"])
    assert (run_dir / "checkpoints" / "50").is_dir()


@pytest.mark.slow
def test_every_layout_in_one_process_fifty_steps(tmp_path: Path) -> None:
    _run("tests.mesh_worker", str(tmp_path), "50", *["single", "sharded", "pmap", "fsdp", "4x2"])
    layouts = json.loads((tmp_path / "mesh.json").read_text())["layouts"]
    single = _arrays(tmp_path / "single.npz")
    for name in ("sharded", "pmap", "fsdp", "4x2"):
        assert _max_difference(_arrays(tmp_path / f"{name}.npz"), single) < PARAMS_ATOL, name
    # pmap is a thin placement of the same step: it equals the mesh path.
    pmap, mesh = _arrays(tmp_path / "pmap.npz"), _arrays(tmp_path / "sharded.npz")
    assert _max_difference(pmap, mesh) < PARAMS_ATOL
    replicated = layouts["sharded"]["max_bytes_per_device"]
    assert replicated == layouts["single"]["max_bytes_per_device"]
    assert layouts["fsdp"]["max_bytes_per_device"] <= replicated / 6
    # Tensor parallel alone halves the big matrices: well under the replicated bytes.
    assert layouts["4x2"]["max_bytes_per_device"] <= 0.6 * replicated
    assert layouts["4x2"]["specs"] == {MLP_IN: "P(None, 'model')", QKV: "P(None, None, 'model')"}
