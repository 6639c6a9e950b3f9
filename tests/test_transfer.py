"""Transfer learning: loading by path, freezing, LoRA, imports, and their error cases.

References are independent of the code under test: the pretrained arrays are read back from
the checkpoint with Orbax directly; frozen parameters are compared bitwise with them after
training; the LoRA model's outputs are compared with the base model applied to kernels
merged by hand in NumPy (``W + alpha / r * A @ B``); layer-wise decay and gradual
unfreezing with SGD against ``-lr * factor * grad`` computed from ``jax.grad``; the class
subset against scikit-learn's digits arrays.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxtrain.config import ConfigError, SGDConfig, load_config
from jaxtrain.config.transfer import LoRAConfig, TransferConfig, UnfreezeConfig
from jaxtrain.data import DatasetError, load_tfds, prepare_data
from jaxtrain.data.dataset import byte_windows
from jaxtrain.models import CNN, MLP, TransformerLM
from jaxtrain.runner import evaluate_run, train
from jaxtrain.train.optim import build_optimizer
from jaxtrain.train.state import create_train_state
from jaxtrain.train.step import make_train_step
from jaxtrain.train.tasks import language_model
from jaxtrain.transfer import (
    TransferError,
    build_transfer,
    merge,
    read_source,
    read_weights_file,
    write_weights_file,
)
from jaxtrain.transfer.lora import LoRAModel, add_adapters
from jaxtrain.transfer.paths import flatten, unflatten
from tests.support import CONFIGS

TINY_CNN = ["model.features=[4, 8]", "model.dense=16"]
PRETRAIN = [*TINY_CNN, "train.epochs=1"]
# The shipped recipe makes Dense_0 new too; the tests keep it pretrained, so loading,
# freezing and shape errors are checked on every layer below the head.
FINETUNE = [*TINY_CNN, "train.epochs=2", "train.eval_every=5", "transfer.head=[Dense_1]"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A finished CNN run on digits 0-4 (tiny, one epoch)."""
    runs = tmp_path_factory.mktemp("runs")
    result = train(
        CONFIGS / "transfer_digits_pretrain.yaml", PRETRAIN, runs_dir=runs, progress=False
    )
    assert result.status == "finished"
    return result.run_dir


def _checkpoint_params(run_dir: Path) -> dict[str, np.ndarray]:
    """The best checkpoint's parameters, read with Orbax alone (the reference)."""
    best = json.loads((run_dir / "metrics.json").read_text())["best_step"]
    state = ocp.StandardCheckpointer().restore(run_dir / "checkpoints" / str(best) / "state")
    return {k: np.asarray(v) for k, v in flatten(state["params"]).items()}


def _finetune(pretrained: Path, runs: Path, *overrides: str):
    return train(
        CONFIGS / "transfer_digits_finetune.yaml",
        [*FINETUNE, f"transfer.init_from={pretrained}", *overrides],
        runs_dir=runs,
        progress=False,
    )


# ---------------------------------------------------------------------------------------------
# data subsets


def test_class_subset_keeps_and_relabels_classes_with_n_training_examples_each() -> None:
    config = load_config(
        CONFIGS / "transfer_digits_finetune.yaml", ["transfer=null", "data.seed=3"]
    )
    data = prepare_data(config.data)
    assert data.class_names == ("5", "6", "7", "8", "9")
    assert np.bincount(data.splits["train"].labels).tolist() == [20] * 5
    # Every split: the source label of each example (by its source row) minus 5.
    source = load_tfds("digits").splits["train"].labels
    for name in ("train", "validation", "test"):
        np.testing.assert_array_equal(source[data.rows[name]] - 5, data.splits[name].labels)
    # Held-out splits are whole: as many as the same split without the class subset keeps.
    full = prepare_data(load_config(CONFIGS / "digits_cnn.yaml", ["data.seed=3"]).data)
    for name in ("validation", "test"):
        assert len(data.splits[name]) == int(np.isin(full.splits[name].labels, range(5, 10)).sum())
    again = prepare_data(config.data)  # seeded: the same 100 examples
    np.testing.assert_array_equal(again.rows["train"], data.rows["train"])


