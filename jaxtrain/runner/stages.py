"""Stages of an extended run: ``jaxtrain train --resume RUN train.epochs=40``.

A run that is resumed with more epochs than it was laid out for gains a stage. The stages
are recorded in ``stages.json`` (each one's steps, epochs and what the learning-rate
schedule does over it, ``train.extend_schedule``), and the results of the stage that ends
there (``metrics.json``, ``report.md``, its plots, ``eval.json``) move to ``stages/<k>/``
before training goes on, so nothing a finished stage reported is overwritten; the top level
always holds the newest stage's results. ``metrics.jsonl`` and TensorBoard carry on, one
log over every step. Nothing here imports JAX.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from jaxtrain.config import Config, ConfigError
from jaxtrain.files import read_json, write_json

STAGES_FILE = "stages.json"
STAGES_DIR = "stages"
# What a finished stage reported (moved aside when the next stage starts).
STAGE_OUTPUTS = ("metrics.json", "report.md", "eval.json", "learning_curves.png",
                 "confusion_matrix.png", "reliability.png", "predictions.csv")  # fmt: skip


def read_stages(run_dir: Path) -> list[dict[str, Any]]:
    """The run's stages (``[]`` for a run never extended)."""
    path = Path(run_dir) / STAGES_FILE
    if not path.is_file():
        return []
    return list(read_json(path, STAGES_FILE)["stages"])


def schedule_plan(stages: list[dict[str, Any]]) -> tuple[int | None, list[tuple[int, int, str]]]:
    """``(steps of stage 1, [(start, end, mode) of each later stage])`` for the optimizer;
    ``(None, [])`` for a run never extended (its schedule spans its own length)."""
    if not stages:
        return None, []
    later = [(s["start_step"], s["end_step"], s["schedule"]) for s in stages[1:]]
    return stages[0]["end_step"], later


def plan_extension(
    run_dir: Path,
    before: Config,
    after: Config,
    steps_before: int,
    steps_after: int,
    final_rate: float,
) -> list[dict[str, Any]] | None:
    """The stages after a resume that changes ``before`` into ``after`` (``steps_*``: their
    total steps), or None when the length does not change. ``final_rate`` is the rate the
    schedule reaches at ``steps_before`` (what ``continue`` would hold).

    Raises ConfigError (nothing written yet) when the run would get shorter, when the
    schedule decays and ``train.extend_schedule`` does not say what it does over the added
    steps, or when ``continue`` would hold a rate of 0 (nothing would train)."""
    source = run_dir / "config.yaml"
    if steps_after == steps_before:
        return None
    if steps_after < steps_before:
        raise ConfigError(
            f"{source}: train.epochs: {after.train.epochs} is fewer than the run's "
            f"{before.train.epochs} ({steps_after} steps instead of {steps_before}); a resumed "
            "run can only be extended (its learning-rate schedule was laid out for its length)"
        )
    dp = getattr(after.train, "dp", None)
    if dp is not None and dp.target_epsilon is not None:
        raise ConfigError(
            f"{source}: train.epochs: cannot grow on resume when train.dp.target_epsilon "
            "calibrated the noise to the run's length (the added steps would spend privacy "
            "the calibration did not budget); start a new run, or set train.dp.noise_multiplier"
        )
    mode = after.train.extend_schedule
    schedule = after.optimizer.schedule
    added = steps_after - steps_before
    if mode is None:
        if schedule.name == "constant":
            mode = "continue"  # the rate after warmup is the peak either way
        else:
            stay = "nothing would train" if final_rate == 0.0 else f"stay at {final_rate:.3g}"
            raise ConfigError(
                f"{source}: train.extend_schedule: train.epochs grows from "
                f"{before.train.epochs} to {after.train.epochs} ({added} steps added) and the "
                f"{schedule.name} schedule has ended at {final_rate:.3g}; say what the rate "
                f"does over the added steps: train.extend_schedule=continue ({stay}) or "
                "restart (the schedule again over the added steps, from the peak)"
            )
    if mode == "continue" and final_rate == 0.0:
        raise ConfigError(
            f"{source}: train.extend_schedule: continue would hold the learning rate at 0 "
            f"(the {schedule.name} schedule ended at final_fraction "
            f"{schedule.final_fraction}), so the {added} added steps would not train; use "
            "train.extend_schedule=restart"
        )
    stages = read_stages(run_dir) or [
        {
            "stage": 1,
            "start_step": 0,
            "end_step": steps_before,
            "epochs": before.train.epochs,
            "schedule": None,
        }  # fmt: skip
    ]
    stages.append(
        {
            "stage": len(stages) + 1,
            "start_step": steps_before,
            "end_step": steps_after,
            "epochs": after.train.epochs,
            "schedule": mode,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    )
    return stages


def begin_stage(run_dir: Path, stages: list[dict[str, Any]]) -> Path | None:
    """Move what the finished stage reported to ``stages/<k>/`` and record the new stage.
    Returns the folder the outputs went to (None when the stage had reported nothing)."""
    finished = stages[-2]["stage"]
    present = [name for name in STAGE_OUTPUTS if (run_dir / name).is_file()]
    target = None
    if present:
        target = run_dir / STAGES_DIR / str(finished)
        target.mkdir(parents=True, exist_ok=True)
        for name in present:
            shutil.move(run_dir / name, target / name)
    write_json(run_dir / STAGES_FILE, {"stages": stages})
    return target
