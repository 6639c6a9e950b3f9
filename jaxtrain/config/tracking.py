"""Experiment trackers (``tracking:``): where a run's parameters, metrics and files go
besides its own run directory (which always holds them, with TensorBoard events).

``tracking: {mlflow: {...}}`` logs every run (and every sweep member, learning-curve point
and evaluation) to MLflow through its client library: the resolved config as parameters,
each logged record as metrics, the final metrics, and the run's files as artifacts. It needs
the optional extra: ``pip install 'jaxtrain[mlflow]'``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic.dataclasses import dataclass

from jaxtrain.config.base import STRICT

Text = Annotated[str, Field(min_length=1, max_length=500)]


@dataclass(config=STRICT)
class MLflowConfig:
    """An MLflow tracking store.

    ``tracking_uri``: any MLflow store URI (``file:/path/mlruns``, ``sqlite:///mlflow.db``,
    ``http://host:5000``); unset: ``$MLFLOW_TRACKING_URI``, else the local file store
    ``./mlruns`` (resolved when the run starts and kept with it, so ``--resume`` from
    elsewhere logs to the same place). ``experiment``: default the config's ``name``.
    ``run_name``: default the run directory's ``<name>/<stamp>``. ``log_artifacts``: the
    run's files (config, metrics, report, plots) as artifacts."""

    tracking_uri: Text | None = None
    experiment: Text | None = None
    run_name: Text | None = None
    log_artifacts: bool = True


@dataclass(config=STRICT)
class TrackingConfig:
    """Trackers the run logs to; ``mlflow`` is the one available."""

    mlflow: MLflowConfig | None = None
