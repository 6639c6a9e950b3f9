"""Data preparation on real bundled data with planted defects: every rule finds exactly what
was planted, statistics are fitted on train only and reused, splits keep groups apart,
confident learning finds flipped labels, the report says it all."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.utils.class_weight import compute_class_weight

from jaxtrain.config import ConfigError, DataConfig, load_config
from jaxtrain.config.prepare import PrepareConfig
from jaxtrain.data import (
    DatasetError,
    find_label_errors,
    fold_ids,
    grouped_split,
    kfold_indices,
    prepare_data,
    write_data_report,
)
from jaxtrain.data.tabular import load_table
from tests.support import CONFIGS, ROOT

WINE_CSV = ROOT / "jaxtrain" / "data" / "files" / "wine_defects.csv"
CULTIVARS = ("barolo", "grignolino", "barbera")


def planted_wine(seed: int = 0) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """scikit-learn's wine table (178 rows) as a CSV-ready frame with known defects.

    Columns: ``id``, ``vineyard`` (30 groups), ``cellar`` (categorical), 13 measurements,
    ``cultivar`` (the label). Planted, each on its own rows: 8 missing numbers and 2
    missing cellars; 2 alcohol values outside [10, 16], 1 infinite malic acid, 1 unknown
    cultivar; 6 flipped labels; then appended: 5 exact copies, 3 copies with another label
    (conflicts) and 4 copies with proline moved by 0.004 (near-duplicates at 2 decimals).
    Returns the frame and the planted row numbers per defect.
    """
    wine = load_wine()
    rng = np.random.default_rng(seed)
    names = [n.replace("od280/od315_of_diluted_wines", "od280_od315") for n in wine.feature_names]
    frame = pd.DataFrame(wine.data, columns=names)
    frame.insert(0, "cellar", rng.choice(["oak", "steel", "clay"], len(frame)))
    frame.insert(0, "vineyard", [f"v{v:02d}" for v in rng.integers(0, 30, len(frame))])
    frame.insert(0, "id", [f"w{i:04d}" for i in range(len(frame))])
    frame["cultivar"] = np.array(CULTIVARS, object)[wine.target]
    order = rng.permutation(len(frame))
    take = iter(np.split(order, np.cumsum([8, 2, 2, 1, 1, 6, 5, 3, 4]))[:-1])
    planted = {
        k: sorted(int(i) for i in next(take))
        for k in (
            "missing_numbers",
            "missing_cellar",
            "out_of_range",
            "infinite",
            "unknown_label",
            "flipped",
            "copied",
            "conflicting",
            "near",
        )
    }
    frame = frame.astype({"magnesium": float, "proline": float})
    for i, column in zip(planted["missing_numbers"], ["magnesium", "hue"] * 4, strict=True):
        frame.loc[i, column] = np.nan
    frame.loc[planted["missing_cellar"], "cellar"] = None
    frame.loc[planted["out_of_range"], "alcohol"] = [1.3, 140.0]
    frame.loc[planted["infinite"], "malic_acid"] = np.inf
    frame.loc[planted["unknown_label"], "cultivar"] = "nebbiolo"
    for i in planted["flipped"]:
        frame.loc[i, "cultivar"] = CULTIVARS[(CULTIVARS.index(frame.loc[i, "cultivar"]) + 1) % 3]
    copies = frame.loc[planted["copied"]].copy()
    conflicting = frame.loc[planted["conflicting"]].copy()
    conflicting["cultivar"] = [
        CULTIVARS[(CULTIVARS.index(c) + 2) % 3] for c in conflicting["cultivar"]
    ]
    near = frame.loc[planted["near"]].copy()
    near["proline"] += 0.004
    extra = pd.concat([copies, conflicting, near], ignore_index=True)
    extra["id"] = [f"w{len(frame) + i:04d}" for i in range(len(extra))]
    return pd.concat([frame, extra], ignore_index=True), planted


@pytest.fixture(autouse=True)
def _from_repo_root(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # configs name their CSV relative to the repo root


def _wine(*overrides: str, label_errors: str = "off"):
    """csv_cleaning.yaml's data section, with overrides (label errors off unless asked)."""
    extra = [f"data.prepare.label_errors.action={label_errors}", *overrides]
    return load_config(CONFIGS / "csv_cleaning.yaml", extra).data


