"""One writer for everything a verb writes into its run directory.

``train``, ``sweep``, ``federated``, ``learning-curve`` and ``eval`` all write through
:class:`RunOutputs`: metric records (``metrics.jsonl`` and TensorBoard), the final
``metrics.json`` (strict JSON, written atomically) and ``report.md``. Given the run's
config, it also writes the resolved config as TensorBoard text and, when the run ends, its
hyperparameters with the final metrics for TensorBoard's HParams table, and it drives the
tracker the config asks for (``tracking: {mlflow: ...}``, :mod:`jaxtrain.logging.tracking`).
Processes other than 0 of a multi-process run get a disabled writer: they compute, process
0 writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxtrain.files import read_json, write_json
from jaxtrain.logging.quiet import quiet_library_warnings
from jaxtrain.logging.report import write_report
from jaxtrain.logging.tracking import final_metrics, flatten, open_tracker
from jaxtrain.logging.writers import MetricWriter, write_hparams

SUMMARY_FILE = "metrics.json"
ENVIRONMENT_FILE = "environment.json"


class RunOutputs:
    """``log(step, split, metrics)``, ``summary(dict)`` and ``report(context)`` for one run
    directory; a context manager that closes the metric writer and ends the tracked run
    (``FAILED`` when the block raised, ``KILLED`` on Ctrl-C)."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        enabled: bool = True,
        purge_step: int | None = None,
        config: Any = None,
    ):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.config = config
        self._purge_step = purge_step
        self._writer: MetricWriter | None = None
        self._tracker = None
        self._started = False
        self._final: tuple[dict[str, float], int] | None = None
        self.status = "FINISHED"  # what the tracked run ends as; a stopped run sets KILLED
        quiet_library_warnings()

    def start(self) -> None:
        """Open the tracked run and write the resolved config to TensorBoard now (otherwise
        the first record does it). A learning curve starts its own before its points, which
        then nest under it."""
        if not self.enabled or self._started:
            return
        self._started = True
        if self.config is None:
            return
        self._tracker = open_tracker(self.config, self.run_dir)
        self._metric_writer().text("config", _config_markdown(self.config))

    def _metric_writer(self) -> MetricWriter:
        if self._writer is None:
            self._writer = MetricWriter(self.run_dir, purge_step=self._purge_step)
        return self._writer

    def log(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
        """Append one record to ``metrics.jsonl`` and TensorBoard (opened on first use), and
        send it to the tracker."""
        if not self.enabled:
            return
        self.start()
        self._metric_writer().write(step, split, metrics)
        if self._tracker is not None:
            self._tracker.log(step, split, metrics)

    def summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``metrics.json`` (NaN and infinities as ``null``); its headline numbers are
        the run's final metrics (TensorBoard HParams and the tracker, when the run ends)."""
        if self.enabled:
            write_json(self.run_dir / SUMMARY_FILE, summary)
            training = summary.get("training") or {}
            step = summary.get("best_step") or training.get("steps") or 0
            self._final = (final_metrics(summary), int(step))

    def metrics(self, step: int, prefix: str, metrics: Mapping[str, Any]) -> None:
        """Extra numbers about the run that are not a logged record (``jaxtrain eval``'s
        results): TensorBoard scalars ``{prefix}/{name}`` and the tracker."""
        if not self.enabled:
            return
        self.start()
        writer = self._metric_writer()
        numbers = {k: v for k, v in metrics.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}  # fmt: skip
        for name, value in numbers.items():
            writer.scalar(f"{prefix}/{name}", value, step)
        if self._tracker is not None:
            self._tracker.log(step, prefix, numbers)

    def members(self, rows: Sequence[Mapping[str, Any]], metric: str) -> None:
        """A sweep's members, each as its own TensorBoard run (``tensorboard/member_<i>``:
        its validation history and its settings with its best value, so the HParams table
        compares members) and as a nested tracked run."""
        if not self.enabled:
            return
        from tensorboardX import SummaryWriter

        self.start()
        skipped = ("sweep", "tracking")
        base = flatten({k: v for k, v in _config_dict(self.config).items() if k not in skipped})
        for row in rows:
            settings = flatten(row["settings"])
            history = row.get("history") or []
            value = row.get("best_value")
            best = {f"validation_{metric}": value} if value is not None else {}
            folder = self.run_dir / "tensorboard" / f"member_{row['member']}"
            with SummaryWriter(logdir=str(folder)) as member:
                for point in history:
                    for key, number in point.items():
                        if key != "step" and isinstance(number, int | float):
                            member.add_scalar(_tag(key), number, global_step=point["step"])
                write_hparams(member, {**base, **settings}, best, row.get("best_step") or 0)
            if self._tracker is not None:
                run_id = self._tracker.child(str(row["member"]), f"member {row['member']}",
                                             {**base, **settings})  # fmt: skip
                for point in history:
                    numbers = {_tag(k): v for k, v in point.items() if k != "step"}
                    self._tracker.log_child(run_id, point["step"], "", numbers)
                self._tracker.log_child(run_id, row.get("best_step") or 0, "final", best)
                self._tracker.end_child(run_id)

    def report(self, context: Mapping[str, Any]) -> Path | None:
        """Write ``report.md`` from ``context`` (see :func:`write_report`); the run's
        ``environment.json`` is added when the context has none."""
        if not self.enabled:
            return None
        if "environment" not in context:
            path = self.run_dir / ENVIRONMENT_FILE
            context = {**context, "environment": read_json(path) if path.exists() else {}}
        return write_report(self.run_dir, context)

    def close(self, status: str = "FINISHED") -> None:
        """The final metrics (if a summary was written) to TensorBoard's HParams and the
        tracker, the run's files to the tracker; then everything closed."""
        if self.enabled and self._final is not None and self.config is not None:
            metrics, step = self._final
            self.start()
            params = flatten({k: v for k, v in _config_dict(self.config).items()
                              if k not in ("sweep", "tracking")})  # fmt: skip
            self._metric_writer().hparams(params, metrics, step)
            if self._tracker is not None:
                self._tracker.log(step, "final", metrics)
            self._final = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._tracker is not None:
            tracker, self._tracker = self._tracker, None
            tracker.close(status)

    def __enter__(self) -> RunOutputs:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.close(self.status)
        else:
            self.close("KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")


def _config_dict(config: Any) -> dict[str, Any]:
    from jaxtrain.config import config_to_dict

    return config_to_dict(config) if config is not None else {}


def _config_markdown(config: Any) -> str:
    """The resolved config as a YAML block (TensorBoard's Text tab renders markdown)."""
    from jaxtrain.config.strict_yaml import dump

    text = dump(_config_dict(config)).rstrip("\n")
    return "\n".join("    " + line for line in text.splitlines())  # a markdown code block


def _tag(key: str) -> str:
    """A sweep history key (``validation_accuracy``, ``train_loss``) as a TensorBoard tag
    (``validation/accuracy``) like a run's."""
    split, _, name = key.partition("_")
    return f"{split}/{name}" if split in ("train", "validation") and name else key
