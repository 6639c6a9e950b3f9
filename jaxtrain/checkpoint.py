"""Orbax checkpoints for every verb: a state, the data-iterator position and JSON records in
one step folder, each part covered by a digest, damaged steps set aside, older ones tried.

``train`` saves the train state, the grain iterator and the resolved config; ``sweep`` its
population state, the best member and its records; ``federated`` the server state. All of
them go through :class:`Checkpoints`, so all of them get the same guarantees:

- a step folder only counts once Orbax has committed it (a half-written save is invisible);
- every part that a restore reads (arrays, iterator position, JSON) has a SHA-256 digest
  saved beside it, checked on restore: an edited or truncated part is a
  :class:`CorruptCheckpoint`, never silently followed;
- :meth:`Checkpoints.restore_latest_good` sets a damaged step aside (``<step>.damaged``,
  ``<step>.damaged-2``, ...) and falls back to the newest intact one, and refuses to pretend a
  run with damaged history has none.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxtrain.config import CheckpointConfig

STATE, DATA, CONFIG, INTEGRITY = "state", "data", "config", "integrity"
DAMAGED = ".damaged"


class CorruptCheckpoint(ValueError):
    """A checkpoint folder whose files are unreadable or whose parts fail their digest."""


class MissingPart(ValueError):
    """A checkpoint asked for a part it was saved without (not a damaged one)."""


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


def json_digest(value: Any) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


class Checkpoints:
    """A ``checkpoints/`` folder: the latest ``config.keep`` steps, plus the best one by the
    validation metric ``monitor`` (``mode`` "min" or "max") when a monitor is given.

    :meth:`save` takes the state (any pytree), optionally a grain iterator, JSON records
    (``records={"config": {...}}``) and more array trees (``arrays={"best": tree}``).
    """

    directory: Path

    def __init__(
        self,
        directory: str | Path,
        config: CheckpointConfig | None = None,
        monitor: str | None = None,
        mode: str = "max",
    ):
        config = config or CheckpointConfig()
        self.monitor, self.mode = monitor, mode
        policies = ocp.checkpoint_managers
        kept = [policies.LatestN(n=config.keep)]
        best = {}
        if monitor is not None:
            kept.append(
                policies.BestN(
                    get_metric_fn=self._score,
                    reverse=mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
            best = {"best_fn": self._score, "best_mode": mode}
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(kept),
            enable_async_checkpointing=config.async_save,
            create=True,
            **best,
        )
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def _score(self, metrics: dict[str, float]) -> float:
        return float(metrics[self.monitor])

    # -- saving --------------------------------------------------------------------------
    def save(
        self,
        step: int,
        state: Any,
        data_iterator: grain.DatasetIterator | None = None,
        config: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        *,
        records: Mapping[str, Any] | None = None,
        arrays: Mapping[str, Any] | None = None,
    ) -> None:
        """Save everything needed to resume at ``step``; ``metrics`` (validation) rank it.

        ``state`` may be None when ``arrays`` or ``records`` hold everything. ``config`` is
        stored as the JSON record ``config``; ``records`` are more JSON values and ``arrays``
        more pytrees, each restorable by name."""
        records = {**({CONFIG: config} if config is not None else {}), **(records or {})}
        arrays = {**({STATE: state} if state is not None else {}), **(arrays or {})}
        items: dict[str, Any] = {}
        digests: dict[str, str] = {}
        for name, tree in arrays.items():
            items[name] = ocp.args.StandardSave(tree)
            digests[f"{name}_sha256"] = state_digest(tree)
        for name, value in records.items():
            items[name] = ocp.args.JsonSave(value)
            digests[f"{name}_sha256"] = json_digest(value)
        if data_iterator is not None:
            _check_iterator(data_iterator)
            items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
            digests[f"{DATA}_sha256"] = json_digest(data_iterator.get_state())
        if not arrays and not records and data_iterator is None:
            raise ValueError("Checkpoints.save: nothing to save (no state, arrays or records)")
        items[INTEGRITY] = ocp.args.JsonSave(digests)
        self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics)

    # -- restoring -----------------------------------------------------------------------
    def restore(
        self, step: int, like: Any, data_iterator: grain.DatasetIterator | None = None
    ) -> Any:
        """The state saved at ``step``, shaped like ``like``; sets ``data_iterator``'s position.

        Raises :class:`CorruptCheckpoint` (naming the step's folder) when the files cannot be
        read or a part no longer matches the digest written with it."""
        return self.restore_parts(step, {STATE: like}, data_iterator=data_iterator)[STATE]

    def restore_parts(
        self,
        step: int,
        arrays: Mapping[str, Any] | None = None,
        records: Sequence[str] = (),
        data_iterator: grain.DatasetIterator | None = None,
    ) -> dict[str, Any]:
        """The named parts of step ``step``: ``arrays`` maps names to trees shaped like the
        saved ones, ``records`` names JSON records; each part is checked against its digest."""
        folder = self.directory / str(step)
        arrays = dict(arrays or {})
        items: dict[str, Any] = {
            name: ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, like))
            for name, like in arrays.items()
        }
        items.update({name: ocp.args.JsonRestore() for name in records})
        checked = (folder / INTEGRITY).is_dir()  # checkpoints from before digests: unchecked
        if checked:
            items[INTEGRITY] = ocp.args.JsonRestore()
        if data_iterator is not None:
            _check_iterator(data_iterator)
        restored = self._read(step, items, data_iterator)
        parts = {name: restored[name] for name in (*arrays, *records)}
        if checked:
            digests = restored[INTEGRITY]
            found = {name: state_digest(parts[name]) for name in arrays}
            found.update({name: json_digest(parts[name]) for name in records})
            if data_iterator is not None:
                found[DATA] = json_digest(data_iterator.get_state())
            for name, value in found.items():
                expected = digests.get(f"{name}_sha256")
                if expected is not None and expected != value:
                    what = "arrays" if name == STATE else f"'{name}' part"
                    raise CorruptCheckpoint(
                        f"{folder}: its {what} do not match the digest saved with them"
                    )
        return parts

    def _read(self, step: int, items: dict[str, Any], data_iterator=None) -> Any:
        """Orbax's composite restore of ``items`` (plus the iterator's position into
        ``data_iterator``), every failure one :class:`CorruptCheckpoint` naming the folder."""
        folder = self.directory / str(step)
        if data_iterator is not None:
            if folder.is_dir() and not (folder / DATA).is_dir():
                raise MissingPart(
                    f"{folder}: holds no data-iterator position (it was saved without one); "
                    "restore without an iterator"
                )
            items = {**items, DATA: grain.checkpoint.CheckpointRestore(data_iterator)}
        try:
            return self._manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as err:  # noqa: BLE001 - Orbax/TensorStore raise many types
            raise CorruptCheckpoint(f"{folder}: cannot be restored ({_reason(err)})") from None

    def restore_latest_good(
        self, like: Any, data_iterator: grain.DatasetIterator | None = None
    ) -> tuple[int | None, Any]:
        """``(step, state)`` of the newest checkpoint that restores intact (see
        :meth:`latest_good`); ``(None, like)`` when the folder never held one."""
        step, parts = self.latest_good({STATE: like}, data_iterator=data_iterator)
        return step, (like if step is None else parts[STATE])

    def latest_good(
        self,
        arrays: Mapping[str, Any],
        records: Sequence[str] = (),
        data_iterator: grain.DatasetIterator | None = None,
    ) -> tuple[int | None, dict[str, Any]]:
        """``(step, parts)`` of the newest checkpoint whose parts restore intact, trying
        older ones when the newest is damaged: each damaged step is moved aside (kept for
        inspection, so training can save that step anew) and reported on stderr. ``(None,
        {})`` when there is no checkpoint and never was; :class:`CorruptCheckpoint` when
        checkpoints exist (or were set aside before) but none restores."""
        problems = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                return step, self.restore_parts(step, arrays, records, data_iterator)
            except CorruptCheckpoint as err:
                problems.append(str(err))
                aside = self._set_aside(step)
                print(
                    f"jaxtrain: warning: {err}; moved to {aside.name}, trying an older checkpoint",
                    file=sys.stderr,
                )
        earlier = sorted(p.name for p in self.directory.glob(f"*{DAMAGED}*"))
        if problems or earlier:
            found = "; ".join(problems) or f"earlier ones were set aside: {', '.join(earlier)}"
            raise CorruptCheckpoint(
                f"{self.directory}: no checkpoint restores intact ({found}). The run cannot "
                "continue from where it stopped; start a new run (or move the damaged folders "
                "out of checkpoints/ to restart this one from step 0)"
            )
        return None, {}

    def _set_aside(self, step: int) -> Path:
        """Rename the step's folder to the first free ``<step>.damaged[-k]``."""
        source = self.directory / str(step)
        aside = self.directory / f"{step}{DAMAGED}"
        k = 1
        while aside.exists():
            k += 1
            aside = self.directory / f"{step}{DAMAGED}-{k}"
        source.rename(aside)
        self._manager.reload()
        return aside

    # -- queries -------------------------------------------------------------------------
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

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reason(err: Exception) -> str:
    """One readable line for an Orbax/TensorStore error: its first line, without object
    reprs (``<bound method ...>``), cut at a word boundary."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = re.sub(r"<[^<>]*(?:bound method|object at|function)[^<>]*>?", "", text)
    text = re.sub(r"\s+", " ", text).strip(" :;,")
    if len(text) > 160:
        text = text[:160].rsplit(" ", 1)[0] + " ..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _check_iterator(iterator: Any) -> None:
    """A grain ``DatasetIterator`` (``get_state``/``set_state``), or a one-line TypeError
    before Orbax's save thread would meet it."""
    if not all(callable(getattr(iterator, m, None)) for m in ("get_state", "set_state")):
        raise TypeError(
            f"data iterator: a {type(iterator).__name__} has no position to checkpoint; pass a "
            "grain iterator (iter(grain.MapDataset...to_iter_dataset())) or none"
        )


