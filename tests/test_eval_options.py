"""Evaluation as people use it: ``jaxtrain eval RUN --split --checkpoint --data
--predictions``; which source rows went to which split; leakage warned on the console."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.metrics import accuracy_score, f1_score, log_loss

from jaxtrain.cli import main


def _iris_table(path: Path) -> pd.DataFrame:
    """Iris with a categorical column and missing cells, so that scoring a file needs the
    run's imputation, categories and normaliser."""
    iris = load_iris(as_frame=True)
    frame = iris.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["species"] = [iris.target_names[t] for t in frame.pop("target")]
    rng = np.random.default_rng(0)
    frame["site"] = rng.choice(["north", "south", "east"], len(frame))
    frame.loc[rng.choice(len(frame), 12, replace=False), "sepal_width"] = np.nan
    frame.to_csv(path, index=False)
    return frame


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    from jaxtrain.runner import train

    root = tmp_path_factory.mktemp("eval_options")
    frame = _iris_table(root / "iris.csv")
    config = root / "iris.yaml"
    config.write_text(
        f"""
name: iris_table
data: {{name: iris_table, path: {root / "iris.csv"}, label_column: species, batch_size: 16,
        prepare: {{missing: median, add_indicator: true}}}}
model: {{name: mlp, hidden: [16]}}
optimizer: {{name: adamw, learning_rate: 0.01}}
train: {{epochs: 3, log_every: 5, checkpoint: {{keep: 3}}}}
"""
    )
    result = train(config, [], runs_dir=root / "runs", progress=False, report=False)
    return result.run_dir, frame, root


def test_the_run_stores_which_source_row_went_to_which_split(table_run) -> None:
    run_dir, frame, _ = table_run
    rows = pd.read_csv(run_dir / "split_rows.csv")
    assert list(rows.columns) == ["row", "split"]
    assert sorted(rows["row"]) == list(range(len(frame)))  # every row once (nothing dropped)
    sizes = json.loads((run_dir / "data_report.json").read_text())["splits"]
    assert rows["split"].value_counts().to_dict() == sizes


def test_eval_data_on_the_training_rows_reproduces_the_train_metrics(
    table_run, tmp_path, capsys
) -> None:
    run_dir, frame, _ = table_run
    rows = pd.read_csv(run_dir / "split_rows.csv")
    train_rows = rows.loc[rows["split"] == "train", "row"].to_numpy()
    frame.iloc[train_rows].to_csv(tmp_path / "train.csv", index=False)
    assert main(["eval", str(run_dir), "--split", "train"]) == 0
    own = json.loads((run_dir / "eval_train_best.json").read_text())["train"]
    predictions = tmp_path / "predictions.csv"
    code = main(["eval", str(run_dir), "--data", str(tmp_path / "train.csv"),
                 "--predictions", str(predictions)])  # fmt: skip
    assert code == 0
    scored = json.loads((run_dir / "eval_data_train_best.json").read_text())["metrics"]
    assert scored["confusion_matrix"] == own["confusion_matrix"]
    assert scored["accuracy"] == pytest.approx(own["accuracy"], abs=1e-7)
    assert scored["loss"] == pytest.approx(own["loss"], rel=1e-5)
    # The per-example file against scikit-learn, from its own columns.
    table = pd.read_csv(predictions)
    assert list(table["row"]) == list(range(len(train_rows)))
    assert list(table["label"]) == list(frame.iloc[train_rows]["species"])
    probs = table[["p_setosa", "p_versicolor", "p_virginica"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    names = np.array(["setosa", "versicolor", "virginica"])
    assert list(names[probs.argmax(axis=1)]) == list(table["prediction"])
    assert accuracy_score(table["label"], table["prediction"]) == pytest.approx(scored["accuracy"])
    f1 = f1_score(table["label"], table["prediction"], average="macro")
    assert f1 == pytest.approx(scored["f1_macro"], abs=1e-6)
    assert log_loss(table["label"], probs, labels=names) == pytest.approx(scored["loss"], rel=1e-4)
    assert "data_accuracy" in capsys.readouterr().out


def test_checkpoints_by_name_or_step_and_unlabelled_rows(table_run, tmp_path, capsys) -> None:
    run_dir, frame, _ = table_run
    kept = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert main(["eval", str(run_dir), "--checkpoint", "latest", "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == kept[-1]
    assert main(["eval", str(run_dir), "--checkpoint", str(kept[0]), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == kept[0]
    assert main(["eval", str(run_dir), "--checkpoint", "99999"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no step 99999" in err
    frame.drop(columns=["species"]).head(7).to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "p.csv"
    assert main(["eval", str(run_dir), "--data", str(tmp_path / "new.csv"),
                 "--predictions", str(out)]) == 0  # fmt: skip
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 7 and all(r["label"] == "" and r["prediction"] for r in rows)


def test_a_file_without_the_run_columns_is_a_one_line_error(table_run, tmp_path, capsys) -> None:
    run_dir, frame, _ = table_run
    frame.drop(columns=["site"]).to_csv(tmp_path / "fewer.csv", index=False)
    assert main(["eval", str(run_dir), "--data", str(tmp_path / "fewer.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "do not match the run's" in err and "site=" in err
    bad = frame.copy()
    bad.loc[3, "species"] = "rose"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    assert main(["eval", str(run_dir), "--data", str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err
    assert "'species'" in err and "'rose'" in err and "row 3" in err


def test_examples_in_two_splits_are_warned_on_the_console(tmp_path, capfd) -> None:
    from jaxtrain.config import load_config
    from jaxtrain.runner.checks import checked_data
    from jaxtrain.runner.run_dirs import start_run

    frame = _iris_table(tmp_path / "iris.csv")
    pd.concat([frame, frame]).to_csv(tmp_path / "twice.csv", index=False)  # every row twice
    config_path = tmp_path / "c.yaml"
    config_path.write_text(
        f"name: twice\ndata: {{name: t, path: {tmp_path / 'twice.csv'}, label_column: species,"
        " prepare: {missing: median}}\n"
    )
    config = load_config(config_path)
    run_dir = start_run(config, tmp_path / "runs", checked_data(config, config_path))
    err = capfd.readouterr().err
    assert "warning:" in err and "sit in two splits" in err and "data_report.md" in err
    report = json.loads((run_dir / "data_report.json").read_text())
    assert str(report["leakage"]["found"]) in err
