"""Parallel and fast training: every placement equals the single-device run.

Multi-device runs happen in subprocesses (the CPU device count is fixed when JAX starts):
8 forced host devices, and two processes joined by ``jax.distributed`` on 127.0.0.1. The
reference is always the plain single-device run of the same config (same global batch).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrain.config import ConfigError, load_config
from jaxtrain.data import prepare_data
from jaxtrain.models import build_model
from jaxtrain.train import train_and_evaluate
from jaxtrain.train.optim import build_optimizer
from jaxtrain.train.state import create_train_state
from jaxtrain.train.step import make_train_step
from tests.parallel_worker import YAML
from tests.support import ROOT, forced_devices

# Float32 sums in a different order (per-device partial sums, all-reduce): a few ulps.
PARAMS_ATOL = 1e-5

CNN_BN = "model={name: cnn, features: [8], dense: 16, batch_norm: true}"
EIGHT_DEVICE_SPECS = {
    "single": "",
    "pmap": "train.parallel=pmap",
    # Tensor parallel: parameters sharded over a 4x2 (data, model) mesh.
    "4x2_fsdp": "train.parallel={mesh: {data: 4, model: 2}, fsdp: true}",
}
MORE_EIGHT_DEVICE_SPECS = {  # slow: the remaining combinations
    "single": "",
    "sharded": "train.parallel=sharded",
    "fused_sharded": "train.parallel=sharded;train.fused_epochs=true",
    # A checkpoint of one placement restores into another: stop at step 7, resume elsewhere
    # (fast: tests/test_mesh.py restores FSDP checkpoints into other layouts).
    "pmap_then_single": "train.parallel=pmap>7>train.parallel=none",
    "fsdp_then_single": "train.parallel=fsdp>7>train.parallel=none",
    "fused_pmap": "train.parallel=pmap;train.fused_epochs=true",
    "cnn_single": CNN_BN,
    "cnn_pmap": f"{CNN_BN};train.parallel=pmap",  # BatchNorm statistics synchronised
    "single_then_sharded": ">7>train.parallel=sharded",
    "fsdp": "train.parallel=fsdp",
    "single_then_4x2_fsdp": ">7>train.parallel={mesh: {data: 4, model: 2}, fsdp: true}",
}
# Forced host devices exist on the CPU platform only (also where a GPU is the default).
EIGHT = {"XLA_FLAGS": forced_devices(8), "JAX_PLATFORMS": "cpu"}


def _worker(out: Path, specs: dict[str, str], env: dict[str, str], **popen) -> subprocess.Popen:
    args = [f"{name}={spec}" for name, spec in specs.items()]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.parallel_worker", str(out), *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def _finish(process: subprocess.Popen, timeout: float = 420) -> None:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]


def _load(out: Path, name: str) -> tuple[dict[str, np.ndarray], dict]:
    arrays = np.load(out / f"{name}.npz")
    return {k: arrays[k] for k in arrays.files}, json.loads((out / f"{name}.json").read_text())


def _max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eight_devices")
    _finish(_worker(out, EIGHT_DEVICE_SPECS, EIGHT))
    return out


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("pmap", "single"),
        ("4x2_fsdp", "single"),
    ],
)
def test_eight_device_run_equals_the_single_device_run(eight_devices, name, reference) -> None:
    _assert_equal_runs(eight_devices, name, reference)


@pytest.mark.slow
def test_every_other_eight_device_combination_equals_the_single_device_run(tmp_path) -> None:
    _finish(_worker(tmp_path, MORE_EIGHT_DEVICE_SPECS, EIGHT))
    for name, reference in [
        ("sharded", "single"),
        ("fused_sharded", "single"),
        ("fused_pmap", "fused_sharded"),  # pmap is a thin placement of the mesh path's step
        ("pmap_then_single", "single"),
        ("fsdp_then_single", "single"),
        ("fused_pmap", "single"),
        ("cnn_pmap", "cnn_single"),
        ("single_then_sharded", "single"),
        ("fsdp", "single"),
        ("single_then_4x2_fsdp", "single"),
    ]:
        _assert_equal_runs(tmp_path, name, reference)


def _assert_equal_runs(out: Path, name: str, reference: str) -> None:
    params, summary = _load(out, name)
    expected, reference_summary = _load(out, reference)
    assert summary["devices"] == 8
    assert summary["step"] == reference_summary["step"] == 18  # 1 epoch of 1149 rows / 64
    assert _max_difference(params, expected) < PARAMS_ATOL
    assert summary["test"]["accuracy"] == pytest.approx(reference_summary["test"]["accuracy"])
    assert summary["test"]["count"] == reference_summary["test"]["count"]


def test_eight_device_runs_record_their_placement(eight_devices) -> None:
    run_dir = Path(_load(eight_devices, "4x2_fsdp")[1]["run_dir"])
    training = json.loads((run_dir / "metrics.json").read_text())["training"]
    assert training["parallel"] == {
        "placement": "sharded",
        "devices": 8,
        "mesh": {"data": 4, "model": 2},
        "fsdp": True,
        "processes": 1,
        "fused_epochs": False,
        "precision": "float32",
        "micro_batches": 1,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("parallel", ["sharded", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_processes_equal_the_single_device_run(tmp_path: Path, parallel: str) -> None:
    port = _free_port()
    processes = [
        _worker(
            tmp_path,
            {"multi": f"train.parallel={parallel};@report"},
            {
                "XLA_FLAGS": forced_devices(2),
                "JAX_PLATFORMS": "cpu",
                "JAXTRAIN_COORDINATOR": f"127.0.0.1:{port}",
                "JAXTRAIN_NUM_PROCESSES": "2",
                "JAXTRAIN_PROCESS_ID": str(index),
            },
        )
        for index in range(2)
    ]
    for process in processes:
        _finish(process)
    params, summary = _load(tmp_path, "multi")
    assert (summary["processes"], summary["devices"]) == (2, 4)

    config_path = tmp_path / "reference.yaml"
    config_path.write_text(YAML)
    (tmp_path / "reference").mkdir()
    reference = train_and_evaluate(
        load_config(config_path), tmp_path / "reference", progress=False, report=False
    )
    flat = {
        jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(
            {"params": reference.state.params, "opt": reference.state.opt_state}
        )
    }
    assert _max_difference(params, flat) < PARAMS_ATOL
    assert summary["test"]["accuracy"] == pytest.approx(reference.test["accuracy"])
    # Only process 0 wrote the run directory: one metrics file, with every step once.
    run_dir = Path(summary["run_dir"])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["split"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 18
    assert len(list((tmp_path / "runs" / "parallel").iterdir())) == 1
    assert "## Held-out analysis (test split)" in (run_dir / "report.md").read_text()


# -- one device: fused epochs, accumulation, precision, remat --------------------------


def _small_config(tmp_path: Path, overrides=()):
    path = tmp_path / "parallel.yaml"
    path.write_text(YAML)
    return load_config(path, list(overrides))


def _leaves(state) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves((state.params, state.opt_state))]


@pytest.fixture(scope="module")
def digits():
    return prepare_data(load_config_text(YAML).data)


def load_config_text(text: str):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(text)
        return load_config(path)


def test_fused_epochs_equal_the_per_step_loop(tmp_path: Path, digits) -> None:
    runs = {}
    for fused in (False, True):
        config = _small_config(tmp_path, [f"train.fused_epochs={str(fused).lower()}"])
        (tmp_path / str(fused)).mkdir()
        runs[fused] = train_and_evaluate(config, tmp_path / str(fused), data=digits, progress=False)
    for a, b in zip(_leaves(runs[False].state), _leaves(runs[True].state), strict=True):
        np.testing.assert_allclose(a, b, atol=PARAMS_ATOL)
    assert runs[True].test["accuracy"] == pytest.approx(runs[False].test["accuracy"])
    logged = [
        [
            json.loads(line)
            for line in (tmp_path / str(f) / "metrics.jsonl").read_text().splitlines()
        ]
        for f in (False, True)
    ]
    assert [r["step"] for r in logged[0]] == [r["step"] for r in logged[1]]


def _step_pieces(digits, model_config: str, **step_options):
    config = load_config_text(YAML.replace("model: {name: mlp, hidden: [32]}", model_config))
    model = build_model(config.model, digits.num_outputs, digits.input_shape)
    tx = build_optimizer(config.optimizer, 100)
    state = create_train_state(model, tx, digits.input_shape, 0)
    split = digits.splits["train"]
    batch = {"inputs": split.inputs[:64], "labels": split.labels[:64]}
    return jax.jit(make_train_step(model, tx, **step_options)), state, batch


def test_accumulated_micro_batches_equal_the_full_batch(digits) -> None:
    full, state, batch = _step_pieces(digits, "model: {name: mlp, hidden: [32]}")
    accumulated, _, _ = _step_pieces(digits, "model: {name: mlp, hidden: [32]}", micro_batches=4)
    expected, expected_metrics = full(state, batch)
    got, metrics = accumulated(state, batch)
    for a, b in zip(_leaves(expected), _leaves(got), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert float(metrics["loss"]) == pytest.approx(float(expected_metrics["loss"]), rel=1e-6)
    assert float(metrics["accuracy"]) == float(expected_metrics["accuracy"])


def test_micro_batches_must_divide_the_batch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.micro_batches\b.*: 5 does not divide data.batch"):
        _small_config(tmp_path, ["train.micro_batches=5"])


def test_bfloat16_policy_computes_in_bfloat16_and_keeps_float32_state(digits) -> None:
    f32, state, batch = _step_pieces(digits, "model: {name: mlp, hidden: [32]}")
    bf16, _, _ = _step_pieces(
        digits, "model: {name: mlp, hidden: [32]}", compute_dtype=jnp.bfloat16
    )
    hlo = bf16.lower(state, batch).as_text()
    assert "bf16" in hlo and "bf16" not in f32.lower(state, batch).as_text()
    new_state, metrics = bf16(state, batch)
    _, reference = f32(state, batch)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new_state.params))
    assert metrics["loss"].dtype == jnp.float32
    # bfloat16 keeps 8 bits of mantissa: the loss agrees to about 1%.
    assert float(metrics["loss"]) == pytest.approx(float(reference["loss"]), rel=2e-2)


@pytest.mark.parametrize(
    "model_config",
    [
        "model: {name: resnet, stage_sizes: [1], features: [4], remat: REMAT}",
        pytest.param(  # the same remat wrapper as the ResNet's blocks, at 2x the cost
            "model: {name: vit, patch_size: 4, d_model: 8, num_heads: 2, num_layers: 2, "
            "remat: REMAT}",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_rematerialised_blocks_give_the_same_update(digits, model_config) -> None:
    plain, state, batch = _step_pieces(digits, model_config.replace("REMAT", "false"))
    remat, remat_state, _ = _step_pieces(digits, model_config.replace("REMAT", "true"))
    assert jax.tree.structure(state.params) == jax.tree.structure(remat_state.params)
    # The remat program recomputes the blocks: their forward appears under a checkpoint.
    assert "remat" in str(jax.make_jaxpr(remat)(state, batch))
    assert "remat" not in str(jax.make_jaxpr(plain)(state, batch))
    for a, b in zip(_leaves(plain(state, batch)[0]), _leaves(remat(state, batch)[0]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


# -- compilation cache, distributed settings -------------------------------------------


_CACHE_EVENTS: list[str] = []  # this process's persistent-cache hits and misses (writes)


def _count_cache_event(name: str, **_kwargs) -> None:
    if name in ("/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses"):
        _CACHE_EVENTS.append(name.rsplit("/", 1)[1])


def test_second_run_of_a_config_compiles_nothing_new(tmp_path: Path, digits) -> None:
    from jaxtrain.compilation_cache import cache_dir

    cache = cache_dir()  # the session's (tests/conftest.py), on as in every jaxtrain command
    assert cache is not None and jax.config.jax_compilation_cache_dir == str(cache)
    if not _LISTENING:
        jax.monitoring.register_event_listener(_count_cache_event)
        _LISTENING.append(_count_cache_event)
    config = _small_config(tmp_path, ["train.epochs=1", "model.hidden=[24]"])
    results, events = [], []
    for name in ("first", "second"):
        jax.clear_caches()  # as a new process would start: nothing compiled in memory
        (tmp_path / name).mkdir()
        before = len(_CACHE_EVENTS)
        results.append(train_and_evaluate(config, tmp_path / name, data=digits, progress=False))
        events.append(_CACHE_EVENTS[before:])
    # The cache folder is shared with the other xdist workers: count this process's cache
    # events, not the folder's entries (another worker may add some meanwhile).
    assert any("train_step" in p.name for p in cache.iterdir())  # the step was kept
    assert events[1].count("cache_hits") >= 3, events  # step, evaluation, prediction at least
    assert "cache_misses" not in events[1]  # the second run wrote nothing new: all were hits
    assert results[0].test == results[1].test


_LISTENING: list = []


def test_compilation_cache_can_be_turned_off(monkeypatch) -> None:
    from jaxtrain.compilation_cache import cache_dir

    monkeypatch.setenv("JAXTRAIN_CACHE_DIR", "off")
    assert cache_dir() is None
    monkeypatch.setenv("JAXTRAIN_CACHE_DIR", "/somewhere/xla")
    assert cache_dir() == Path("/somewhere/xla")


def test_distributed_settings_are_checked_before_joining(monkeypatch, tmp_path: Path) -> None:
    from jaxtrain.distributed import initialize

    for name in ("JAXTRAIN_COORDINATOR", "JAXTRAIN_NUM_PROCESSES", "JAXTRAIN_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert initialize(None) is False  # nothing asks for a multi-process job
    monkeypatch.setenv("JAXTRAIN_NUM_PROCESSES", "two")
    with pytest.raises(ConfigError, match="JAXTRAIN_NUM_PROCESSES='two': expected an integer"):
        initialize(None)
    monkeypatch.setenv("JAXTRAIN_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAXTRAIN_PROCESS_ID", "2")
    with pytest.raises(ConfigError, match="distributed.process_id=2 must be below"):
        initialize(None)
    path = tmp_path / "c.yaml"
    path.write_text(YAML + "distributed: {num_processes: 0}\n")
    with pytest.raises(ConfigError, match="distributed.num_processes"):
        load_config(path)


def test_pmap_with_a_batch_the_devices_cannot_share_is_a_config_error() -> None:
    from jaxtrain.train.parallel import Placement

    with pytest.raises(ConfigError, match=r"data.batch_size=30 does not split evenly over the 8"):
        Placement("pmap", 8).check_batch(30, "data.batch_size")
