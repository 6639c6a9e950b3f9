"""JAX's persistent compilation cache: a second run of the same program skips compiling it."""

from __future__ import annotations

import os
from pathlib import Path

import jax

CACHE_ENV = "JAXTRAIN_CACHE_DIR"  # a folder, or "off"
DEFAULT_CACHE_DIR = Path("~/.cache/jaxtrain/xla")
OFF = {"off", "none", "0", "false"}


def cache_dir() -> Path | None:
    """Where compiled programs are kept: ``$JAXTRAIN_CACHE_DIR`` (``off`` disables the cache),
    else ``$XDG_CACHE_HOME/jaxtrain/xla``, else ``~/.cache/jaxtrain/xla``."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in OFF else Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "jaxtrain" / "xla" if xdg else DEFAULT_CACHE_DIR.expanduser()


def enable_compilation_cache(path: str | Path | None = None) -> Path | None:
    """Turn JAX's persistent compilation cache on in ``path`` (default :func:`cache_dir`);
    returns the folder, or None when the cache is off. Every compiled program is kept
    (JAX's default keeps only those that took over a second to compile; on a CPU most of
    ours take less, and they add up). Entries are keyed by the program, the JAX/XLA version
    and the device, so a stale entry is never used; the folder can be deleted at any time."""
    folder = Path(path).expanduser() if path is not None else cache_dir()
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
