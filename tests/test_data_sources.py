"""Data as people have it: .npz arrays, structured .npy tables, a table's own fixed split
(a split column or separate files), registered and import-path datasets, DataFrames, TFDS /
grain random-access sources; no pickle is ever loaded; errors list what is supported."""

from __future__ import annotations

from pathlib import Path

import grain
import numpy as np
import pandas as pd
import pytest

from jaxtrain import registry
from jaxtrain.config import ConfigError, DataConfig, validate
from jaxtrain.data import DatasetError, prepare_data
from jaxtrain.data.arrays import as_source


def _points(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    return rng.normal(0, 1, (n, 4)) + 3 * labels[:, None], labels


def _data(**keys) -> DataConfig:
    return validate({"name": "x", "data": keys}, "c.yaml").data


def test_npz_arrays_with_their_own_test_split_are_used_as_they_are(tmp_path: Path) -> None:
    x, y = _points()
    xt, yt = _points(15, seed=1)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    data = prepare_data(_data(path=str(tmp_path / "d.npz"), normalize="none"))
    assert data.name == "d" and data.class_names == ("0", "1", "2")
    assert data.split_origin == {"train": "source", "validation": "carved from train",
                                 "test": "source"}  # fmt: skip
    np.testing.assert_array_equal(data.splits["test"].inputs, xt.astype(np.float32))
    np.testing.assert_array_equal(data.splits["test"].labels, yt)
    assert len(data.splits["train"]) + len(data.splits["validation"]) == 60


def test_npz_float_labels_are_regression_and_a_separate_test_file_is_the_test_split(
    tmp_path: Path,
) -> None:
    x, _ = _points()
    target = x @ np.array([1.0, -2.0, 0.5, 0.0])
    np.savez(tmp_path / "train.npz", inputs=x, labels=target)
    np.savez(tmp_path / "test.npz", inputs=x[:10], labels=target[:10])
    data = prepare_data(
        _data(path=str(tmp_path / "train.npz"), test_path=str(tmp_path / "test.npz"))
    )
    assert data.task == "regression" and len(data.splits["test"]) == 10
    assert data.split_origin["test"] == "source"


def test_a_split_column_gives_a_tables_fixed_test_set(tmp_path: Path) -> None:
    x, y = _points()
    split = np.where(np.arange(60) < 12, "test", "train")
    frame = pd.DataFrame(x, columns=list("abcd")).assign(label=y, fold=split)
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = prepare_data(
        _data(path=str(tmp_path / "t.csv"), label_column="label", split_column="fold")
    )
    assert data.feature_names == ("a", "b", "c", "d")  # the split column is not a feature
    assert len(data.splits["test"]) == 12
    np.testing.assert_array_equal(np.sort(data.rows["test"]), np.arange(12))
    frame.assign(fold=np.where(np.arange(60) == 5, "holdout", split)).to_csv(
        tmp_path / "bad.csv", index=False
    )
    with pytest.raises(DatasetError, match="split_column: row 5 .* says 'holdout'"):
        prepare_data(
            _data(path=str(tmp_path / "bad.csv"), label_column="label", split_column="fold")
        )


def test_separate_validation_and_test_files_of_a_table(tmp_path: Path) -> None:
    x, y = _points()
    frame = pd.DataFrame(x, columns=list("abcd")).assign(label=y)
    frame[:40].to_csv(tmp_path / "train.csv", index=False)
    frame[40:50].to_parquet(tmp_path / "val.parquet")
    frame[40:50].to_csv(tmp_path / "val.csv", index=False)
    frame[50:].to_csv(tmp_path / "test.csv", index=False)
    data = prepare_data(
        _data(
            path=str(tmp_path / "train.csv"),
            validation_path=str(tmp_path / "val.csv"),
            test_path=str(tmp_path / "test.csv"),
            label_column="label",
        )
    )
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 40, "validation": 10,
                                                            "test": 10}  # fmt: skip
    assert set(data.split_origin.values()) == {"source"}
    with pytest.raises(ConfigError, match="test_path: a split file must be .* same format"):
        _data(path=str(tmp_path / "train.csv"), test_path="x.npz", label_column="label")
    frame[50:].drop(columns="d").to_csv(tmp_path / "narrow.csv", index=False)
    with pytest.raises(DatasetError, match=r"test_path: its columns differ .*\['d'\]"):
        prepare_data(
            _data(
                path=str(tmp_path / "train.csv"),
                test_path=str(tmp_path / "narrow.csv"),
                label_column="label",
            )  # fmt: skip
        )


