"""Multi-process runs: joining the job (``jax.distributed``) and who writes files.

Every process runs the same program on its own devices and its own rows of each batch;
collectives join them. Only process 0 writes the run directory's logs and reports
(:func:`is_writer`); checkpoints are written collectively through Orbax.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from jaxtrain.config import ConfigError

ENV = {  # distributed: key -> environment variable that may supply it
    "coordinator_address": "JAXTRAIN_COORDINATOR",
    "num_processes": "JAXTRAIN_NUM_PROCESSES",
    "process_id": "JAXTRAIN_PROCESS_ID",
}


def initialize(config: Any | None) -> bool:
    """Join a multi-process job when ``config`` (a ``distributed:`` section) or the
    environment (``JAXTRAIN_COORDINATOR``, ``JAXTRAIN_NUM_PROCESSES``, ``JAXTRAIN_PROCESS_ID``)
    asks for one; returns whether this process is part of one. Must run before JAX touches a
    device. Raises ConfigError naming the key when a setting is missing or malformed."""
    settings = _settings(config)
    if settings is None:
        return False
    if jax.distributed.is_initialized():
        return True
    # CPU devices exchange collectives through gloo (only the CPU backend reads this flag).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**settings)
    return True


def is_writer() -> bool:
    """True on the process that writes logs, reports and the run directory (process 0)."""
    return jax.process_index() == 0


def broadcast_text(text: str | None, length: int = 4096) -> str:
    """Process 0's ``text`` on every process (e.g. the run directory process 0 created)."""
    from jax.experimental import multihost_utils

    buffer = np.zeros(length, np.uint8)
    if is_writer():
        encoded = (text or "").encode()
        if len(encoded) > length:
            raise ValueError(f"cannot share a path longer than {length} bytes between processes")
        buffer[: len(encoded)] = np.frombuffer(encoded, np.uint8)
    shared = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
    return bytes(shared[shared != 0].tolist()).decode()


def _settings(config: Any | None) -> dict[str, Any] | None:
    values: dict[str, Any] = {}
    for key, variable in ENV.items():
        value = getattr(config, key, None) if config is not None else None
        if value is None and os.environ.get(variable):
            raw = os.environ[variable]
            if key != "coordinator_address":
                try:
                    value = int(raw)
                except ValueError as error:
                    raise ConfigError(f"{variable}={raw!r}: expected an integer") from error
            else:
                value = raw
        values[key] = value
    if config is None and all(v is None for v in values.values()):
        return None
    if values["num_processes"] is not None and values["process_id"] is not None:
        if values["process_id"] >= values["num_processes"]:
            raise ConfigError(
                f"distributed.process_id={values['process_id']} must be below "
                f"num_processes={values['num_processes']}"
            )
    settings = {k: v for k, v in values.items() if v is not None}
    if config is not None:
        if config.local_device_ids is not None:
            settings["local_device_ids"] = list(config.local_device_ids)
        settings["initialization_timeout"] = config.initialization_timeout
    return settings
