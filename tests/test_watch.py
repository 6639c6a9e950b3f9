"""Watching a run: the run directory first, one log line per log point without a terminal,
the bar with one, and no stray library messages."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxtrain.logging.progress import Progress, format_duration
from jaxtrain.logging.quiet import quiet_library_warnings
from tests.support import ROOT

TINY = """
name: tiny_watch
data: {name: iris, batch_size: 16}
model: {name: mlp, hidden: [8]}
train: {epochs: 2, log_every: 2}
"""


@pytest.mark.slow  # a fresh process (~7 s); the Progress tests below pin the lines in-process
def test_without_a_terminal_every_log_point_is_a_line_and_stdout_ends_with_json(
    tmp_path: Path,
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxtrain.cli",
            "train",
            str(config),
            "--no-report",
            "--runs-dir",
            str(tmp_path / "runs"),
        ],  # fmt: skip
        stdin=subprocess.DEVNULL,
        capture_output=True,  # pipes: no terminal anywhere
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    # iris: 150 rows, 65% train = 96 rows -> 6 steps an epoch, 12 in all, a line every 2.
    run_dir = next(line for line in lines if "run directory:" in line).split(": ", 2)[2]
    first_step_line = next(i for i, line in enumerate(lines) if " step " in line)
    assert lines.index(f"jaxtrain: run directory: {run_dir}") < first_step_line
    train = [line for line in lines if "| train " in line]
    steps = [int(re.search(r"step +(\d+)/12", line).group(1)) for line in train]
    assert steps == [2, 4, 6, 8, 10, 12]
    assert all("examples/s" in line and "ETA" in line and "loss" in line for line in train)
    epochs = [float(re.search(r"epoch ([0-9.]+)", line).group(1)) for line in train]
    np.testing.assert_allclose(epochs, [s / 6 for s in steps], atol=0.006)
    assert [line for line in lines if "| validation " in line], "validations are shown too"
    # The logged values are the ones metrics.jsonl holds.
    records = [
        json.loads(r)
        for r in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
        if json.loads(r)["split"] == "train"
    ]
    shown = [float(re.search(r"train loss ([0-9.]+)", line).group(1)) for line in train]
    np.testing.assert_allclose(shown, [r["loss"] for r in records], atol=5e-5)
    assert "\r" not in done.stderr, "no bar redraws without a terminal"
    out = done.stdout.strip().splitlines()
    assert out[-2] == f"run directory: {run_dir}"
    assert "test_accuracy" in json.loads(out[-1])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_bar_and_a_pipe_gets_lines() -> None:
    pipe, terminal = io.StringIO(), _Terminal()
    for stream in (pipe, terminal):
        with Progress(100, desc="demo", stream=stream, examples_per_step=32) as progress:
            for step in range(10, 101, 10):
                progress.update(step)
                progress.record(step, "train", {"loss": 1.0 / step, "epoch": step / 10})
    assert len(pipe.getvalue().splitlines()) == 10
    assert "step 100/100 (100%)" in pipe.getvalue()
    assert "\r" in terminal.getvalue() and "|" in terminal.getvalue()  # tqdm redraws
    assert "step 100/100" not in terminal.getvalue()


def test_lines_are_thinned_to_every_n_and_disabled_progress_is_silent() -> None:
    pipe, silent = io.StringIO(), io.StringIO()
    with Progress(50, unit="round", every=10, stream=pipe) as progress:
        for step in range(1, 51):
            progress.record(step, "train", {"loss": 0.5})
    with Progress(50, enabled=False, stream=silent) as progress:
        progress.record(10, "train", {"loss": 0.5})
    lines = pipe.getvalue().splitlines()
    rounds = [int(re.search(r"round +(\d+)/", line).group(1)) for line in lines]
    assert rounds == [10, 20, 30, 40, 50]
    assert silent.getvalue() == ""


def test_eta_is_the_remaining_steps_at_the_measured_rate() -> None:
    clock = iter([0.0, 10.0, 20.0])  # start, first line (10 steps), second line (30 steps)
    pipe = io.StringIO()
    progress = Progress(110, stream=pipe, examples_per_step=4)
    progress._clock = lambda: next(clock)
    progress._start = (0, progress._clock())
    progress.record(10, "train", {"loss": 1.0})  # 10 steps in 10 s
    progress.record(30, "train", {"loss": 1.0})  # 20 steps in the next 10 s: 2 steps/s
    last = pipe.getvalue().splitlines()[-1]
    assert "8 examples/s" in last  # 2 steps/s x 4 examples
    assert "ETA 0:00:40" in last  # 80 steps left at 2 steps/s
    assert format_duration(2 * 86400 + 3661) == "2d 1:01:01"


def test_known_library_messages_are_dropped_and_others_kept(caplog) -> None:
    quiet_library_warnings()
    quiet_library_warnings()  # idempotent
    assert sum(1 for f in logging.getLogger("absl").filters if type(f).__name__ == "_Drop") == 1
    with caplog.at_level(logging.WARNING):
        logging.getLogger("absl").warning("Requested `tracked_metric`; did not provide metrics.")
        logging.getLogger("tensorboardX.x2num").warning("NaN or Inf found in input tensor.")
        logging.getLogger("absl").warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]


def test_a_nan_metric_and_a_checkpoint_without_metrics_print_nothing(tmp_path, caplog) -> None:
    from jaxtrain.checkpoint import Checkpoints
    from jaxtrain.config import CheckpointConfig
    from jaxtrain.logging.outputs import RunOutputs

    with caplog.at_level(logging.DEBUG), RunOutputs(tmp_path) as outputs:
        outputs.log(1, "train", {"loss": math.nan})
        with Checkpoints(tmp_path / "c", CheckpointConfig(), "accuracy", "max") as checkpoints:
            checkpoints.save(1, {"a": np.zeros(3)})
            checkpoints.wait()
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in messages if "tracked_metric" in m or "NaN or Inf" in m], messages
