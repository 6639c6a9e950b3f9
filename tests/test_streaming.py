"""The streaming path: lazy splits, statistics by one pass, the grain pipeline, exact resume.

References: the in-memory path on the same data (the same rows, the same raw examples, the
batches gathered by a numpy take), numpy on the whole array for the statistics, a
hand-written crop/flip for host augmentation, and an uninterrupted run for resume.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxtrain.config import ConfigError, load_config
from jaxtrain.config.verbs import check_verb
from jaxtrain.data import DatasetError, fit_normalizer, load_tfds, prepare_data, train_batches
from jaxtrain.data.stream_prepare import should_stream
from jaxtrain.data.stream_stats import Moments, normalizer_from_moments
from jaxtrain.data.streaming import StreamSplit, is_streamed
from jaxtrain.train.augment import host_flip, host_random_crop

SMALL = "synthetic_images/small"


def load_config_text(text: str, overrides=()):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(text)
        return load_config(path, list(overrides))


def _yaml(stream="true", extra="", train="epochs: 1, log_every: 8"):
    return f"""
name: streamed
seed: 0
data: {{name: {SMALL}, batch_size: 64, stream: {stream}, split: random,
        validation_fraction: 0.1{extra}}}
model: {{name: cnn, features: [8], dense: 16}}
optimizer: {{name: adam, learning_rate: 0.003}}
train: {{{train}}}
"""


@pytest.fixture(scope="module")
def streamed():
    return prepare_data(load_config_text(_yaml()).data, streamable=True)


@pytest.fixture(scope="module")
def in_memory():
    return prepare_data(load_config_text(_yaml("false")).data, streamable=True)


def test_auto_streams_by_size_and_true_needs_a_streaming_verb() -> None:
    small = load_config_text(_yaml("auto")).data
    assert not should_stream(small, allowed=True)  # ~11 MB < 256 MB
    tiny_threshold = load_config_text(_yaml("auto", ", stream_above_mb: 0")).data
    assert should_stream(tiny_threshold, allowed=True)
    assert not should_stream(tiny_threshold, allowed=False)  # fused, sweeps: in memory
    with pytest.raises(DatasetError, match="data.stream: true"):
        should_stream(load_config_text(_yaml()).data, allowed=False)


def test_streamed_splits_hold_the_in_memory_rows_and_raw_examples(streamed, in_memory) -> None:
    raw = load_tfds(SMALL)
    for name in ("train", "validation", "test"):
        split = streamed.splits[name]
        assert is_streamed(split) and not is_streamed(in_memory.splits[name])
        assert len(split) == len(in_memory.splits[name])
        np.testing.assert_array_equal(split.labels, in_memory.splits[name].labels)
    # The carved splits take the same source rows as the in-memory random split.
    np.testing.assert_array_equal(streamed.splits["validation"].keys, in_memory.rows["validation"])
    rows = streamed.splits["train"].keys[:50]
    inputs, labels = streamed.splits["train"].read(slice(0, 50))
    np.testing.assert_array_equal(inputs, raw.splits["train"].inputs[rows])
    np.testing.assert_array_equal(labels, raw.splits["train"].labels[rows])
    assert inputs.dtype == np.uint8  # stored as images, converted per batch


def test_streaming_pass_fits_the_normaliser_numpy_fits_on_the_whole_split(streamed) -> None:
    raw = load_tfds(SMALL).splits["train"].inputs[streamed.splits["train"].keys]
    expected = fit_normalizer(raw, "standard")
    np.testing.assert_allclose(streamed.normalizer.shift, expected.shift, rtol=1e-6)
    np.testing.assert_allclose(streamed.normalizer.scale, expected.scale, rtol=1e-6)
    batch = streamed.splits["train"].batch(np.arange(5))
    np.testing.assert_allclose(batch["inputs"], expected(raw[:5]), rtol=1e-6, atol=1e-6)


def test_moments_merge_equals_numpy_with_missing_values() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (1000, 4))
    x[rng.random(x.shape) < 0.1] = np.nan
    merged = Moments.of(x[:300]).merge(Moments.of(x[300:301])).merge(Moments.of(x[301:]))
    np.testing.assert_allclose(merged.mean, np.nanmean(x, axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.m2 / merged.count, np.nanvar(x, axis=0), rtol=1e-10)
    np.testing.assert_array_equal(merged.low, np.nanmin(x, axis=0))
    # Mean imputation, then the normaliser: as if numpy filled the array and fitted it.
    fill = np.nanmean(x, axis=0)
    filled = np.where(np.isnan(x), fill, x)
    for method in ("standard", "minmax"):
        expected = fit_normalizer(filled, method)
        got = normalizer_from_moments(merged, method, fill)
        np.testing.assert_allclose(got.shift, expected.shift, rtol=1e-6)
        np.testing.assert_allclose(got.scale, expected.scale, rtol=1e-6)


def test_streamed_batches_equal_the_in_memory_gather(streamed, in_memory) -> None:
    """The same grain positions read lazily give the examples the numpy take gives."""
    memory = in_memory.splits["train"]
    for process in (0, 1):  # this process's half of every global batch
        lazy = iter(train_batches(streamed.splits["train"], 64, 1, 7, shard=(process, 2)))
        whole = iter(train_batches(memory, 64, 1, 7))
        for _ in range(3):
            part, full = next(lazy), next(whole)
            rows = slice(32 * process, 32 * (process + 1))
            np.testing.assert_array_equal(part["labels"], full["labels"][rows])
            np.testing.assert_allclose(part["inputs"], full["inputs"][rows], atol=1e-5)
    raw = next(iter(train_batches(streamed.splits["train"], 64, 1, 7, raw=True)))
    assert raw["inputs"].dtype == np.uint8


def test_host_crop_and_flip_match_a_hand_written_reference() -> None:
    images = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
    cropped = host_random_crop(images, np.random.default_rng(3), 1)
    offsets = np.random.default_rng(3).integers(0, 3, (2, 2))
    for i, (r, c) in enumerate(offsets):
        padded = np.zeros((6, 6, 1), np.float32)
        padded[1:5, 1:5] = images[i]
        np.testing.assert_array_equal(cropped[i], padded[r : r + 4, c : c + 4])
    flipped = host_flip(images, np.random.default_rng(5))
    draws = np.random.default_rng(5).random(2) < 0.5
    for i in range(2):
        expected = images[i][:, ::-1] if draws[i] else images[i]
        np.testing.assert_array_equal(flipped[i], expected)


def test_verbs_that_hold_data_in_device_memory_refuse_streaming_settings() -> None:
    config = load_config_text(_yaml(train=""))
    check_verb(config, "train")
    for verb in ("sweep", "federated", "learning-curve"):
        with pytest.raises(ConfigError, match="data.stream: true: jaxtrain " + verb):
            check_verb(config, verb)
    fused = load_config_text(_yaml(train="epochs: 1, fused_epochs: true"))
    with pytest.raises(ConfigError, match="fused_epochs"):
        check_verb(fused, "train")
    workers = load_config_text(_yaml("auto", ", workers: 2", train=""))
    check_verb(workers, "train")
    with pytest.raises(ConfigError, match="data.workers: jaxtrain sweep"):
        check_verb(workers, "sweep")
    host = load_config_text(_yaml("auto", train="augment: {where: workers}"))
    check_verb(host, "train")
    with pytest.raises(ConfigError, match="train.augment.where: workers: jaxtrain federated"):
        check_verb(host, "federated")


@pytest.mark.parametrize(
    "override",
    ["duplicates: drop", "label_errors: {action: report}", "missing: median"],
)
def test_streamed_preparation_refuses_rules_that_need_memory(override) -> None:
    text = _yaml(extra=f", prepare: {{{override}}}")
    with pytest.raises(DatasetError, match=r"data.prepare\..*data.stream: false"):
        prepare_data(load_config_text(text).data, streamable=True)


def test_a_table_cannot_be_streamed() -> None:
    with pytest.raises(Exception, match="stream: a .csv/.parquet/.npy table"):
        load_config_text("name: t\ndata: {name: t, path: x.csv, label_column: y, stream: true}\n")


def test_step_conversion_and_worker_conversion_train_alike(streamed) -> None:
    """uint8 batches converted in the step, or float32 batches from the host: the same run."""
    from jaxtrain.train.advance import make_advance, training_stream
    from jaxtrain.train.parallel import build_placement
    from jaxtrain.train.pieces import build_pieces

    finals = []
    for where in ("step", "workers"):
        config = load_config_text(_yaml(train=f"epochs: 1, augment: {{where: {where}}}"))
        pieces = build_pieces(config, streamed)
        placement = build_placement("none")
        iterator = iter(training_stream(config, pieces, placement))
        first = next(iter(training_stream(config, pieces, placement)))
        assert first["inputs"].dtype == (np.uint8 if where == "step" else np.float32)
        advance, _ = make_advance(config, pieces, placement, iterator)
        state = pieces.state
        for _ in range(3):
            state, _ = advance(state, 1)
        finals.append(state.params)
        iterator.close()
    import jax

    for a, b in zip(jax.tree.leaves(finals[0]), jax.tree.leaves(finals[1]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def _stop_and_resume(tmp_path, text, stop_at):
    from jaxtrain.config import dump_config
    from jaxtrain.runner import new_run_dir, train
    from jaxtrain.train import stop_at_step, train_and_evaluate

    config = load_config_text(text)
    data = prepare_data(config.data, streamable=True)
    assert isinstance(data.splits["train"], StreamSplit)
    (tmp_path / "straight").mkdir()
    straight = train_and_evaluate(
        config, tmp_path / "straight", data=data, progress=False, report=False
    )
    run_dir = new_run_dir(tmp_path / "runs", config.name)
    dump_config(config, run_dir / "config.yaml")
    from jaxtrain.files import write_json

    write_json(run_dir / "data_stats.json", data.stats())
    stopped = train_and_evaluate(
        config, run_dir, data=data, callbacks=(stop_at_step(stop_at),), progress=False,
        report=False,
    )  # fmt: skip
    assert (stopped.status, stopped.step) == ("stopped", stop_at)
    resumed = train(None, resume=run_dir, progress=False, report=False)
    return straight, resumed


def _bitwise(a, b) -> bool:
    import jax

    from jaxtrain.checkpoint import state_digest

    del jax
    return state_digest(a) == state_digest(b)


def test_a_streamed_run_stopped_at_a_random_step_resumes_bitwise(tmp_path) -> None:
    stop_at = int(np.random.default_rng().integers(3, 28))  # 28 steps per epoch here
    text = _yaml(train="epochs: 2, eval_every: 10, log_every: 5, augment: {flip_horizontal: "
                 "true, crop_padding: 2, where: workers}")  # fmt: skip
    straight, resumed = _stop_and_resume(tmp_path, text, stop_at)
    assert resumed.status == "finished" and resumed.step == straight.step
    assert _bitwise(resumed.state, straight.state), f"stopped at {stop_at}"


@pytest.mark.slow
def test_a_streamed_run_with_worker_processes_resumes_bitwise(tmp_path) -> None:
    stop_at = int(np.random.default_rng().integers(3, 28))
    text = _yaml(
        extra=", workers: 2",
        train="epochs: 2, eval_every: 10, log_every: 5, augment: {crop_padding: 2}",
    )
    straight, resumed = _stop_and_resume(tmp_path, text, stop_at)
    assert _bitwise(resumed.state, straight.state), f"stopped at {stop_at}"


def test_a_fairness_audit_refuses_streaming() -> None:
    text = _yaml(train="") + "fairness: {sensitive_feature: group}\n"
    with pytest.raises(ConfigError, match="fairness audit"):
        check_verb(load_config_text(text), "train")


def test_host_and_step_conversion_fill_missing_values_then_normalise() -> None:
    """The workers' HostTransform and the step's convert_inputs: numpy's fill + normalise."""
    from jaxtrain.data.prepare import Normalizer
    from jaxtrain.data.streaming import HostTransform
    from jaxtrain.train.augment import convert_inputs

    x = np.array([[1.0, np.nan, 3.0], [np.nan, 5.0, 6.0]], np.float32)
    fill = np.array([10.0, 20.0, 30.0], np.float32)
    normalizer = Normalizer("standard", np.array([1.0, 2.0, 3.0], np.float32),
                            np.array([2.0, 4.0, 8.0], np.float32))  # fmt: skip
    expected = (np.where(np.isnan(x), fill, x) - normalizer.shift) / normalizer.scale
    transform = HostTransform(normalizer, fill)
    np.testing.assert_allclose(transform(x), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(convert_inputs(x, transform)), expected, rtol=1e-6)
    images = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_allclose(
        np.asarray(convert_inputs(images, transform)),
        (images - normalizer.shift) / normalizer.scale,
        rtol=1e-6,
    )