def _csv(frame: pd.DataFrame, tmp_path: Path, name: str = "table.csv") -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def test_shipped_csv_is_the_planted_wine_table(tmp_path) -> None:
    frame, _ = planted_wine()
    shipped = pd.read_csv(WINE_CSV)
    pd.testing.assert_frame_equal(shipped, pd.read_csv(_csv(frame, tmp_path)))
    assert len(shipped) == 190


def test_csv_cleaning_config_finds_exactly_the_planted_defects() -> None:
    _, planted = planted_wine()
    config = load_config(CONFIGS / "csv_cleaning.yaml").data
    data = prepare_data(config)
    report = data.report
    assert report.rows_in == 190
    invalid = report.step("invalid")
    bad = planted["out_of_range"] + planted["infinite"] + planted["unknown_label"]
    assert invalid["rows"] == sorted(bad) and (invalid["rows_in"], invalid["rows_out"]) == (
        190,
        186,
    )
    assert invalid["columns"] == {
        "malic_acid: not a finite number": 1,
        "alcohol: outside [10.0, 16.0]": 2,
        "cultivar: missing or not in the label set": 1,
    }
    missing = report.step("missing")
    assert missing["rows"] == sorted(planted["missing_numbers"] + planted["missing_cellar"])
    assert missing["columns"] == {"magnesium": 4, "hue": 4, "cellar": 2}
    assert missing["rows_out"] == 186  # imputed, not dropped
    assert report.step("duplicates")["rows"] == list(range(178, 183))  # the 5 appended copies
    conflict = report.step("conflicts")
    assert conflict["rows"] == sorted(planted["conflicting"] + [183, 184, 185])
    assert len(conflict["groups"]) == 3 and conflict["rows_out"] == 175
    near = report.step("near_duplicates")
    assert near["rows"] == [186, 187, 188, 189] and near["first_rows"] == planted["near"]
    assert near["rows_out"] == 171
    suspects = report.step("label_errors")
    train = set(_source_rows(data, config, "train").tolist())
    flipped_in_train = set(planted["flipped"]) & train
    assert flipped_in_train <= set(suspects["rows"])  # every flipped label in train is found
    assert len(flipped_in_train) == 4 and suspects["found"] == 7  # measured: 4 of 7 flipped
    assert sum(data.sizes().values()) == 171 - suspects["found"]
    assert report.leakage["found"] == 0
    assert data.feature_names[-3:] == ("cellar=clay", "cellar=oak", "cellar=steel")
    assert "magnesium_missing" in data.feature_names


def test_invalid_values_are_rejected_naming_the_column() -> None:
    with pytest.raises(DatasetError, match=r"data.prepare.invalid: column 'malic_acid'.*4 inv"):
        prepare_data(_wine("data.prepare.invalid=error"))
    config = _wine("data.prepare.invalid=error", "data.prepare.ranges={alcohol: [20, 30]}")
    with pytest.raises(DatasetError, match="data.prepare.invalid"):
        prepare_data(config)
    with pytest.raises(DatasetError, match=r"data.prepare.ranges: 'alcool' is not a numeric"):
        prepare_data(_wine("data.prepare.ranges={alcool: [10, 16]}"))


def test_missing_values_fail_by_default_or_drop_their_rows() -> None:
    with pytest.raises(DatasetError, match=r"data.prepare.missing: column 'magnesium' has 4"):
        prepare_data(_wine("data.prepare.missing=error"))
    data = prepare_data(_wine("data.prepare.missing=drop", "data.prepare.add_indicator=false"))
    step = data.report.step("missing")
    assert (step["found"], step["rows_in"] - step["rows_out"]) == (10, 10)
    assert sum(data.sizes().values()) == 171 - 10


def test_imputation_is_fitted_on_train_only_and_reused_from_stats(monkeypatch) -> None:
    config = _wine("data.prepare.missing=mean", label_errors="drop")
    data = prepare_data(config)
    frame = pd.read_csv(WINE_CSV)
    train = frame.iloc[_source_rows(data, config, "train")]
    assert data.fitted["imputation"]["values"]["hue"] == pytest.approx(train["hue"].mean())
    assert data.fitted["imputation"]["values"]["hue"] != pytest.approx(frame["hue"].mean())

    def no_refit(*args, **kwargs):
        raise AssertionError("label errors must come from the stored statistics")

    monkeypatch.setattr("jaxtrain.data.label_errors.find_label_errors", no_refit)
    again = prepare_data(config, stats=json.loads(json.dumps(data.stats())))
    for name, split in data.splits.items():
        np.testing.assert_array_equal(again.splits[name].inputs, split.inputs)
        np.testing.assert_array_equal(again.splits[name].labels, split.labels)
    stats = data.stats()
    stats["prepare"]["imputation"]["values"]["hue"] = 100.0  # wrong on purpose: it is used
    changed = prepare_data(config, stats=stats)
    assert any(
        not np.array_equal(changed.splits[name].inputs, split.inputs)
        for name, split in data.splits.items()
    )