def test_a_structured_npy_file_is_a_table_and_a_plain_one_is_refused(tmp_path: Path) -> None:
    x, y = _points()
    kinds = np.array(["p", "q", "r"])[y]
    table = np.rec.fromarrays([x[:, 0], x[:, 1], kinds], names=["a", "b", "kind"])
    np.save(tmp_path / "t.npy", table)
    data = prepare_data(_data(path=str(tmp_path / "t.npy"), label_column="kind"))
    assert data.class_names == ("p", "q", "r") and data.feature_names == ("a", "b")
    np.save(tmp_path / "plain.npy", x)
    with pytest.raises(DatasetError, match="plain float64 array .* structured array"):
        prepare_data(_data(path=str(tmp_path / "plain.npy"), label_column="kind"))


def test_no_pickle_is_ever_loaded(tmp_path: Path) -> None:
    x, _ = _points()
    np.savez(tmp_path / "objects.npz", x=x, y=np.array([{"a": 1}] * 60, dtype=object))
    with pytest.raises(DatasetError, match="object arrays, which only pickle can load"):
        prepare_data(_data(path=str(tmp_path / "objects.npz")))
    with pytest.raises(ConfigError, match=r"data.path: 'd.pkl' is a pickle.*Supported data.path"):
        _data(path="d.pkl")


def test_unreadable_files_name_the_formats_that_are_supported(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(DatasetError, match=r"UTF-8 text.*Supported data.path formats: .csv"):
        prepare_data(_data(path=str(tmp_path / "blob.bin")))
    np.savez(tmp_path / "odd.npz", features=np.zeros((3, 2)))
    with pytest.raises(DatasetError, match=r"holds \['features'\]; expected inputs and labels"):
        prepare_data(_data(path=str(tmp_path / "odd.npz")))


def test_data_name_is_optional_with_a_path_and_required_without() -> None:
    assert _data(path="some/where/points.csv", label_column="y").name == "points"
    with pytest.raises(ConfigError, match="data.name: required key is missing"):
        _data(batch_size=8)


def test_a_registered_dataset_and_an_import_path_dataset(tmp_path: Path, monkeypatch) -> None:
    x, y = _points()
    registry.register_dataset("test_points", lambda: {"x": x, "y": y}, replace=True)
    try:
        data = prepare_data(_data(name="test_points", normalize="none"))
        assert data.num_classes == 3 and sum(data.sizes().values()) == 60
    finally:
        registry.unregister("dataset", "test_points")
    (tmp_path / "my_points.py").write_text(
        "import numpy as np\n\ndef load(config):\n"
        "    return {'train': (np.ones((20, 2)), np.arange(20) % 2),\n"
        "            'test': (np.zeros((6, 2)), np.arange(6) % 2)}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = prepare_data(_data(name="my_points:load", validation_fraction=0.25))
    assert len(data.splits["test"]) == 6 and data.split_origin["test"] == "source"
    with pytest.raises(ConfigError, match="data.name: 'my_points:nope': module 'my_points' has"):
        _data(name="my_points:nope")


def test_frames_tfds_style_sources_and_grain_datasets_are_read_whole() -> None:
    x, y = _points()
    records = [{"image": x[i], "label": y[i]} for i in range(60)]
    source = grain.MapDataset.source(records)
    raw = as_source({"train": source, "test": records[:9]})
    assert raw.class_names == ("0", "1", "2") and len(raw.splits["test"]) == 9
    np.testing.assert_array_equal(raw.splits["train"].inputs, x)
    frames = as_source(pd.DataFrame({"a": [1.0, 2.0], "y": ["u", "v"]}))
    assert list(frames.frames) == ["train"]
    with pytest.raises(DatasetError, match=r"keys \['pixels', 'tag'\]; expected"):
        as_source([{"pixels": 1, "tag": 0}])
    with pytest.raises(DatasetError, match="has 60 inputs but 59 labels"):
        as_source((x, y[:-1]))
    with pytest.raises(DatasetError, match="expected \\(inputs, labels\\) arrays"):
        as_source(3.5)
