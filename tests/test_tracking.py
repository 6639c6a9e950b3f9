"""Tracking: TensorBoard gets the config and the hyperparameters with the final metrics;
MLflow (``tracking: {mlflow: ...}``) holds the params, metrics and artifacts; every verb
honours or refuses the tracker."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from jaxtrain.config import ConfigError, load_config
from jaxtrain.config.verbs import check_verb
from jaxtrain.logging.outputs import RunOutputs
from jaxtrain.logging.tracking import flatten, param_value

pytest.importorskip("mlflow")  # the optional extras: pip install -e '.[mlflow,tensorboard]'
pytest.importorskip("tensorboard")
from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator as ea  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

CONFIG = """
name: tracked
data: {name: iris, batch_size: 16}
model: {name: mlp, hidden: [8]}
optimizer: {name: adamw, learning_rate: 0.01}
train: {epochs: 2, log_every: 2}
tracking: {mlflow: {tracking_uri: "URI", experiment: tests}}
"""


def _config(tmp_path: Path, overrides=()):
    path = tmp_path / "c.yaml"
    uri = (tmp_path / "mlruns").as_uri()
    path.write_text(CONFIG.replace("URI", uri))
    return load_config(path, list(overrides)), uri


def _run(run_dir: Path) -> tuple[MlflowClient, str]:
    record = json.loads((run_dir / "tracking.json").read_text())["mlflow"]
    return MlflowClient(record["tracking_uri"]), record["run_id"]


def test_mlflow_holds_params_metrics_and_artifacts_of_a_run_writer(tmp_path: Path) -> None:
    config, uri = _config(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("name: tracked\n")
    losses = {2: 1.5, 4: 1.25, 6: 0.75}
    summary = {"best_step": 6, "validation": {"accuracy": 0.8}, "test": {"accuracy": 0.75,
               "per_class": {"f1": [1.0]}}, "analysis": {"roc_auc": 0.9, "intervals": {
               "accuracy": {"value": 0.75, "low": 0.6, "high": 0.9}}}}  # fmt: skip
    with RunOutputs(run_dir, config=config) as outputs:
        for step, loss in losses.items():
            outputs.log(step, "train", {"loss": loss, "epoch": step / 6})
        outputs.log(6, "validation", {"accuracy": 0.8})
        outputs.summary(summary)
    client, run_id = _run(run_dir)
    assert client.tracking_uri == uri
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "tests"
    # Params: every resolved config key, as MLflow stores them (text).
    from jaxtrain.config import config_to_dict

    expected = {k: param_value(v) for k, v in flatten(config_to_dict(config)).items()
                if not k.startswith("tracking")}  # fmt: skip
    assert run.data.params == expected
    assert run.data.params["optimizer.learning_rate"] == "0.01"
    history = client.get_metric_history(run_id, "train/loss")
    assert {m.step: m.value for m in history} == losses
    metrics = run.data.metrics
    assert metrics["final/test_accuracy"] == 0.75
    assert metrics["final/test_accuracy_low"] == 0.6 and metrics["final/test_roc_auc"] == 0.9
    assert metrics["final/validation_accuracy"] == 0.8
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "metrics.json"} <= artifacts


def test_tensorboard_gets_the_config_and_the_hparams_table(tmp_path: Path) -> None:
    config, _ = _config(tmp_path)
    config = load_config(tmp_path / "c.yaml", ["tracking=null"])
    with RunOutputs(tmp_path, config=config) as outputs:
        outputs.log(1, "train", {"loss": 1.0})
        outputs.summary({"best_step": 1, "test": {"accuracy": 0.5}, "validation": {}})
    assert not (tmp_path / "tracking.json").exists()  # no tracker asked for
    events = ea.EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={ea.TENSORS: 0})
    events.Reload()
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "learning_rate: 0.01" in text and "hidden:" in text
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    assert start.hparams["optimizer.learning_rate"].number_value == pytest.approx(0.01)
    assert start.hparams["model.name"].string_value == "mlp"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["final/test_accuracy"]
    assert events.Scalars("final/test_accuracy")[0].value == 0.5


def test_sweep_members_become_nested_runs_and_tensorboard_runs(tmp_path: Path) -> None:
    config, _ = _config(tmp_path)
    rows = [
        {"member": i, "settings": {"optimizer.learning_rate": lr}, "best_value": v,
         "best_step": 4, "history": [{"step": 2, "train_loss": 1.0, "validation_accuracy": v},
                                     {"step": 4, "train_loss": 0.5, "validation_accuracy": v}]}
        for i, (lr, v) in enumerate([(0.001, 0.7), (0.01, 0.9)])
    ]  # fmt: skip
    with RunOutputs(tmp_path, config=config) as outputs:
        outputs.members(rows, "accuracy")
    client, parent = _run(tmp_path)
    experiment = client.get_run(parent).info.experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    by_name = {run.info.run_name: run for run in children}
    assert set(by_name) == {"member 0", "member 1"}
    assert by_name["member 1"].data.params["optimizer.learning_rate"] == "0.01"
    assert by_name["member 1"].data.metrics["final/validation_accuracy"] == 0.9
    history = client.get_metric_history(by_name["member 0"].info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(2, 1.0), (4, 0.5)]
    events = ea.EventAccumulator(str(tmp_path / "tensorboard" / "member_1"))
    events.Reload()
    assert [s.value for s in events.Scalars("validation/accuracy")] == pytest.approx([0.9, 0.9])
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    # A second report logs to the same nested runs (ids kept in tracking.json).
    with RunOutputs(tmp_path, config=config) as outputs:
        outputs.members(rows, "accuracy")
    again = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(again) == 2


@pytest.mark.parametrize("verb", ["train", "sweep", "federated", "learning-curve", "eval"])
def test_every_verb_refuses_a_tracker_whose_library_is_missing(tmp_path, monkeypatch, verb):
    config, _ = _config(tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=rf"tracking\.mlflow: .*jaxtrain {verb} cannot log"):
        check_verb(config, verb, "c.yaml")


@pytest.mark.slow  # a real run (~8 s); the run-writer test above pins the same store contents
def test_a_tracked_run_holds_its_params_and_metrics_in_mlflow(tmp_path: Path) -> None:
    from jaxtrain.runner import train

    _config(tmp_path)
    result = train(tmp_path / "c.yaml", [], runs_dir=tmp_path / "runs", progress=False)
    client, run_id = _run(result.run_dir)
    run = client.get_run(run_id)
    assert run.data.params["model.hidden"] == "[8]"
    summary = json.loads((result.run_dir / "metrics.json").read_text())
    assert run.data.metrics["final/test_accuracy"] == pytest.approx(summary["test"]["accuracy"])
    logged = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    losses = {r["step"]: r["loss"] for r in logged if r["split"] == "train"}
    history = {m.step: m.value for m in client.get_metric_history(run_id, "train/loss")}
    assert history == pytest.approx(losses)
    assert {"report.md", "metrics.json"} <= {a.path for a in client.list_artifacts(run_id)}
