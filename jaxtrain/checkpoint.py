"""Orbax checkpoints: train state, data-iterator state and resolved config in one step folder.

Keeps the latest ``keep`` steps plus the best one by a validation metric; saves are
asynchronous (the arrays are copied before ``save`` returns, the files are written behind).
A step folder only counts once Orbax has committed it, so a half-written save is never
restored.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxtrain.config import CheckpointConfig


class CorruptCheckpoint(ValueError):
    """A checkpoint folder whose files are unreadable or whose arrays fail their digest."""


def state_digest(state: Any) -> str:
    """SHA-256 over the tree structure, every leaf's dtype, shape and bytes (host copies);
    typed PRNG keys are hashed through their key data."""
    digest = hashlib.sha256(str(jax.tree.structure(state)).encode())
    for leaf in jax.tree.leaves(state):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        array = np.asarray(jax.device_get(leaf))
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class Checkpoints:
    """A run's ``checkpoints/`` folder. Metrics given to :meth:`save` rank the best step."""

    directory: Path

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
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(self.directory, options=options)

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
            integrity=ocp.args.JsonSave({"state_sha256": state_digest(state)}),
        )
        self._manager.save(step, args=args, metrics=metrics)

    def restore(
        self, step: int, like: Any, data_iterator: grain.DatasetIterator | None = None
    ) -> Any:
        """The state saved at ``step``, shaped like ``like``; sets ``data_iterator``'s position.

        Raises :class:`CorruptCheckpoint` (naming the step's folder) when the files cannot be
        read or the arrays no longer match the digest written with them.
        """
        folder = self.directory / str(step)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        items = {"state": ocp.args.StandardRestore(abstract)}
        checked = (folder / "integrity").is_dir()  # checkpoints from before digests: unchecked
        if checked:
            items["integrity"] = ocp.args.JsonRestore()
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as err:  # noqa: BLE001 - Orbax/TensorStore raise many types
            raise CorruptCheckpoint(
                f"{folder}: cannot be restored ({type(err).__name__}: {str(err)[:200]})"
            ) from None
        if checked and state_digest(restored.state) != restored.integrity["state_sha256"]:
            raise CorruptCheckpoint(f"{folder}: its arrays do not match the digest saved with them")
        return restored.state

    def restore_latest_good(
        self, like: Any, data_iterator: grain.DatasetIterator | None = None
    ) -> tuple[int | None, Any]:
        """``(step, state)`` of the newest checkpoint that restores intact, trying older ones
        when the newest is damaged (each skipped one is reported on stderr with its folder);
        ``(None, like)`` when there is no checkpoint. Raises CorruptCheckpoint if all are bad."""
        steps = sorted(self.all_steps(), reverse=True)
        problems = []
        for step in steps:
            try:
                return step, self.restore(step, like, data_iterator)
            except CorruptCheckpoint as err:
                problems.append(str(err))
                # Set aside, not deleted (for inspection), so training can save this step anew.
                aside = self.directory / f"{step}.damaged"
                (self.directory / str(step)).rename(aside)
                self._manager.reload()
                print(
                    f"jaxtrain: warning: {err}; moved to {aside.name}, trying an older checkpoint",
                    file=sys.stderr,
                )
        if problems:
            raise CorruptCheckpoint("no checkpoint restores intact: " + "; ".join(problems))
        return None, like

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