def test_unknown_class_is_a_one_line_error() -> None:
    config = load_config(CONFIGS / "transfer_digits_pretrain.yaml", ["data.classes=[3, 12]"])
    with pytest.raises(DatasetError, match=r"data.classes: 12 is not a class id"):
        prepare_data(config.data)


# ---------------------------------------------------------------------------------------------
# loading


@pytest.fixture(scope="module")
def head_only(pretrained, tmp_path_factory):
    """The digits 5-9 fine-tune of ``pretrained``, head only, through the runner."""
    return _finetune(pretrained, tmp_path_factory.mktemp("head_only"), "transfer.train=head")


BODY = sorted(f"{m}/{p}" for m in ("Conv_0", "Conv_1", "Dense_0") for p in ("bias", "kernel"))
HEAD = ["Dense_1/bias", "Dense_1/kernel"]


def test_fine_tune_loads_by_path_and_reports_exact_paths(pretrained, head_only) -> None:
    report = json.loads((head_only.run_dir / "transfer_report.json").read_text())
    assert sorted(report["loaded"]) == BODY
    assert sorted(report["initialised"]) == HEAD
    assert sorted(report["dropped"]) == HEAD  # the pretrained head: 0-4, not 5-9
    assert sorted(report["frozen"]) == BODY
    assert sorted(report["trains"]) == HEAD
    best = json.loads((pretrained / "metrics.json").read_text())["best_step"]
    assert report["step"] == best and report["source"].endswith(f"checkpoints/{best}")
    assert (head_only.run_dir / "transfer_report.md").is_file()


def test_head_only_fine_tune_keeps_frozen_parameters_bitwise_and_no_state(
    pretrained, head_only
) -> None:
    reference = _checkpoint_params(pretrained)
    params = flatten(jax.device_get(head_only.state.params))
    for path in BODY:
        assert params[path].dtype == reference[path].dtype
        np.testing.assert_array_equal(params[path], reference[path], err_msg=path)
    assert not np.array_equal(params["Dense_1/kernel"], reference["Dense_1/kernel"])
    # The optimizer keeps moments for the two head leaves only (adam: mu and nu).
    leaves = [x for x in jax.tree.leaves(head_only.state.opt_state) if np.ndim(x) > 0]
    shapes = sorted(tuple(x.shape) for x in leaves)
    assert shapes == sorted([params["Dense_1/kernel"].shape, params["Dense_1/bias"].shape] * 2)
    # Evaluating the run again restores its checkpoint without the pretrained source.
    again = evaluate_run(head_only.run_dir)["test"]
    summary = json.loads((head_only.run_dir / "metrics.json").read_text())
    assert again["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-6)


def test_a_folder_of_runs_means_its_newest_finished_run(pretrained, tmp_path) -> None:
    best = json.loads((pretrained / "metrics.json").read_text())["best_step"]
    unfinished = pretrained.parent / "99999999-999999"  # newer, but has no metrics.json
    (unfinished / "checkpoints").mkdir(parents=True)
    try:
        description, step, flat = read_source(TransferConfig(init_from=str(pretrained.parent)))
    finally:
        (unfinished / "checkpoints").rmdir()
        unfinished.rmdir()
    assert description == str(pretrained / "checkpoints" / str(best)) and step == best
    reference = _checkpoint_params(pretrained)
    for path, value in reference.items():
        np.testing.assert_array_equal(flat[path], value)


def test_shape_mismatch_outside_head_names_the_parameter_and_writes_nothing(
    pretrained, tmp_path
) -> None:
    with pytest.raises(ConfigError, match=r"parameter Dense_0/(bias|kernel) has shape"):
        _finetune(pretrained, tmp_path, "model.dense=32")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["transfer.head=[Dense_9]"], r"transfer.head: 'Dense_9' matches no parameter"),
        (["transfer.freeze=[Conv_7]"], r"transfer.freeze: 'Conv_7' matches no parameter"),
        (["transfer.step=999999"], r"transfer.step: 999999 is not a checkpoint of"),
    ],
)
def test_bad_transfer_settings_are_one_line_errors(pretrained, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _finetune(pretrained, tmp_path, *overrides)
    assert not any(tmp_path.iterdir())


def test_missing_source_is_a_one_line_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"transfer.init_from: .*nowhere does not exist"):
        train(
            CONFIGS / "transfer_digits_finetune.yaml",
            [*FINETUNE, f"transfer.init_from={tmp_path / 'nowhere'}"],
            runs_dir=tmp_path,
            progress=False,
        )


