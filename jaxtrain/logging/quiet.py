"""Library log messages that say nothing to a jaxtrain user, filtered out of the console.

Each one is a known, harmless message of a library jaxtrain drives on purpose:

- Orbax (through absl logging): ``Requested `tracked_metric`; did not provide metrics.``
  when a checkpoint is saved without validation metrics (a stop by a signal, a sweep's
  population record). jaxtrain ranks those steps itself.
- tensorboardX: ``NaN or Inf found in input tensor.`` for each non-finite scalar. jaxtrain
  logs a non-finite metric on purpose (``metrics.jsonl`` holds it as ``null``; the run's own
  warning names the step).

Only these exact messages are dropped; every other warning of these loggers still shows.
"""

from __future__ import annotations

import logging

_DROPPED = {
    "absl": ("Requested `tracked_metric`; did not provide metrics.",),
    "tensorboardX.x2num": ("NaN or Inf found in input tensor.",),
}


class _Drop(logging.Filter):
    """Drops records whose message starts with one of ``messages``."""

    def __init__(self, messages: tuple[str, ...]):
        super().__init__()
        self.messages = messages

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: let logging report it
            return True
        return not message.startswith(self.messages)


def quiet_library_warnings() -> None:
    """Install the filters (idempotent: a logger gets one filter of ours at most)."""
    for name, messages in _DROPPED.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(messages))