# --- checkpoints as a library: one call each ---------------------------------------------------


def save_checkpoint(
    directory: str | Path,
    state: Any,
    step: int,
    *,
    iterator: grain.DatasetIterator | None = None,
    keep: int | None = None,
) -> Path:
    """Save ``state`` (any pytree of arrays: a ``TrainState``, a dict of parameters ...) and
    optionally a grain ``iterator``'s position as step ``step`` of ``directory`` (created),
    with a SHA-256 digest of each part (see :class:`Checkpoints`). Waits until it is on disk;
    returns the step's folder. ``keep``: how many steps the folder keeps (default: all).

    Errors are one line: ValueError for a missing state, a negative step or a step already
    saved; TypeError for an iterator without a position (not grain's)."""
    if state is None:
        raise ValueError("save_checkpoint: state is None; pass the pytree to save")
    if not jax.tree.leaves(state):
        raise ValueError("save_checkpoint: state holds no arrays")
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"save_checkpoint: step must be an integer >= 0, got {step!r}")
    if iterator is not None:
        _check_iterator(iterator)
    config = CheckpointConfig(keep=keep or 2**31 - 1, async_save=False)
    with Checkpoints(directory, config) as checkpoints:
        if int(step) in checkpoints.all_steps():
            raise ValueError(
                f"save_checkpoint: {checkpoints.directory} already holds step {int(step)}; "
                "save under a new step"
            )
        checkpoints.save(int(step), state, iterator)
        checkpoints.wait()
        return checkpoints.directory / str(int(step))


