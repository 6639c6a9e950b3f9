"""The ``distributed:`` section: joining a multi-process JAX job (several hosts, or several
processes on one host)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from jaxtrain.config.base import STRICT, NonNegativeInt, PositiveInt


@dataclass(config=STRICT)
class DistributedConfig:
    """Arguments of ``jax.distributed.initialize``; each may instead come from the environment.

    ``coordinator_address`` (``host:port`` of process 0), ``num_processes`` and
    ``process_id`` default to ``JAXTRAIN_COORDINATOR``, ``JAXTRAIN_NUM_PROCESSES`` and
    ``JAXTRAIN_PROCESS_ID``; left unset everywhere, JAX detects them itself on clusters it
    knows (SLURM, Open MPI, Cloud TPU). ``local_device_ids`` limits the process to some of
    its host's accelerators (one process per GPU, say). ``initialization_timeout`` is in
    seconds. On CPU the processes exchange collectives through gloo.
    """

    coordinator_address: Annotated[str, Field(min_length=3)] | None = None
    num_processes: PositiveInt | None = None
    process_id: NonNegativeInt | None = None
    local_device_ids: tuple[NonNegativeInt, ...] | None = None
    initialization_timeout: PositiveInt = 300

    @model_validator(mode="after")
    def _process_in_job(self) -> DistributedConfig:
        known = self.num_processes is not None and self.process_id is not None
        if known and self.process_id >= self.num_processes:
            raise ValueError(
                f"process_id: {self.process_id} is not below num_processes={self.num_processes} "
                "(processes are numbered from 0)"
            )
        return self
