"""Pretrained weights into a new model, matched by path, with a report of what happened.

Sources are a jaxtrain run (Orbax checkpoint: parameters and model state such as batch
statistics) or a weights file (see :mod:`jaxtrain.transfer.weights_file`). Keys of the flat
views are parameter paths (``Conv_0/kernel``) for ``params`` and ``collection:path``
(``batch_stats:BatchNorm_0/mean``) for the other variable collections.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.config.transfer import TransferConfig
from jaxtrain.transfer.errors import TransferError
from jaxtrain.transfer.paths import flatten, matches, unflatten, unmatched
from jaxtrain.transfer.weights_file import WEIGHT_SUFFIXES, read_weights_file


@dataclass(frozen=True)
class TransferReport:
    """What initialisation from ``source`` (checkpoint ``step``) did, path by path:
    ``loaded`` from the source, ``initialised`` anew (the head, adapters, parameters the
    source lacks), ``dropped`` (in the source, unused); and what then ``trains`` and what is
    ``frozen`` (filled in by :func:`jaxtrain.transfer.plan.describe`)."""

    source: str
    step: int | None
    loaded: list[str]
    initialised: list[str]
    dropped: list[str]
    trains: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """The report as a page: counts first, then every path per category."""
        lines = [f"# Transfer from `{self.source}`" + (f" (step {self.step})" if self.step else "")]
        lines.append("")
        for name in ("loaded", "initialised", "dropped", "trains", "frozen"):
            paths = getattr(self, name)
            lines.append(f"## {name} ({len(paths)})")
            lines.append("")
            lines += [f"- `{p}`" for p in paths] or ["- none"]
            lines.append("")
        return "\n".join(lines)


def variables_flat(params: Any, model_state: Any) -> dict[str, Any]:
    """``params`` and the other collections as one flat dict (see the module docstring)."""
    flat = flatten(params)
    for collection, tree in (model_state or {}).items():
        flat.update({f"{collection}:{p}": v for p, v in flatten(tree).items()})
    return flat


def split_variables(flat: dict[str, Any]) -> tuple[dict, dict]:
    """The inverse of :func:`variables_flat`: ``(params, model_state)``."""
    params, others = {}, {}
    for key, value in flat.items():
        collection, sep, path = key.partition(":")
        if sep:
            others.setdefault(collection, {})[path] = value
        else:
            params[key] = value
    return unflatten(params), {c: unflatten(v) for c, v in others.items()}


def read_source(config: TransferConfig) -> tuple[str, int | None, dict[str, np.ndarray]]:
    """``(description, step, flat variables)`` of ``config.init_from``."""
    path = Path(config.init_from).expanduser()
    if not path.exists():
        raise TransferError(f"transfer.init_from: {path} does not exist")
    if path.suffix.lower() in WEIGHT_SUFFIXES:
        if not path.is_file():
            raise TransferError(f"transfer.init_from: {path} is not a file")
        return str(path), None, read_weights_file(path, config.names or {})
    if not path.is_dir():
        raise TransferError(
            f"transfer.init_from: {path} is a file but not a .safetensors or .npz weights file"
        )
    folder, step = checkpoint_folder(path, config.step)
    import orbax.checkpoint as ocp

    try:
        state = ocp.StandardCheckpointer().restore((folder / "state").absolute())
    except Exception as err:  # noqa: BLE001 - Orbax/TensorStore raise many types
        raise TransferError(
            f"transfer.init_from: {folder} cannot be restored ({type(err).__name__}: "
            f"{str(err)[:200]})"
        ) from None
    if not isinstance(state, dict) or "params" not in state:
        raise TransferError(f"transfer.init_from: {folder} holds no jaxtrain train state")
    flat = variables_flat(state["params"], state.get("model_state"))
    return str(folder), step, {k: np.asarray(v) for k, v in flat.items()}


def source_stats(config: TransferConfig) -> dict | None:
    """The pretrained run's ``data_stats.json`` (what its inputs were normalised with), or
    None for a weights file or when there is none (errors are left to :func:`read_source`)."""
    path = Path(config.init_from).expanduser()
    if not path.is_dir():
        return None
    if (path / "state").is_dir() and path.name.isdigit():
        path = path.parent.parent  # RUN/checkpoints/<step> -> RUN
    elif not (path / "checkpoints").is_dir():
        path = newest_run(path, config.step)
    stats = path / "data_stats.json"
    return json.loads(stats.read_text()) if stats.is_file() else None


def checkpoint_folder(path: Path, step: str | int) -> tuple[Path, int]:
    """The checkpoint folder ``path`` names: itself (``RUN/checkpoints/<step>``) or, for a run
    directory (or a folder of runs: its newest, see :func:`newest_run`), its ``step``
    checkpoint (``best``: the run's best step from metrics.json)."""
    if (path / "state").is_dir() and path.name.isdigit():
        return path, int(path.name)
    if not (path / "checkpoints").is_dir():
        path = newest_run(path, step)
    checkpoints = path / "checkpoints"
    if not checkpoints.is_dir():
        raise TransferError(
            f"transfer.init_from: {path} is neither a run directory (no checkpoints/) nor a "
            "checkpoint folder (RUN/checkpoints/<step>) nor a .safetensors/.npz file"
        )
    steps = sorted(
        int(p.name) for p in checkpoints.iterdir() if p.name.isdigit() and (p / "state").is_dir()
    )
    if not steps:
        raise TransferError(f"transfer.init_from: {checkpoints} holds no checkpoint")
    if step == "latest":
        chosen = steps[-1]
    elif step == "best":
        metrics = path / "metrics.json"
        if not metrics.is_file():
            raise TransferError(
                f"transfer.step: best needs {metrics} (written when a run finishes); set "
                f"transfer.step to latest or one of {steps}"
            )
        chosen = json.loads(metrics.read_text()).get("best_step")
    else:
        chosen = step
    if chosen not in steps:
        raise TransferError(
            f"transfer.step: {chosen} is not a checkpoint of {path} (steps: {steps})"
        )
    return checkpoints / str(chosen), chosen


def newest_run(parent: Path, step: str | int) -> Path:
    """The newest run directory under ``parent`` (``runs/<name>``; names are timestamps):
    with ``step: best`` the newest finished one (it has ``metrics.json``). ``parent`` itself
    when it holds none, so the caller's error names it."""
    runs = sorted(
        (p for p in parent.iterdir() if (p / "checkpoints").is_dir()), key=lambda p: p.name
    )
    if step == "best":
        runs = [p for p in runs if (p / "metrics.json").is_file()]
    return runs[-1] if runs else parent


def match(
    target: dict[str, Any],
    source: dict[str, np.ndarray],
    head: tuple[str, ...],
    description: str,
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Take each ``target`` entry from ``source`` by path unless it is in ``head``.

    Returns the new flat variables and ``{"loaded", "initialised", "dropped"}`` path lists.
    Raises TransferError naming the parameter on a shape mismatch outside the head, naming
    the pattern for a ``head`` pattern that matches nothing, and when nothing at all loads.
    """
    missing = unmatched(target, head)
    if missing:
        raise TransferError(f"transfer.head: {missing[0]!r} matches no parameter of the model")
    merged, loaded, initialised = {}, [], []
    for path, value in target.items():
        if matches(path.partition(":")[2] or path, head) or path not in source:
            merged[path] = value
            initialised.append(path)
            continue
        pretrained = source[path]
        if tuple(pretrained.shape) != tuple(value.shape):
            raise TransferError(
                f"transfer.init_from: parameter {path} has shape {tuple(pretrained.shape)} in "
                f"{description} but {tuple(value.shape)} in the model; list it in "
                "transfer.head to initialise it anew, or match the model to the checkpoint"
            )
        merged[path] = jnp.asarray(pretrained, dtype=value.dtype)
        loaded.append(path)
    if not loaded:
        theirs = ", ".join(list(source)[:3])
        ours = ", ".join(list(target)[:3])
        raise TransferError(
            f"transfer.init_from: no parameter of the model is in {description} "
            f"(it has {theirs}, ...; the model has {ours}, ...)"
        )
    dropped = [p for p in source if p not in loaded]
    return merged, {"loaded": loaded, "initialised": initialised, "dropped": dropped}


def load_pretrained(
    config: TransferConfig, params: Any, model_state: Any
) -> tuple[Any, Any, TransferReport]:
    """``(params, model_state, report)``: the model's freshly initialised variables with every
    parameter the source shares (outside ``config.head``) replaced by the pretrained one."""
    description, step, source = read_source(config)
    target = variables_flat(params, model_state)
    merged, lists = match(target, source, config.head, description)
    new_params, new_state = split_variables(merged)
    new_state = {**(model_state or {}), **new_state}
    # Same pytree types as the model's own trees (dicts), arrays on the default device.
    new_params = jax.tree.map(jnp.asarray, new_params)
    return new_params, new_state, TransferReport(description, step, **lists)
