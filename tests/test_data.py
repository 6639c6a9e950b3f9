"""Data: bundled TFDS builders, offline failure, stratified splits, normalisation, pipelines."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from jaxtrain.config import DataConfig
from jaxtrain.data import (
    ArraySplit,
    DatasetError,
    check_available,
    eval_batches,
    fit_normalizer,
    load_tfds,
    prepare_data,
    stratified_split,
    train_batches,
)


def _sorted_rows(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    return flat[np.lexsort(flat.T[::-1])]


def test_digits_builder_holds_exactly_sklearns_digits() -> None:
    raw = load_tfds("digits")
    reference = load_digits()
    split = raw.splits["train"]
    assert set(raw.splits) == {"train"}
    assert split.inputs.shape == (1797, 8, 8, 1) and split.inputs.dtype == np.uint8
    assert raw.class_names == tuple(str(d) for d in range(10))
    ours = np.concatenate([split.inputs.reshape(1797, 64), split.labels[:, None]], axis=1)
    theirs = np.concatenate([reference.data, reference.target[:, None]], axis=1)
    np.testing.assert_array_equal(_sorted_rows(ours.astype(np.float64)), _sorted_rows(theirs))


def test_breast_cancer_builder_holds_exactly_sklearns_data() -> None:
    raw = load_tfds("breast_cancer")
    reference = load_breast_cancer()
    split = raw.splits["train"]
    assert raw.class_names == ("malignant", "benign")
    ours = np.concatenate([split.inputs, split.labels[:, None]], axis=1).astype(np.float64)
    theirs = np.concatenate([reference.data.astype(np.float32), reference.target[:, None]], 1)
    np.testing.assert_array_equal(_sorted_rows(ours), _sorted_rows(theirs.astype(np.float64)))


def test_builder_writes_array_record_into_the_data_dir(data_dir) -> None:
    load_tfds("digits")
    files = list((data_dir / "jaxtrain_digits").rglob("*.array_record*"))
    assert files, "expected array_record shards in the data directory"


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_catalog_dataset_not_on_disk_fails_fast_with_instructions(name: str, tmp_path) -> None:
    started = time.perf_counter()
    with pytest.raises(DatasetError) as info:
        check_available(name, tmp_path)
    assert time.perf_counter() - started < 5, "must not try the network"
    message = str(info.value)
    assert message.startswith("data.name:")
    assert "download_and_prepare" in message and "array_record" in message
    assert str(tmp_path) in message


def test_unknown_dataset_is_named() -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'not_a_dataset'"):
        check_available("not_a_dataset")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_split_is_a_partition_with_class_proportions(seed: int) -> None:
    labels = load_digits().target
    parts = stratified_split(labels, {"validation": 0.15, "test": 0.2}, seed=seed)
    together = np.concatenate(list(parts.values()))
    assert sorted(together.tolist()) == list(range(len(labels)))  # disjoint and complete
    for name, fraction in (("validation", 0.15), ("test", 0.2), ("train", 0.65)):
        for cls in range(10):
            expected = fraction * np.sum(labels == cls)
            assert abs(np.sum(labels[parts[name]] == cls) - expected) <= 1
    again = stratified_split(labels, {"validation": 0.15, "test": 0.2}, seed=seed)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)


def test_stratified_split_depends_on_seed() -> None:
    labels = load_digits().target
    a = stratified_split(labels, {"test": 0.2}, seed=0)["test"]
    b = stratified_split(labels, {"test": 0.2}, seed=1)["test"]
    assert not np.array_equal(a, b)


@pytest.mark.parametrize(
    ("method", "scaler"), [("standard", StandardScaler), ("minmax", MinMaxScaler)]
)
def test_normalizer_matches_sklearn_scalers_fitted_on_train(method: str, scaler) -> None:
    x = load_breast_cancer().data.astype(np.float32)
    train, test = x[:400], x[400:]
    normalizer = fit_normalizer(train, method)
    reference = scaler().fit(train.astype(np.float64))
    np.testing.assert_allclose(normalizer(test), reference.transform(test), rtol=1e-4, atol=1e-5)
    restored = type(normalizer).from_dict(normalizer.to_dict())
    np.testing.assert_array_equal(restored(test), normalizer(test))


def test_normalizer_is_per_channel_for_images_and_safe_on_constant_pixels() -> None:
    images = load_digits().images[..., None].astype(np.float32)
    normalizer = fit_normalizer(images, "standard")
    assert normalizer.shift.shape == (1,)
    np.testing.assert_allclose(normalizer.shift, images.mean(), rtol=1e-6)
    constant = fit_normalizer(np.ones((5, 3), np.float32), "standard")
    assert np.all(np.isfinite(constant(np.ones((2, 3), np.float32))))


def test_prepare_data_fits_statistics_on_train_only() -> None:
    data = prepare_data(DataConfig(name="breast_cancer"))
    sizes = data.sizes()
    assert sum(sizes.values()) == 569
    for name, fraction in (("validation", 0.15), ("test", 0.2)):
        assert abs(sizes[name] - fraction * 569) <= 2  # per-class rounding, 2 classes
    train = data.splits["train"].inputs
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-4)
    assert np.abs(data.splits["test"].inputs.mean(0)).max() > 1e-3  # test is not refitted
    assert data.split_origin == {
        "train": "source",
        "validation": "carved from train",
        "test": "carved from train",
    }


def _split(n: int = 10) -> ArraySplit:
    return ArraySplit(np.arange(n, dtype=np.float32)[:, None], np.arange(n, dtype=np.int32))


def test_train_batches_reshuffle_every_epoch_and_cover_each_example() -> None:
    stream = train_batches(_split(10), batch_size=5, epochs=3, seed=7)
    batches = [b["labels"] for b in stream]
    assert len(batches) == 6 and all(b.shape == (5,) for b in batches)
    epochs = [np.sort(np.concatenate(batches[i : i + 2])) for i in (0, 2, 4)]
    assert all(np.array_equal(e, np.arange(10)) for e in epochs)
    orders = [np.concatenate(batches[i : i + 2]) for i in (0, 2, 4)]
    assert not np.array_equal(orders[0], orders[1])


def test_train_batches_depend_only_on_the_seed() -> None:
    a = [b["labels"] for b in train_batches(_split(10), 5, 2, seed=1)]
    b = [b["labels"] for b in train_batches(_split(10), 5, 2, seed=1)]
    c = [b["labels"] for b in train_batches(_split(10), 5, 2, seed=2)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iterator_state_restores_the_exact_position() -> None:
    stream = train_batches(_split(12), batch_size=4, epochs=3, seed=3)
    full = [b["labels"] for b in stream]
    it = iter(stream)
    for _ in range(4):
        next(it)
    state = it.get_state()
    resumed = iter(train_batches(_split(12), batch_size=4, epochs=3, seed=3))
    resumed.set_state(state)
    rest = [b["labels"] for b in resumed]
    assert len(rest) == len(full) - 4
    assert all(np.array_equal(x, y) for x, y in zip(rest, full[4:], strict=True))


def test_batch_larger_than_split_is_refused() -> None:
    with pytest.raises(ValueError, match="data.batch_size=11"):
        train_batches(_split(10), batch_size=11, epochs=1, seed=0)


def test_eval_batches_pad_the_last_batch_and_mask_it() -> None:
    batches = list(eval_batches(_split(10), batch_size=4))
    assert [b["inputs"].shape for b in batches] == [(4, 1)] * 3
    assert [int(b["mask"].sum()) for b in batches] == [4, 4, 2]
    labels = np.concatenate([b["labels"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(labels, np.arange(10))


def test_prepared_catalog_dataset_is_read_through_the_catalog_path(data_dir) -> None:
    # The bundled builders are registered TFDS datasets too; once prepared, asking for one by
    # its TFDS name goes through the catalog branch (no build) and must read the same data.
    through_catalog = load_tfds("jaxtrain_breast_cancer", data_dir)
    bundled = load_tfds("breast_cancer", data_dir)
    np.testing.assert_array_equal(
        through_catalog.splits["train"].inputs, bundled.splits["train"].inputs
    )
    assert through_catalog.class_names == bundled.class_names