def _source_rows(data, config, split: str) -> np.ndarray:
    """Source rows of ``split`` before label errors are dropped: rebuilt from the
    deterministic cleaning and split."""
    from jaxtrain.data.clean import apply_rules
    from jaxtrain.data.dataset import _read_table, cleaning_rules, split_rows

    table, _, task, _ = _read_table(config, {})
    table, _ = apply_rules(table, cleaning_rules(config.prepare, task))
    rows = dict(split_rows(table, {"validation": 0.15, "test": 0.2}, "grouped", config))
    return table.rows[rows[split]]


def test_grouped_split_keeps_every_vineyard_on_one_side() -> None:
    frame = pd.read_csv(WINE_CSV)
    parts = grouped_split(frame["vineyard"].to_numpy(), {"validation": 0.15, "test": 0.2}, 0)
    seen = [set(frame["vineyard"].iloc[rows]) for rows in parts.values()]
    assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1 :])
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(frame)))
    assert abs(len(parts["test"]) - 0.2 * len(frame)) <= 12  # within about one vineyard
    folds = list(kfold_indices(len(frame), 5, 0, groups=frame["vineyard"].to_numpy()))
    for train, held_out in folds:
        assert not set(frame["vineyard"].iloc[train]) & set(frame["vineyard"].iloc[held_out])
    assert sorted(np.concatenate([h for _, h in folds]).tolist()) == list(range(len(frame)))


def test_stratified_folds_hold_each_class_evenly() -> None:
    labels = load_digits().target
    folds = fold_ids(len(labels), 5, seed=0, labels=labels)
    per_fold = np.bincount(folds, minlength=5)
    assert per_fold.max() - per_fold.min() <= 1
    for cls in range(10):
        counts = np.bincount(folds[labels == cls], minlength=5)
        assert counts.max() - counts.min() <= 1


def test_unknown_categories_are_ignored_dropped_or_refused(tmp_path) -> None:
    frame, _ = planted_wine()
    frame = frame.iloc[:178].dropna().copy()  # the clean rows: nothing removed before the split
    frame = frame[~frame["cultivar"].eq("nebbiolo") & frame["alcohol"].between(10, 16)]
    frame = frame[np.isfinite(frame["malic_acid"])].reset_index(drop=True)
    parts = grouped_split(frame["vineyard"].to_numpy(), {"validation": 0.15, "test": 0.2}, 0)
    unseen = parts["test"][:3]
    frame.loc[unseen, "cellar"] = "amphora"
    path = _csv(frame, tmp_path)
    base = [f"data.path={path}", "data.prepare.near_duplicates.action=off"]
    dropped = prepare_data(_wine(*base, "data.unknown_categories=drop"))
    step = dropped.report.step("unknown_categories")
    assert (step["found"], step["columns"], step["rows_in"] - step["rows_out"]) == (
        3,
        {"test.cellar": 3},
        3,
    )
    ignored = prepare_data(_wine(*base, "data.unknown_categories=ignore"))
    assert ignored.sizes()["test"] == dropped.sizes()["test"] + 3
    with pytest.raises(DatasetError, match=r"column 'cellar': category 'amphora' in the test"):
        prepare_data(_wine(*base, "data.unknown_categories=error"))
    ordinal = prepare_data(_wine(*base, "data.encoding=ordinal", "data.normalize=none"))
    column = ordinal.feature_names.index("cellar")
    assert (ordinal.splits["test"].inputs[:, column] == -1).sum() == 3


def test_leakage_between_splits_is_reported_or_refused_on_iris() -> None:
    # scikit-learn's iris holds one real duplicate (rows 101 and 142): the split separates it.
    data = prepare_data(DataConfig(name="iris"))
    assert data.report.step("duplicates")["found"] == 1
    assert data.report.leakage["found"] == 1
    assert data.report.leakage["pairs"] == {"train/test": {"examples": 1, "rows": [[67, 70]]}}
    with pytest.raises(DatasetError, match="data.prepare.leakage: 1 example"):
        prepare_data(DataConfig(name="iris", prepare=PrepareConfig(leakage="error")))
    fixed = prepare_data(
        DataConfig(name="iris", prepare=PrepareConfig(leakage="error", duplicates="drop"))
    )
    assert sum(fixed.sizes().values()) == 149