class _ArrayReader:
    """A reader over arrays in memory (what a TFDS source returns, without the files)."""

    def __init__(self, inputs, labels):
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, keys):
        return self.inputs[keys], self.labels[keys]


def test_the_streaming_pass_counts_missing_values_and_hashes_duplicates() -> None:
    from jaxtrain.data.stream_stats import pass_over

    rng = np.random.default_rng(2)
    x = rng.normal(size=(2500, 3)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[2400] = x[7]  # an exact duplicate (NaN in the same places too)
    labels = rng.integers(0, 4, 2500).astype(np.int32)
    keys = rng.permutation(2500)
    split = StreamSplit(_ArrayReader(x, labels), keys, (3,), np.float32)
    summary = pass_over(split, moments=True, hashes=True)  # three chunks of 1,024
    np.testing.assert_array_equal(summary.labels, labels[keys])
    np.testing.assert_array_equal(summary.missing, np.isnan(x).sum(axis=0))
    np.testing.assert_allclose(summary.moments.mean, np.nanmean(x.astype(float), 0), rtol=1e-9)
    ordered = x[keys]
    same = [
        (i, j)
        for i in range(len(keys))
        for j in (np.flatnonzero(summary.hashes == summary.hashes[i]))
        if i < j
    ]
    assert len(same) == 1 and np.array_equal(ordered[same[0][0]], ordered[same[0][1]],
                                              equal_nan=True)  # fmt: skip
