"""Orbax checkpoints: train state, data-iterator state and resolved config in one step folder.

Keeps the latest ``keep`` steps plus the best one by a validation metric; saves are
asynchronous (the arrays are copied before ``save`` returns, the files are written behind).
A step folder only counts once Orbax has committed it, so a half-written save is never
restored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from jaxtrain.config import CheckpointConfig


class Checkpoints:
    """A run's ``checkpoints/`` folder. Metrics given to :meth:`save` rank the best step."""

    def __init__(
        self,
        directory: str | Path,
        config: CheckpointConfig,
        monitor: str = "accuracy",
        mode: str = "max",
    ):
        """``monitor`` names the validation metric that ranks steps; ``mode`` "min" or "max"."""
        self.monitor = monitor
        self.mode = mode
        policies = ocp.checkpoint_managers
        best = policies.BestN(
            get_metric_fn=self._score,
            reverse=self.mode == "min",
            n=1,
            keep_checkpoints_without_metrics=False,
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(
                [policies.LatestN(n=config.keep), best]
            ),
            best_fn=self._score,
            best_mode=self.mode,
            enable_async_checkpointing=config.async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def _score(self, metrics: dict[str, float]) -> float:
        return float(metrics[self.monitor])

    def save(
        self,
        step: int,
        state: Any,
        data_iterator: grain.DatasetIterator,
        config: dict[str, Any],
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Save everything needed to resume at ``step``; ``metrics`` (validation) rank it."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iterator),
            config=ocp.args.JsonSave(config),
        )
        self._manager.save(step, args=args, metrics=metrics)

    def restore(
        self, step: int, like: Any, data_iterator: grain.DatasetIterator | None = None
    ) -> Any:
        """The state saved at ``step``, shaped like ``like``; sets ``data_iterator``'s position."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        items = {"state": ocp.args.StandardRestore(abstract)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return restored.state

    def metrics(self, step: int) -> dict[str, float] | None:
        return self._manager.metrics(step)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """Best step by the monitored validation metric (the latest when none has metrics)."""
        return self._manager.best_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