def test_near_duplicate_images_within_an_l2_distance_are_found() -> None:
    from jaxtrain.data.clean import apply_rules, exact_duplicates, near_duplicates
    from jaxtrain.data.sources import ArraySplit, RawDataset
    from jaxtrain.data.tabular import table_from_raw

    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., None]
    rng = np.random.default_rng(0)
    sources = rng.choice(len(images), 12, replace=False)
    near = images[sources[:8]].copy()
    near[:, 3, 3, 0] = np.where(near[:, 3, 3, 0] < 16, near[:, 3, 3, 0] + 1, 15)  # 1 grey level
    inputs = np.concatenate([images, near, images[sources[8:]]])  # 8 near copies, 4 exact
    labels = np.concatenate([digits.target, digits.target[sources]]).astype(np.int32)
    raw = RawDataset("digits", {"train": ArraySplit(inputs, labels)}, tuple("0123456789"))
    table, records = apply_rules(
        table_from_raw(raw), [exact_duplicates("drop"), near_duplicates("drop", 0, 1.5)]
    )
    assert records[0]["rows"] == list(range(1805, 1809))
    assert records[1]["found"] == 8 and records[1]["rows"] == list(range(1797, 1805))
    assert records[1]["first_rows"] == sorted(sources[:8].tolist()) or set(
        records[1]["first_rows"]
    ) == set(sources[:8].tolist())
    assert len(table) == 1797


def test_class_weights_match_scikit_learn_on_the_training_split() -> None:
    data = prepare_data(_wine())
    labels = data.splits["train"].labels
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    np.testing.assert_allclose(data.class_weights, expected, rtol=1e-6)
    assert data.report.class_balance["train"] == {
        name: int((labels == k).sum()) for k, name in enumerate(CULTIVARS)
    }
    assert set(data.report.class_balance) == {"train", "validation", "test"}
    assert prepare_data(DataConfig(name="wine")).class_weights is None


def test_confident_learning_finds_flipped_digit_labels() -> None:
    digits = load_digits()
    labels = digits.target.copy()
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(labels), 89, replace=False)  # 5% of 1797
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, len(flipped))) % 10
    start = time.perf_counter()
    suspects = find_label_errors(digits.data, labels, 10, folds=5, seed=0)
    found = set(suspects.indices.tolist()) & set(flipped.tolist())
    recall, precision = len(found) / len(flipped), len(found) / len(suspects.indices)
    print(
        f"confident learning on digits: recall {recall:.3f} precision {precision:.3f} "
        f"({len(suspects.indices)} suspects, {time.perf_counter() - start:.1f}s)"
    )
    assert recall >= 0.8 and precision >= 0.75  # measured: 0.865 and 0.828
    truth = digits.target[suspects.indices]
    flagged = np.isin(suspects.indices, flipped)
    assert (suspects.predicted[flagged] == truth[flagged]).mean() > 0.9  # names the true class
    assert np.all(np.diff(suspects.margin) <= 0)


def test_vmapped_folds_equal_folds_trained_one_by_one() -> None:
    import jax
    import jax.numpy as jnp

    from jaxtrain.data.label_errors import make_fit, out_of_fold_probabilities, predict_logits

    x, y = load_breast_cancer(return_X_y=True)
    folds = fold_ids(len(y), 3, seed=0, labels=y)
    options = {"hidden": 0, "steps": 50, "learning_rate": 0.05, "l2": 1e-3}
    together = out_of_fold_probabilities(x, y, 2, folds, seed=0, **options)
    z = (x - x.mean(0)) / x.std(0)
    keys = jax.random.split(jax.random.key(0), 3)
    fit = jax.jit(make_fit(2, **options))
    for k in range(3):
        params = fit(
            keys[k],
            jnp.asarray(z, jnp.float32),
            jnp.asarray(y),
            jnp.asarray(folds != k, jnp.float32),
        )
        alone = jax.nn.softmax(predict_logits(params, jnp.asarray(z[folds == k], jnp.float32)))
        np.testing.assert_allclose(together[folds == k], alone, atol=2e-5)


def test_parquet_reads_like_csv(tmp_path) -> None:
    frame = pd.read_csv(WINE_CSV)
    frame.to_parquet(tmp_path / "wine.parquet")
    from_csv = prepare_data(_wine())
    from_parquet = prepare_data(_wine(f"data.path={tmp_path / 'wine.parquet'}"))
    for name, split in from_csv.splits.items():
        np.testing.assert_array_equal(from_parquet.splits[name].inputs, split.inputs)