def restore_checkpoint(
    directory: str | Path,
    like: Any = None,
    *,
    step: int | None = None,
    iterator: grain.DatasetIterator | None = None,
) -> Any:
    """The state saved by :func:`save_checkpoint` at ``step`` (default: the latest) in
    ``directory``, shaped like ``like`` (a pytree of the same structure: arrays or
    ``jax.ShapeDtypeStruct``), every part checked against its digest. Without ``like`` the
    arrays come back as saved, in nested dicts (unchecked: the digest covers the saved tree's
    own types). With ``iterator``, its position is set to the saved one.

    Errors are one line: ValueError when the folder or step does not exist, or the step was
    saved without an iterator; :class:`CorruptCheckpoint` for a damaged step."""
    path = Path(directory)
    if not path.is_dir():
        raise ValueError(f"restore_checkpoint: {path} does not exist")
    if iterator is not None:
        _check_iterator(iterator)
    with Checkpoints(path, CheckpointConfig(keep=2**31 - 1, async_save=False)) as checkpoints:
        steps = checkpoints.all_steps()
        if not steps:
            raise ValueError(f"restore_checkpoint: {path} holds no checkpoint")
        step = max(steps) if step is None else step
        if step not in steps:
            raise ValueError(
                f"restore_checkpoint: {path} has no step {step} (steps: "
                f"{', '.join(map(str, sorted(steps)))})"
            )
        if like is None:
            return _restore_as_saved(checkpoints, step, iterator)
        return checkpoints.restore(step, like, iterator)


def _restore_as_saved(checkpoints: Checkpoints, step: int, iterator) -> Any:
    """The saved state without a template: nested dicts of arrays. (Its digest covers the
    saved tree's own types, which a template-less restore does not know, so it is checked
    only when a ``like`` is given.)"""
    return checkpoints._read(step, {STATE: ocp.args.StandardRestore()}, iterator)[STATE]
