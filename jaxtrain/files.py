"""Files of a run directory: written atomically, read back with one-line errors.

Every file a run writes (config.yaml, data_stats.json, metrics.json, report.md, eval.json, ...)
goes through :func:`write_text_atomic`: a temporary file in the same folder, flushed and
synced, then renamed over the target, so a process killed mid-write leaves the old file or
the new one, never half of one. JSON is strict: NaN and infinities become ``null``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


class DamagedFile(ValueError):
    """A run file that exists but cannot be read (truncated, not JSON, wrong encoding)."""


def write_text_atomic(path: str | Path, text: str, mode: int = 0o644) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically; returns the path."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by None, recursively
    (tuples become lists), so that strict JSON parsers accept the result."""
    if hasattr(value, "dtype") and hasattr(value, "tolist"):  # NumPy/JAX scalars and arrays
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


def write_json(path: str | Path, value: Any, *, indent: int | None = 2) -> Path:
    """Write ``value`` as strict JSON (non-finite floats as ``null``) atomically."""
    text = json.dumps(finite_json(value), indent=indent, allow_nan=False, default=_plain)
    return write_text_atomic(path, text + "\n")


def read_json(path: str | Path, what: str = "file") -> Any:
    """The JSON in ``path``; :class:`DamagedFile` (one line naming the file) when it is not
    readable JSON. A missing file raises FileNotFoundError as usual."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = err.msg if isinstance(err, json.JSONDecodeError) else type(err).__name__
        raise DamagedFile(
            f"{path}: the run's {what} is damaged ({reason}); it was probably cut short by a "
            "killed process. Restore it from a copy or start a new run"
        ) from None


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays, paths and the like as JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
