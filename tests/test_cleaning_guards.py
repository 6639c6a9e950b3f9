"""Cleaning never removes much of the data silently, and bad labels are named as written.

References: the share each rule drops is counted by hand from the planted rows (pandas on
the same frame), not read back from the code's own report.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from jaxtrain.config import ConfigError, DataConfig, load_config
from jaxtrain.config.prepare import PrepareConfig
from jaxtrain.data import DatasetError, prepare_data, write_data_report
from tests.support import CONFIGS


def _table(n: int = 200, copies: int = 0, seed: int = 0) -> pd.DataFrame:
    """n distinct rows of two classes, plus ``copies`` exact duplicates of the first rows."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "a": rng.standard_normal(n).round(6),
            "b": rng.standard_normal(n).round(6),
            "species": np.where(rng.random(n) < 0.5, "setosa", "virginica"),
        }
    )
    return pd.concat([frame, frame.iloc[:copies]], ignore_index=True)


def _config(path, **prepare) -> DataConfig:
    return DataConfig(
        name="guards",
        path=str(path),
        label_column="species",
        prepare=PrepareConfig(**prepare),
    )


def test_dropping_a_large_share_warns_and_is_reported(tmp_path, capsys):
    frame = _table(200, copies=50)  # 50 of 250 rows are copies: duplicates drops 20%
    frame.loc[[150, 160], "a"] = np.inf  # and invalid drops 2 of 250 (not copied rows)
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    data = prepare_data(_config(path, duplicates="drop", invalid="drop"))
    invalid_share = 2 / 250
    duplicate_share = 50 / 248  # of the rows the duplicates rule saw
    total = 1 - (1 - invalid_share) * (1 - duplicate_share)
    dropped = data.report.dropped
    assert dropped["rules"]["invalid"] == {"dropped": 2, "share": round(invalid_share, 6)}
    assert dropped["rules"]["duplicates"] == {"dropped": 50, "share": round(duplicate_share, 6)}
    assert dropped["share"] == pytest.approx(total, abs=1e-6)
    assert sum(data.sizes().values()) == 250 - 52
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"jaxtrain: warning: preparing {path} dropped")
    assert f"{total:.1%} of the training split" in err[0] and "duplicates 20.2%" in err[0]
    write_data_report(tmp_path, data.report)
    markdown = (tmp_path / "data_report.md").read_text()
    assert f"Dropped {total:.1%} of the training split" in markdown
    assert "max_drop_fraction = 0.5" in markdown
    on_disk = json.loads((tmp_path / "data_report.json").read_text())["dropped"]
    assert on_disk["rules"]["duplicates"]["dropped"] == 50


def test_small_drops_are_reported_without_a_warning(tmp_path, capsys):
    path = tmp_path / "t.csv"
    _table(200, copies=5).to_csv(path, index=False)
    data = prepare_data(_config(path, duplicates="drop"))
    assert data.report.dropped["rules"] == {"duplicates": {"dropped": 5, "share": 0.024390}}
    assert capsys.readouterr().err == ""


def test_dropping_past_the_cap_fails_naming_the_key_and_the_rules(tmp_path, capsys):
    frame = _table(100, copies=60)
    frame.loc[frame.index[-30:], "species"] = "virginica"  # half of the copies now conflict
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    config = _config(path, duplicates="drop", conflicts="drop", max_drop_fraction=0.2)
    with pytest.raises(DatasetError) as error:
        prepare_data(config)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("data.prepare.max_drop_fraction: cleaning would drop")
    assert "duplicates" in message and "conflicts" in message and "cap 0.2" in message
    # Raised before anything further happens; 1.0 switches the cap off.
    relaxed = _config(path, duplicates="drop", conflicts="drop", max_drop_fraction=1.0)
    assert prepare_data(relaxed).report.dropped["share"] > 0.2


@pytest.mark.parametrize("value", ["1.5", "-0.1", ".nan", "half"])
def test_max_drop_fraction_is_validated(value):
    with pytest.raises(ConfigError, match="max_drop_fraction"):
        load_config(CONFIGS / "csv_cleaning.yaml", [f"data.prepare.max_drop_fraction={value}"])


def test_an_out_of_set_label_names_the_column_and_the_value(tmp_path):
    frame = _table(40)
    frame.loc[5, "species"] = "unicorn"
    frame.loc[9, "species"] = "setosa "  # the same label after stripping: valid
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    config = DataConfig(
        name="labels", path=str(path), label_column="species", class_names=("setosa", "virginica")
    )
    with pytest.raises(DatasetError) as error:
        prepare_data(config)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("data.prepare.invalid: column 'species': ")
    assert "(first: row 5, value 'unicorn')" in message and "1 row(s)" in message


def test_a_missing_label_and_a_text_target_are_named(tmp_path):
    frame = _table(40)
    frame["price"] = np.linspace(1.0, 2.0, 40)
    frame = frame.astype({"price": object})
    frame.loc[3, "price"] = "n/a?"
    path = tmp_path / "t.csv"
    frame.drop(columns="species").to_csv(path, index=False)
    config = DataConfig(name="target", path=str(path), label_column="price", task="regression")
    with pytest.raises(DatasetError, match=r"column 'price': .*\(first: row 3, value 'n/a\?'\)"):
        prepare_data(config)
    frame = _table(40)
    frame.loc[2, "species"] = None
    frame.to_csv(path, index=False)
    config = DataConfig(name="labels", path=str(path), label_column="species")
    with pytest.raises(
        DatasetError, match=r"column 'species': .*\(first: row 2, value \(missing\)\)"
    ):
        prepare_data(config)


def test_the_cli_refuses_past_the_cap_with_exit_2_and_writes_nothing(tmp_path, capsys):
    from jaxtrain.cli import main

    runs = tmp_path / "runs"
    code = main([
        "train",
        str(CONFIGS / "csv_cleaning.yaml"),
        "data.prepare.max_drop_fraction=0.05",
        "data.prepare.label_errors.action=off",
        "--runs-dir",
        str(runs),
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "data.prepare.max_drop_fraction: cleaning would drop" in lines[0]
    assert "duplicates" in lines[0] and "Traceback" not in err
    assert not runs.exists()