def test_regression_table_imputes_and_standardises_targets(tmp_path) -> None:
    from sklearn.datasets import load_diabetes

    diabetes = load_diabetes(as_frame=True).frame
    diabetes.loc[[3, 30, 300], "bmi"] = np.nan
    config = DataConfig(
        name="diabetes_csv",
        path=_csv(diabetes, tmp_path),
        label_column="target",
        task="regression",
        prepare=PrepareConfig(missing="median"),
    )
    data = prepare_data(config)
    assert data.task == "regression" and data.report.split_method == "random"
    assert data.report.step("missing")["columns"] == {"bmi": 3}
    assert sum(data.sizes().values()) == 442
    np.testing.assert_allclose(data.splits["train"].labels.mean(), 0, atol=1e-5)


def test_data_report_is_written_as_json_and_markdown(tmp_path) -> None:
    data = prepare_data(load_config(CONFIGS / "csv_cleaning.yaml").data)
    write_data_report(tmp_path, data.report)
    written = json.loads((tmp_path / "data_report.json").read_text())
    assert [s["rule"] for s in written["steps"]] == [
        "invalid",
        "missing",
        "duplicates",
        "conflicts",
        "near_duplicates",
        "unknown_categories",
        "label_errors",
    ]
    text = (tmp_path / "data_report.md").read_text()
    for needle in (
        "| duplicates | drop | 5 | 186 | 181 |",
        "## Label suspects",
        "## Class balance",
        "| magnesium | 4 |",
        "No example sits in two splits.",
    ):
        assert needle in text


def test_defaults_leave_bundled_data_unchanged() -> None:
    from jaxtrain.data.prepare import fit_normalizer
    from jaxtrain.data.sources import load_tfds
    from jaxtrain.data.split import stratified_split

    raw = load_tfds("breast_cancer").splits["train"]
    parts = stratified_split(raw.labels, {"validation": 0.15, "test": 0.2}, seed=0)
    normalizer = fit_normalizer(raw.inputs[parts["train"]], "standard")
    data = prepare_data(DataConfig(name="breast_cancer"))
    for name, rows in parts.items():
        np.testing.assert_array_equal(data.splits[name].inputs, normalizer(raw.inputs[rows]))
        np.testing.assert_array_equal(data.splits[name].labels, raw.labels[rows])
    assert [s["found"] for s in data.report.steps] == [0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.prepare.duplicatez=drop", r"data.prepare.duplicatez .*: unknown key"),
        ("data.prepare.missing=constant", r"data.prepare.fill_value\b.*: required"),
        ("data.label_column=null", r"data.label_column\b.*: required"),
        ("data.prepare.near_duplicates.action=maybe", "data.prepare.near_duplicates.action"),
    ],
)
def test_bad_prepare_settings_fail_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "csv_cleaning.yaml", [override])


def test_table_keys_without_a_table_are_refused() -> None:
    with pytest.raises(ValueError, match="label_column: only used with a .csv/.parquet"):
        DataConfig(name="wine", label_column="y")


def test_file_errors_name_the_key(tmp_path) -> None:
    with pytest.raises(DatasetError, match="data.label_column: no column 'kind'"):
        load_table(WINE_CSV, "kind")
    with pytest.raises(DatasetError, match="data.path: .*missing.csv does not exist"):
        load_table(tmp_path / "missing.csv", "y")
    with pytest.raises(DatasetError, match="data.categorical_columns: column 'cellar' holds text"):
        load_table(WINE_CSV, "cultivar", categorical_columns=("vineyard",), id_column="id")


def test_images_with_missing_pixels_cannot_be_imputed_silently() -> None:
    from jaxtrain.data.clean import fit_imputer
    from jaxtrain.data.sources import ArraySplit, RawDataset
    from jaxtrain.data.tabular import table_from_raw

    images = load_digits().images[:20, :, :, None].astype(np.float32)
    images[[3, 7], 2, 2, 0] = np.nan
    raw = RawDataset("digits", {"train": ArraySplit(images, np.zeros(20, np.int32))}, ("0",))
    table = table_from_raw(raw)
    with pytest.raises(DatasetError, match=r"data.prepare.missing: median .* 2 row\(s\)"):
        fit_imputer(table, "median", None, False)
    assert fit_imputer(table, "drop", None, False) == {"values": {}, "indicators": []}
