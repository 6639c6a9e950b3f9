"""Experiment trackers: a run's parameters, metrics and files sent to MLflow.

:class:`jaxtrain.logging.outputs.RunOutputs` drives the tracker a config asks for
(``tracking: {mlflow: ...}``): it opens one tracked run per run directory, logs the
resolved config as parameters, every logged record as metrics (``train/loss`` at its step),
the final metrics of the best checkpoint (``final/test_accuracy``, its bootstrap interval
as ``final/test_accuracy_low``/``_high``) and, when the run ends, its files as artifacts.
Everything goes through MLflow's client library (``MlflowClient``), never a hand-written
store format. The tracked run's identity is kept in ``tracking.json`` in the run directory,
so ``--resume``, ``jaxtrain report`` and ``jaxtrain eval`` log to the same tracked run. A
run directory inside another tracked one (a learning-curve point) becomes its nested run;
a sweep's members are nested runs of the sweep.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jaxtrain.compare import flatten
from jaxtrain.files import read_json, write_json

TRACKING_FILE = "tracking.json"
# The files of a run directory worth keeping beside its metrics (no checkpoints: they are
# the run directory's, and large).
ARTIFACTS = ("config.yaml", "metrics.json", "report.md", "environment.json", "data_report.md",
             "data_report.json", "eval.json", "stages.json", "members.csv", "members.json",
             "learning_curve.json", "split_rows.csv", "predictions.csv")  # fmt: skip
_MAX_PARAMS, _MAX_METRICS = 100, 1000  # MLflow's log_batch limits
_NAME = re.compile(r"[^\w\-. /]")


def final_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The headline numbers of a run's ``metrics.json``: every scalar validation and test
    metric (``validation_accuracy``, ``test_loss``...) and each bootstrap interval's ends
    (``test_accuracy_low``/``_high``)."""
    metrics: dict[str, float] = {}
    for split in ("validation", "test"):
        for name, value in (summary.get(split) or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[f"{split}_{name}"] = float(value)
    analysis = summary.get("analysis") or {}
    for name, value in analysis.items():  # held-out analysis of the test split (roc_auc, ece)
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics.setdefault(f"test_{name}", float(value))
    intervals = analysis.get("intervals") or {}
    for name, interval in intervals.items():
        for end in ("low", "high"):
            if isinstance(interval.get(end), int | float):
                metrics[f"test_{name}_{end}"] = float(interval[end])
    return metrics


def param_value(value: Any) -> str:
    """A config value as MLflow stores a parameter (text; lists as JSON-like text)."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(param_value(v) for v in value) + "]"
    return "null" if value is None else str(value)


def _metric_name(name: str) -> str:
    return _NAME.sub("_", name)


class MLflowTracker:
    """One tracked MLflow run for one run directory (see the module docstring).

    ``settings``: the config's ``tracking.mlflow`` section; ``params``: the flattened
    resolved config; ``name``: the config's name (the default experiment)."""

    def __init__(self, settings: Any, run_dir: Path, name: str, params: Mapping[str, Any]):
        from mlflow.tracking import MlflowClient

        self.run_dir = Path(run_dir)
        self.settings = settings
        record = self._record()
        uri = record.get("tracking_uri") or _tracking_uri(settings.tracking_uri)
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 keeps its file store in maintenance mode behind this opt-in; the
            # file store is what a local run needs (no database, no server).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.uri = uri
        self.client = MlflowClient(uri)
        if record.get("run_id"):
            self.run_id = record["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            self._log_params(params, existing=self.client.get_run(self.run_id).data.params)
        else:
            experiment = settings.experiment or name
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = (
                found.experiment_id if found else self.client.create_experiment(experiment)
            )
            tags = {"jaxtrain.run_dir": str(self.run_dir.resolve())}
            parent = _parent_run(self.run_dir)
            if parent:
                tags["mlflow.parentRunId"] = parent
            run_name = settings.run_name or f"{self.run_dir.parent.name}/{self.run_dir.name}"
            run = self.client.create_run(experiment_id, tags=tags, run_name=run_name)
            self.run_id = run.info.run_id
            write_json(self.run_dir / TRACKING_FILE,
                       {"mlflow": {"tracking_uri": uri, "experiment_id": experiment_id,
                                   "run_id": self.run_id}})  # fmt: skip
            self._log_params(params, existing={})

    def _record(self) -> dict[str, Any]:
        path = self.run_dir / TRACKING_FILE
        return read_json(path, TRACKING_FILE).get("mlflow", {}) if path.is_file() else {}

    def _log_params(self, params: Mapping[str, Any], existing: Mapping[str, str]) -> None:
        """New parameters as parameters; one a resume changed (``train.epochs``) as the tag
        ``jaxtrain.resumed.<key>`` (MLflow parameters never change once logged)."""
        from mlflow.entities import Param, RunTag

        new = [Param(k, param_value(v)) for k, v in params.items() if k not in existing]
        changed = [RunTag(f"jaxtrain.resumed.{k}", param_value(v)) for k, v in params.items()
                   if k in existing and existing[k] != param_value(v)]  # fmt: skip
        for start in range(0, len(new), _MAX_PARAMS):
            self.client.log_batch(self.run_id, params=new[start : start + _MAX_PARAMS])
        if changed:
            self.client.log_batch(self.run_id, tags=changed)

    def log(self, step: int, prefix: str, metrics: Mapping[str, Any]) -> None:
        """``{prefix}/{name}`` for each numeric metric, at ``step``."""
        _log_metrics(self.client, self.run_id, step, prefix, metrics)

    def artifacts(self, paths: Iterable[Path]) -> None:
        for path in paths:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))

    def child(self, key: str, name: str, params: Mapping[str, Any]) -> str:
        """A nested run (a sweep member) named ``name``, created once per ``key`` (its id
        is kept in ``tracking.json``, so ``jaxtrain report`` logs to the same one)."""
        record = self._record()
        children = record.setdefault("children", {})
        if key in children:
            return children[key]
        experiment_id = self.client.get_run(self.run_id).info.experiment_id
        tags = {"mlflow.parentRunId": self.run_id, "jaxtrain.run_dir": str(self.run_dir)}
        run_id = self.client.create_run(experiment_id, tags=tags, run_name=name).info.run_id
        from mlflow.entities import Param

        items = [Param(k, param_value(v)) for k, v in params.items()]
        for start in range(0, len(items), _MAX_PARAMS):
            self.client.log_batch(run_id, params=items[start : start + _MAX_PARAMS])
        children[key] = run_id
        write_json(self.run_dir / TRACKING_FILE, {"mlflow": record})
        return run_id

    def log_child(self, run_id: str, step: int, prefix: str, metrics: Mapping[str, Any]) -> None:
        _log_metrics(self.client, run_id, step, prefix, metrics)

    def end_child(self, run_id: str) -> None:
        self.client.set_terminated(run_id, status="FINISHED")

    def close(self, status: str = "FINISHED") -> None:
        """End the tracked run (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        if self.settings.log_artifacts:
            self.artifacts(self.run_dir / name for name in ARTIFACTS)
            self.artifacts(sorted(self.run_dir.glob("*.png")))
        self.client.set_terminated(self.run_id, status=status)


def _log_metrics(client, run_id: str, step: int, prefix: str, metrics: Mapping[str, Any]):
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [
        Metric(_metric_name(f"{prefix}/{k}" if prefix else k), float(v), now, int(step))
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(float(v))
    ]
    for start in range(0, len(items), _MAX_METRICS):
        client.log_batch(run_id, metrics=items[start : start + _MAX_METRICS])


def _tracking_uri(configured: str | None) -> str:
    """The configured URI, else ``$MLFLOW_TRACKING_URI``, else ``./mlruns`` as a file URI."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return (Path.cwd() / "mlruns").resolve().as_uri()


def _parent_run(run_dir: Path) -> str | None:
    """The tracked run of the folder holding ``run_dir`` (a learning curve's point)."""
    path = run_dir.parent / TRACKING_FILE
    if not path.is_file():
        return None
    return (read_json(path, TRACKING_FILE).get("mlflow") or {}).get("run_id")


def open_tracker(config: Any, run_dir: Path) -> MLflowTracker | None:
    """The tracker ``config.tracking`` asks for (None when it asks for none)."""
    tracking = getattr(config, "tracking", None)
    if tracking is None or tracking.mlflow is None:
        return None
    from jaxtrain.config import config_to_dict

    params = flatten({k: v for k, v in config_to_dict(config).items() if k != "tracking"})
    return MLflowTracker(tracking.mlflow, run_dir, config.name, params)
