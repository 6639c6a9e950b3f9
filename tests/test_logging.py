"""Tests for the run-output layer: JSONL + TensorBoard metrics, plots and the markdown report."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml
from tensorboardX.proto import event_pb2

from jaxtrain.logging import (
    MetricWriter,
    plot_confusion_matrix,
    plot_learning_curves,
    read_metrics,
    truncate_after,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- an independent TFRecord reader: [len u64][masked crc32c(len)][data][masked crc32c(data)]


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _read_events(path: Path) -> list[event_pb2.Event]:
    data, offset, events = path.read_bytes(), 0, []
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
        assert length_crc == _masked_crc32c(header), f"bad length crc at {offset}"
        payload = data[offset + 12 : offset + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
        assert payload_crc == _masked_crc32c(payload), f"bad payload crc at {offset}"
        events.append(event_pb2.Event.FromString(payload))
        offset += 16 + length
    return events


def _scalars(run_dir: Path) -> dict[tuple[str, int], float]:
    files = sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert files, "no TensorBoard event file written"
    scalars = {}
    for file in files:
        for event in _read_events(file):
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = value.simple_value
    return scalars


# --- metrics.jsonl and TensorBoard


def test_jsonl_round_trip_writes_nan_as_null(tmp_path: Path) -> None:
    with MetricWriter(tmp_path) as writer:
        writer.write(1, "train", {"loss": 0.5, "accuracy": np.float32(0.25), "count": 3})
        writer.write(2, "validation", {"loss": float("nan"), "accuracy": float("inf")})
        writer.write(2, "train", {"loss": np.array(0.125)})

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == read_metrics(tmp_path)
    assert "NaN" not in lines[1] and "Infinity" not in lines[1]
    assert read_metrics(tmp_path) == [
        {"step": 1, "split": "train", "loss": 0.5, "accuracy": 0.25, "count": 3},
        {"step": 2, "split": "validation", "loss": None, "accuracy": None},
        {"step": 2, "split": "train", "loss": 0.125},
    ]


def test_jsonl_is_flushed_after_each_write(tmp_path: Path) -> None:
    writer = MetricWriter(tmp_path)
    writer.write(7, "train", {"loss": 1.0})
    assert read_metrics(tmp_path) == [{"step": 7, "split": "train", "loss": 1.0}]
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        writer.write(8, "train", {"loss": 1.0})


def test_write_rejects_reserved_names_and_non_scalars(tmp_path: Path) -> None:
    with MetricWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match="reserved"):
            writer.write(1, "train", {"step": 1.0})
        with pytest.raises(TypeError, match="scalar"):
            writer.write(1, "train", {"loss": np.ones(3)})
    assert read_metrics(tmp_path) == []


def test_truncate_after_drops_later_records_and_keeps_earlier_bytes(tmp_path: Path) -> None:
    with MetricWriter(tmp_path) as writer:
        for step in range(1, 7):
            writer.write(step, "train", {"loss": 1.0 / step})
            if step % 2 == 0:
                writer.write(step, "validation", {"loss": 2.0 / step})
    path = tmp_path / "metrics.jsonl"
    before = path.read_text().splitlines(keepends=True)

    truncate_after(tmp_path, 4)

    kept = [line for line in before if json.loads(line)["step"] <= 4]
    assert path.read_text() == "".join(kept)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 2, 3, 4, 4]
    assert not list(tmp_path.glob(".metrics.jsonl.*")), "temporary file left behind"

    # A resumed run appends after the kept records.
    with MetricWriter(tmp_path, purge_step=5) as writer:
        writer.write(5, "train", {"loss": 0.0})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 2, 3, 4, 4, 5]
    events = [e for f in (tmp_path / "tensorboard").glob("events.*") for e in _read_events(f)]
    starts = [e.step for e in events if e.session_log.status == event_pb2.SessionLog.START]
    assert starts == [5], "TensorBoard is not told to purge the events after the checkpoint"


def test_truncate_after_without_file_is_a_no_op(tmp_path: Path) -> None:
    truncate_after(tmp_path, 3)
    assert not (tmp_path / "metrics.jsonl").exists()
    assert read_metrics(tmp_path) == []


def test_partial_last_line_of_a_killed_writer_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "split": "train", "loss": 1.0}\n{"step": 2, "spl')
    assert read_metrics(tmp_path) == [{"step": 1, "split": "train", "loss": 1.0}]
    with MetricWriter(tmp_path) as writer:
        writer.write(2, "train", {"loss": 0.5})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def test_malformed_middle_line_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        read_metrics(tmp_path)


def test_tensorboard_event_file_holds_the_scalars(tmp_path: Path) -> None:
    with MetricWriter(tmp_path) as writer:
        writer.write(10, "train", {"loss": 0.75, "accuracy": 0.5})
        writer.write(10, "validation", {"loss": 0.875})
        writer.write(20, "train", {"loss": float("nan")})

    scalars = _scalars(tmp_path)
    assert scalars[("train/loss", 10)] == pytest.approx(0.75)
    assert scalars[("train/accuracy", 10)] == pytest.approx(0.5)
    assert scalars[("validation/loss", 10)] == pytest.approx(0.875)
    assert math.isnan(scalars[("train/loss", 20)])
    assert len(scalars) == 4


# --- plots


def _assert_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] >= 200 and image.shape[1] >= 200
    assert image.std() > 0, "blank image"
    return image


def test_plot_learning_curves_writes_a_png(tmp_path: Path) -> None:
    records = [{"step": s, "split": "train", "loss": 1.0 / s, "accuracy": s / 10} for s in (1, 2)]
    records += [{"step": 2, "split": "validation", "loss": None, "accuracy": 0.1}]
    records += [{"step": 3, "split": "train", "loss": 0.2}, {"step": 3, "split": "test"}]
    path = plot_learning_curves(records, tmp_path / "plots" / "curves.png")
    assert path == tmp_path / "plots" / "curves.png"
    two_panels = _assert_png(path)

    loss_only = _assert_png(plot_learning_curves(records[3:4], tmp_path / "loss.png"))
    assert loss_only.shape[1] < two_panels.shape[1]
    _assert_png(plot_learning_curves([], tmp_path / "empty.png"))


def test_plot_confusion_matrix_writes_a_png(tmp_path: Path) -> None:
    confusion = [[5, 1, 0], [2, 7, 1], [0, 0, 9]]
    path = plot_confusion_matrix(confusion, ["cat", "dog", "bird"], tmp_path / "cm.png")
    assert path == tmp_path / "cm.png"
    _assert_png(path)
    with pytest.raises(ValueError, match="class names"):
        plot_confusion_matrix(confusion, ["cat", "dog"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix([[1, 2, 3]], ["a"], tmp_path / "bad.png")


# --- report


def _summary() -> dict:
    return {
        "name": "mlp-digits",
        "config": {
            "name": "mlp-digits",
            "model": {"name": "mlp", "hidden": [64, 32]},
            "optim": {"learning_rate": 0.001, "schedule": None},
            "train": {"epochs": 3, "shuffle": True},
        },
        "dataset": {
            "name": "digits",
            "num_classes": 3,
            "class_names": ["zero", "one", "two"],
            "sizes": {"train": 100, "validation": 20, "test": 30},
        },
        "model": {"name": "mlp", "num_params": 12345},
        "training": {
            "steps": 300,
            "epochs": 3.0,
            "wall_time_s": 75.5,
            "examples_per_s": 1234.5678,
            "best_step": 200,
            "resumed_from": None,
        },
        "validation": {"loss": 0.4321, "accuracy": 0.9},
        "test": {
            "accuracy": 0.91234,
            "precision_macro": 0.8,
            "f1_weighted": 0.87654,
            "per_class": {
                "precision": [1.0, 0.75, 0.5],
                "recall": [0.9, 0.8, 0.6666667],
                "f1": [0.947368, 0.774194, 0.545454],
                "support": [10, 10, 10],
            },
            "confusion_matrix": [[9, 1, 0], [1, 8, 1], [0, 4, 6]],
        },
        "plots": {"learning_curves": "learning_curves.png", "confusion_matrix": "cm.png"},
        "environment": {"python": "3.11.9", "jax": "0.10.2", "devices": ["cpu:0"], "git": None},
    }


def test_write_report_has_metrics_classes_plots_and_config(tmp_path: Path) -> None:
    summary = _summary()
    path = write_report(tmp_path, summary)
    assert path == tmp_path / "report.md"
    text = path.read_text()

    assert text.startswith("# Run report: mlp-digits")
    assert "| accuracy | 0.9123 |" in text
    assert "| precision_macro | 0.8000 |" in text
    assert "| f1_weighted | 0.8765 |" in text
    assert "| zero | 1.0000 | 0.9000 | 0.9474 | 10 |" in text
    assert "| two | 0.5000 | 0.6667 | 0.5455 | 10 |" in text
    assert "best step 200" in text and "| loss | 0.4321 |" in text
    assert "12,345" in text and "digits" in text
    assert "![learning curves](learning_curves.png)" in text
    assert "![confusion matrix](cm.png)" in text
    assert "binary" not in text

    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(block) == summary["config"]
    assert list(yaml.safe_load(block)) == list(summary["config"])  # key order kept


def test_write_report_tolerates_missing_sections(tmp_path: Path) -> None:
    text = write_report(tmp_path, {"name": "bare"}).read_text()
    assert text.startswith("# Run report: bare")
    assert "```yaml" not in text and "![" not in text
