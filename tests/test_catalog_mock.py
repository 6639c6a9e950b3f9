"""The TFDS catalog offline: real catalog builders (mnist, cifar10) through ``jaxtrain train``.

A user with prepared data has the builder's metadata (features, label names, splits) in the
data directory and ``array_record`` files beside it. Here the metadata is the real
builder's own (its ``_info()``, with split sizes set and written as TFDS writes them), and
``tfds.testing.mock_data`` replaces the records with random examples of those features: the
code path from ``tfds.builder`` to the batches (feature dicts, image shapes, ClassLabel
names, the splits) runs as it would, held in memory and streamed, with no network.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxtrain.cli import main

EXAMPLES = 96
LABEL_NAMES = {
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                "ship", "truck"],
}  # fmt: skip


class _FakeSource:
    """A data source of random examples of ``features`` (what array_record would return)."""

    def __init__(self, features, count: int, seed: int):
        from tensorflow_datasets.testing.mocking import RandomFakeGenerator

        self._generator = RandomFakeGenerator(features, count, seed=seed)
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, key: int):
        return self._generator[int(key)]

    def __getitems__(self, keys):
        return [self[k] for k in keys]


def _fake_sources(builder, split=None, decoders=None, **kwargs):
    del decoders, kwargs
    names = list(builder.info.splits) if split is None else [split]
    sources = {n: _FakeSource(builder.info.features, EXAMPLES, seed=i) for i, n in enumerate(names)}
    return sources if split is None else sources[split]


@contextmanager
def prepared_catalog(name: str, data_dir: Path):
    """``name``'s real metadata in ``data_dir`` (train and test of EXAMPLES each), its records
    mocked."""
    builder = tfds.builder(name, data_dir=str(data_dir), try_gcs=False)
    splits = tfds.core.SplitDict(
        [
            tfds.core.SplitInfo(name=split, shard_lengths=[EXAMPLES], num_bytes=EXAMPLES * 1000)
            for split in ("train", "test")
        ]
    )
    builder.info.set_splits(splits)
    label = builder.info.features["label"]
    if name in LABEL_NAMES:  # a prepared cifar10 has them from its download (features.json)
        label.names = LABEL_NAMES[name]
    builder.info.set_file_format("array_record", override=True)
    Path(builder.data_dir).mkdir(parents=True, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)
    with tfds.testing.mock_data(
        num_examples=EXAMPLES, data_dir=str(data_dir), as_data_source_fn=_fake_sources
    ):
        yield builder


@pytest.mark.parametrize(
    ("name", "stream", "first_class"),
    [
        ("mnist", "true", "0"),
        pytest.param("cifar10", "false", "airplane", marks=pytest.mark.slow),
        pytest.param("mnist", "false", "0", marks=pytest.mark.slow),
        pytest.param("cifar10", "true", "airplane", marks=pytest.mark.slow),
    ],
)
def test_a_catalog_dataset_trains_through_jaxtrain_train(
    name, stream, first_class, tmp_path
) -> None:
    data_dir = tmp_path / "tfds"
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        f"""
name: {name}_mock
data: {{name: {name}, data_dir: "{data_dir}", batch_size: 16, stream: {stream},
        split: random, validation_fraction: 0.2}}
model: {{name: cnn, features: [4], dense: 8}}
optimizer: {{name: adam, learning_rate: 0.01}}
train: {{epochs: 1, log_every: 2}}
"""
    )
    with prepared_catalog(name, data_dir):
        runs = str(tmp_path / "runs")
        code = main(["train", str(config), "--runs-dir", runs, "--no-progress", "--no-report"])
    assert code == 0
    run_dir = next((tmp_path / "runs" / f"{name}_mock").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["training"]["steps"] == int(EXAMPLES * 0.8) // 16
    report = json.loads((run_dir / "data_report.json").read_text())
    assert report["splits"] == {"train": 77, "validation": 19, "test": EXAMPLES}
    assert list(report["class_balance"]["test"])[0] == first_class
    assert ("(streamed)" in report["source"]) == (stream == "true")
    sums = {split: sum(report["class_balance"][split].values()) for split in report["splits"]}
    assert sums == report["splits"]
    assert np.isfinite(metrics["test"]["loss"])


def test_an_unprepared_catalog_dataset_says_how_to_prepare_it(tmp_path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f'name: c\ndata: {{name: mnist, data_dir: "{tmp_path}"}}\n')
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "not prepared" in err and "file_format='array_record'" in err
