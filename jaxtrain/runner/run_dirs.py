"""Run directories: where they go, how they are named, what they hold first, who holds them."""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jaxtrain.config import Config, dump_config
from jaxtrain.files import read_json, write_json, write_text_atomic

RUNS_DIR_ENV = "JAXTRAIN_RUNS_DIR"
CONFIG_FILE = "config.yaml"
DATA_STATS_FILE = "data_stats.json"  # statistics fitted on the training split, reused later
SPLIT_ROWS_FILE = "split_rows.csv"  # which source row went to which split
LOCK_FILE = ".lock"


class RunError(ValueError):
    """A run directory that cannot be used as asked (missing, not a jaxtrain run, ...)."""


def default_runs_dir() -> Path:
    """``$JAXTRAIN_RUNS_DIR``, else ``./runs``."""
    return Path(os.environ.get(RUNS_DIR_ENV, "runs"))


def check_runs_dir(runs_dir: str | Path | None) -> Path:
    """The folder new runs go into (default :func:`default_runs_dir`), checked before any
    work starts: a RunError when it is a file or sits under one, or cannot be written."""
    parent = Path(runs_dir) if runs_dir else default_runs_dir()
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise RunError(f"--runs-dir {parent}: {folder} is not a directory")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise RunError(f"--runs-dir {parent}: {folder} is not writable")
            break
    return parent


def new_run_dir(runs_dir: Path, name: str) -> Path:
    """Create ``runs_dir/name/<YYYYmmdd-HHMMSS>[-k]/``, never reusing an existing folder."""
    parent = Path(runs_dir) / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file in the way, no permission, a full disk
        raise RunError(f"{parent}: cannot create the run folder ({err.strerror})") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        candidate = parent / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RunError(f"{parent}: could not find a free run directory name")


def start_run(
    config: Config, runs_dir: str | Path | None, data, suffix: str = "", what: str = "run directory"
) -> Path:
    """A new run directory for ``config`` (under ``runs_dir``, default :func:`default_runs_dir`)
    holding the resolved ``config.yaml``, ``environment.json``, ``split_rows.csv`` and, where
    data preparation reported anything, ``data_report.md``/``.json``; announced on stderr
    (``jaxtrain: <what>: <path>``) before anything else is said about it. Called only after
    every check passed."""
    from jaxtrain.data import write_data_report
    from jaxtrain.logging.progress import announce

    run_dir = new_run_dir(check_runs_dir(runs_dir), config.name + suffix)
    announce(run_dir, what)
    dump_config(config, run_dir / CONFIG_FILE)
    write_json(run_dir / "environment.json", environment())
    if data.report is not None:
        write_data_report(run_dir, data.report)
        warn_leakage(data.report.leakage, run_dir)
    if data.rows:
        write_split_rows(run_dir / SPLIT_ROWS_FILE, data.rows)
    return run_dir


def write_split_rows(path: Path, rows: dict) -> Path:
    """``split_rows.csv``: ``row,split`` for every example the run uses, in split order
    (train, validation, test), each row its position in the source (a table's data row,
    counting from 0 after the header; for a bundled dataset, its position in the source's
    own splits laid end to end). Rows dropped by data preparation are absent."""
    lines = ["row,split"]
    for split, positions in rows.items():
        lines += [f"{int(r)},{split}" for r in positions]
    return write_text_atomic(path, "\n".join(lines) + "\n")


def warn_leakage(leakage: dict | None, run_dir: Path) -> None:
    """A console warning when the same example sits in two splits (data_report.md lists
    them; ``data.prepare.leakage: error`` refuses such data, ``off`` skips the check)."""
    if not leakage or not leakage.get("found"):
        return
    pairs = leakage.get("pairs") or {}
    # tables count shared examples; text counts held-out passages sharing a run of words
    what = "passage(s) share text with an earlier split" if "shingle_words" in leakage else (
        "example(s) sit in two splits")  # fmt: skip
    detail = ", ".join(
        f"{pair} {d.get('examples', d.get('passages'))}" for pair, d in pairs.items()
    )
    print(
        f"jaxtrain: warning: {leakage['found']} {what} ({detail}): held-"
        f"out metrics will be optimistic; see {run_dir / 'data_report.md'} "
        "(data.prepare.leakage: error refuses such data)",
        file=sys.stderr,
        flush=True,
    )


# CPU features XLA's CPU code generator may use: vector width and fused multiply-add change
# the order (and so the rounding) of float sums, hence the last bits of a result.
_SIMD_FLAGS = ("sse", "ssse", "avx", "fma", "f16c", "amx", "bmi", "popcnt")
_ENV_PREFIXES = ("XLA_", "JAX_", "TF_CPP_", "OMP_", "MKL_", "OPENBLAS_", "CUDA_VISIBLE", "TPU_")


def cpu_description() -> dict[str, Any]:
    """``{"model", "cores", "flags"}`` of the host CPU: the model name, the logical cores
    this process may use, and the instruction-set extensions XLA can target (SSE/AVX/FMA/
    AMX families; Linux ``/proc/cpuinfo``, macOS ``sysctl``; ``None`` where unknown)."""
    model, flags = None, None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        try:
            text = cpuinfo.read_text(errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if model is None and key in ("model name", "Model", "cpu model"):
                model = value.strip()
            if flags is None and key in ("flags", "Features"):
                flags = value.split()
            if model is not None and flags is not None:
                break
    elif sys.platform == "darwin":
        model = _sysctl("machdep.cpu.brand_string")
        features = _sysctl("machdep.cpu.features") or ""
        flags = features.lower().replace(".", "_").split() or None
    if flags is not None:
        flags = sorted({f for f in flags if f.startswith(_SIMD_FLAGS)})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model or platform.processor() or None, "cores": cores, "flags": flags}


def _sysctl(name: str) -> str | None:
    try:
        return subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    """Versions, platform, devices, the git revision of the working directory, and what
    decides the last bits of a float result: the CPU (model, cores, SIMD flags), the XLA
    flags and the JAX settings and environment variables in force."""
    import flax
    import jax
    import jaxlib
    import optax

    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        revision = None
    return {
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "platform": platform.platform(),
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
        "git_revision": revision,
        "cpu": cpu_description(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax_settings": {
            "jax_enable_x64": bool(jax.config.jax_enable_x64),
            "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
            "jax_threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
        },
        "environment_variables": {
            k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)
        },
    }


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` for the block, or raise RunError at once if
    another process holds it. The OS releases the lock when its holder exits, even by
    ``kill -9``, so a crashed run never leaves its directory locked."""
    path = run_dir / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunError(
            f"{run_dir}: in use by another jaxtrain process (pid {holder}); wait for it or "
            "stop it before resuming or evaluating here"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def existing_run(run_dir: str | Path) -> Path:
    """``run_dir`` if it is a jaxtrain run directory, else a RunError."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError(f"{run_dir}: not a jaxtrain run directory (no {CONFIG_FILE})")
    return run_dir


def stored_stats(run_dir: Path) -> dict | None:
    """The statistics fitted when the run started, so later calls reuse them exactly."""
    path = run_dir / DATA_STATS_FILE
    return read_json(path, DATA_STATS_FILE) if path.is_file() else None


def write_result(run_dir: Path, name: str, result: dict) -> None:
    """A verb's JSON result (``eval.json`` ...) in the run directory, atomically."""
    write_json(run_dir / name, result)