@pytest.mark.parametrize(
    "section, message",
    [
        ("{init_from: x, train: head}", r"transfer.train\b.*: 'head' needs transfer.head"),
        ("{init_from: x, lora: {rank: 2}}", r"transfer.lora\b.*: adapters train alone"),
        (
            "{init_from: x, train: adapters}",
            r"transfer.train\b.*: 'adapters' needs a transfer.lora",
        ),
        ("{init_from: w.npz}", r"transfer.names\b.*: required with a weights file"),
        ("{init_from: x, from: y}", r"transfer.from\b.*: unknown key"),
        ("{init_from: x, layer_decay: 1.5}", r"transfer.layer_decay"),
    ],
)
def test_transfer_section_is_validated(section, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "transfer_digits_pretrain.yaml", [f"transfer={section}"])


# ---------------------------------------------------------------------------------------------
# importing weights files


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_weights_file_loads_by_name_mapping(pretrained, tmp_path, suffix) -> None:
    reference = _checkpoint_params(pretrained)
    names = {"features.0.weight": "Conv_0/kernel", "features.0.bias": "Conv_0/bias"}
    arrays = {name: reference[path] for name, path in names.items()}
    arrays["classifier.weight"] = np.ones((3, 3), np.float32)  # not mapped: left out
    path = write_weights_file(tmp_path / f"published{suffix}", arrays)
    config = TransferConfig(init_from=str(path), names=names, head=("Dense_1",))
    transfer = build_transfer(config, CNN((4, 8), 5, dense=16), (8, 8, 1), jnp.float32, 1.0)
    tx = build_optimizer(SGDConfig(), 10, wrap=transfer.wrap)
    state = create_train_state(transfer.model, tx, (8, 8, 1), 0)
    state, report = transfer.initialise(state, tx)
    assert sorted(report.loaded) == ["Conv_0/bias", "Conv_0/kernel"]
    assert "Conv_1/kernel" in report.initialised and report.dropped == []
    params = flatten(jax.device_get(state.params))
    np.testing.assert_array_equal(params["Conv_0/kernel"], reference["Conv_0/kernel"])


def test_weights_file_errors_name_the_entry_and_refuse_pickle(tmp_path) -> None:
    path = write_weights_file(tmp_path / "w.npz", {"a": np.zeros(3, np.float32)})
    config = TransferConfig(init_from=str(path), names={"b": "Conv_0/kernel"})
    with pytest.raises(TransferError, match=r"transfer.names: 'b' is not an entry of .*w.npz"):
        read_source(config)
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, a=np.array([{"x": 1}], dtype=object))
    config = TransferConfig(init_from=str(pickled), names={"a": "Conv_0/kernel"})
    with pytest.raises(TransferError, match=r"objects.npz is not a readable weights file"):
        read_source(config)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    config = TransferConfig(init_from=str(tmp_path / "junk.safetensors"), names={"a": "x"})
    with pytest.raises(TransferError, match=r"junk.safetensors is not a readable weights"):
        read_source(config)


# ---------------------------------------------------------------------------------------------
# LoRA


def _tiny_lm():
    return TransformerLM(vocab_size=256, d_model=16, num_heads=2, num_layers=1, max_len=8)


def test_lora_merge_gives_the_adapted_models_outputs() -> None:
    base = _tiny_lm()
    targets = ("*/attn/qkv/kernel", "*/attn/out/kernel", "*/mlp_in/kernel")
    model = LoRAModel(base, targets, rank=2, alpha=4.0)
    tokens = jax.random.randint(jax.random.key(1), (3, 8), 0, 256)
    params = jax.jit(model.init)({"params": jax.random.key(0)}, tokens)["params"]
    apply_base, apply_lora = jax.jit(base.apply), jax.jit(model.apply)  # one compile each
    flat = flatten(params)
    # Start: lora_b is zero, so the adapted model is exactly the base model.
    plain = {k: v for k, v in flat.items() if not k.endswith(("lora_a", "lora_b"))}
    base_out = apply_base({"params": unflatten(plain)}, tokens)
    np.testing.assert_array_equal(apply_lora({"params": params}, tokens), base_out)
    # Random adapters: adapter model == base model on kernels merged by hand in NumPy.
    keys = iter(jax.random.split(jax.random.key(2), 32))
    for path in list(flat):
        if path.endswith("lora_b"):
            flat[path] = jax.random.normal(next(keys), flat[path].shape) * 0.1
    by_hand = {}
    for path, value in flat.items():
        module, _, leaf = path.rpartition("/")
        if leaf in ("lora_a", "lora_b"):
            continue
        if leaf == "kernel" and f"{module}/lora_a" in flat:
            a = np.asarray(flat[f"{module}/lora_a"], np.float64)
            b = np.asarray(flat[f"{module}/lora_b"], np.float64)
            value = np.asarray(value, np.float64) + 2.0 * (a @ b).reshape(value.shape)
        by_hand[path] = np.asarray(value, np.float32)
    adapted = unflatten(flat)
    out = apply_lora({"params": adapted}, tokens)
    expected = apply_base({"params": unflatten(by_hand)}, tokens)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    merged = merge(adapted, 4.0, 2)
    assert sorted(flatten(merged)) == sorted(plain)  # the base model's tree
    np.testing.assert_allclose(apply_base({"params": merged}, tokens), out, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_lora_trains_only_adapters(tmp_path) -> None:
    """Base weights bitwise unchanged, adapters changed, optimizer state only for adapters."""
    base = _tiny_lm()
    source = base.init(jax.random.key(5), jnp.zeros((1, 8), jnp.int32))["params"]
    weights = write_weights_file(tmp_path / "lm.npz", flatten(source))
    lora = LoRAConfig(rank=2, alpha=4.0, targets=("*/attn/qkv/kernel", "*/mlp_out/kernel"))
    names = {p: p for p in flatten(source)}
    config = TransferConfig(init_from=str(weights), names=names, train="adapters", lora=lora)
    transfer = build_transfer(config, base, (8,), jnp.int32, 1.0)
    tx = build_optimizer(SGDConfig(learning_rate=0.5), 10, wrap=transfer.wrap)
    state = create_train_state(transfer.model, tx, (8,), 0, jnp.int32)
    state, report = transfer.initialise(state, tx)
    assert sorted(report.trains) == sorted(
        f"block_0/{m}/lora_{ab}" for m in ("attn/qkv", "mlp_out") for ab in "ab"
    )
    windows = byte_windows(np.frombuffer(b"the quick brown fox " * 8, np.uint8), 8)
    batch = {"inputs": windows.inputs[:8], "labels": windows.labels[:8]}
    step = jax.jit(make_train_step(transfer.model, tx, language_model(256)))
    after = state
    for _ in range(3):
        after, metrics = step(after, batch)
    before, now = flatten(jax.device_get(state.params)), flatten(jax.device_get(after.params))
    for path in before:
        if path.endswith(("lora_a", "lora_b")):
            if path.endswith("lora_b"):
                assert not np.array_equal(before[path], now[path]), path
        else:
            np.testing.assert_array_equal(before[path], now[path], err_msg=path)
            np.testing.assert_array_equal(now[path], np.asarray(flatten(source)[path]))
    # SGD with momentum keeps a trace per trainable leaf: exactly the 4 adapters.
    traces = [x for x in jax.tree.leaves(after.opt_state) if np.ndim(x) > 0]
    assert len(traces) == 4
    # The export: the plain model's tree, giving the adapted model's outputs.
    exported = read_weights_file(transfer.export(tmp_path, after.params), names)
    assert sorted(exported) == sorted(flatten(source))
    tokens = batch["inputs"]
    np.testing.assert_allclose(
        base.apply({"params": unflatten(exported)}, tokens),
        transfer.model.apply({"params": after.params}, tokens),
        rtol=1e-5,
        atol=1e-5,
    )


# ---------------------------------------------------------------------------------------------
# what trains: layer-wise decay and gradual unfreezing (SGD, so updates are -lr * factor * g)


def _mlp_transfer(tmp_path, **settings):
    """A 3-hidden-layer MLP (Dense_0..Dense_3, Dense_3 the head) loaded from a file."""
    model = MLP((8, 8, 8), 3)
    source = model.init(jax.random.key(9), jnp.zeros((1, 5)), train=False)["params"]
    path = write_weights_file(tmp_path / "mlp.safetensors", flatten(source))
    names = {p: p for p in flatten(source)}
    config = TransferConfig(init_from=str(path), names=names, **settings)
    transfer = build_transfer(config, model, (5,), jnp.float32, 2.0)
    sgd = SGDConfig(learning_rate=0.1, momentum=0.0)
    tx = build_optimizer(sgd, 10, wrap=transfer.wrap)
    state, _ = transfer.initialise(create_train_state(transfer.model, tx, (5,), 0), tx)
    rng = np.random.default_rng(0)
    batch = {
        "inputs": rng.standard_normal((6, 5)).astype(np.float32),
        "labels": rng.integers(0, 3, 6).astype(np.int32),
    }
    return model, transfer, tx, state, batch


def _grads(model, params, batch):
    def loss(p):
        logits = model.apply({"params": p}, batch["inputs"], train=False)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(logp[jnp.arange(len(batch["labels"])), batch["labels"]])

    return flatten(jax.jit(jax.grad(loss))(params))


def test_layer_wise_decay_scales_each_modules_update(tmp_path) -> None:
    model, transfer, tx, state, batch = _mlp_transfer(tmp_path, layer_decay=0.5)
    after, _ = jax.jit(make_train_step(transfer.model, tx))(state, batch)
    grads = _grads(model, state.params, batch)
    before, now = flatten(state.params), flatten(after.params)
    depth = {"Dense_3": 0, "Dense_2": 1, "Dense_1": 2, "Dense_0": 3}
    for path, g in grads.items():
        factor = 0.5 ** depth[path.split("/")[0]]
        np.testing.assert_allclose(
            now[path] - before[path], -0.1 * factor * g, rtol=1e-4, atol=1e-7, err_msg=path
        )


def test_gradual_unfreezing_starts_each_module_at_its_stage(tmp_path) -> None:
    """Two steps per epoch, one epoch per stage: the head Dense_3 trains from step 0,
    Dense_2 from step 2, Dense_1 from step 4, Dense_0 from step 6."""
    _, transfer, tx, state, batch = _mlp_transfer(
        tmp_path, head=("Dense_3",), train="head", unfreeze=UnfreezeConfig(epochs_per_stage=1)
    )
    step = jax.jit(make_train_step(transfer.model, tx))
    start = {"Dense_3": 0, "Dense_2": 2, "Dense_1": 4, "Dense_0": 6}
    previous = flatten(jax.device_get(state.params))
    for s in range(7):
        state, _ = step(state, batch)
        now = flatten(jax.device_get(state.params))
        for path in now:
            changed = not np.array_equal(now[path], previous[path])
            assert changed == (s >= start[path.split("/")[0]]), (s, path)
        previous = now


def test_lora_targets_that_match_nothing_are_named() -> None:
    with pytest.raises(TransferError, match=r"transfer.lora.targets: '\*/nothing' matches no"):
        add_adapters(
            _tiny_lm().init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"],
            ("*/nothing",),
            2,
            jax.random.key(0),
        )
