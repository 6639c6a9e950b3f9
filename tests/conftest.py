"""Shared fixtures: one TFDS data directory and one XLA cache for the whole test run.

Under pytest-xdist every worker uses the same two folders (the bundled datasets are built
once, a lock per dataset, the workers taking them in different orders), so programs one
worker compiled are cache hits for the other. The two folders are kept between runs in
``.pytest_cache/jaxtrain/``: a second ``make test`` compiles only what changed (entries are
keyed by the program, the JAX version, the XLA flags and the device, so a stale one is
never used; a full run adds about 40 MB, and deleting the folder is always safe).
``JAXTRAIN_TEST_CACHE=cold`` starts both empty in the run's temporary folder, as CI's fresh
clone does. The default suite compiles with ``tests.support.FAST_COMPILE``.

``--profile-tests FILE`` records, per test, its wall time, the XLA compilations, compile and
tracing seconds and compilation-cache hits it caused, the Python subprocesses it started,
its worker and when it finished (see docs/testing.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support import FAST_COMPILE


def pytest_configure(config: pytest.Config) -> None:
    """Before any test imports JAX: the default suite compiles with :data:`FAST_COMPILE`
    (``JAXTRAIN_TEST_XLA=default`` keeps XLA's default; ``-m slow`` always does). Every
    subprocess a test starts inherits the flags (``tests.support.forced_devices`` too).
    The cyclic garbage collector runs less often in the test processes."""
    # Tracing builds many short-lived objects: under the default thresholds (700, 10, 10)
    # Python's cyclic collector took 10% of the time of the federated and one-step tests
    # (7.6 s of 74 s, 4031 collections); under these, 0.6 s.
    gc.set_threshold(50_000, 50, 50)
    markers = config.getoption("markexpr", "") or ""
    slow_only = "slow" in markers and "not slow" not in markers
    if slow_only or os.environ.get("JAXTRAIN_TEST_XLA", "").lower() == "default":
        return
    flags = os.environ.get("XLA_FLAGS", "")
    chosen = {flag.split("=")[0] for flag in flags.split()}
    extra = [flag for flag in FAST_COMPILE.split() if flag.split("=")[0] not in chosen]
    os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--profile-tests",
        metavar="FILE",
        help="write per-test wall time, XLA compiles, cache hits and subprocesses (JSON lines)",
    )


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


KEPT = Path(__file__).resolve().parent.parent / ".pytest_cache" / "jaxtrain"


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this run's datasets and compiled programs live: kept between runs in
    :data:`KEPT`, or with ``JAXTRAIN_TEST_CACHE=cold`` the temporary folder every xdist
    worker of this run shares (the run's own otherwise)."""
    if os.environ.get("JAXTRAIN_TEST_CACHE", "").lower() != "cold":
        KEPT.mkdir(parents=True, exist_ok=True)
        return KEPT
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bundled datasets are built once here (never in the user's cache), then kept."""
    root = _shared_root(tmp_path_factory)
    path, cache = root / "tensorflow_datasets", root / "xla_cache"
    # Compiled programs are cached here (never in the user's cache): the many small
    # runs of the suite share most of their programs, across workers too.
    os.environ.setdefault("JAXTRAIN_CACHE_DIR", str(cache))
    from jaxtrain.compilation_cache import enable_compilation_cache

    enable_compilation_cache()
    previous = os.environ.get("JAXTRAIN_DATA_DIR")
    os.environ["JAXTRAIN_DATA_DIR"] = str(path)
    from jaxtrain.data import LOCAL_BUILDERS, load_tfds

    # Built once up front, before any test runs: a lock per dataset, and the xdist workers
    # take them in different orders, so two workers build two datasets at a time.
    names = list(LOCAL_BUILDERS)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    if int(worker.removeprefix("gw") or 0) % 2:
        names.reverse()
    for name in names:
        with _locked(root / f"dataset-{name}.lock"):
            load_tfds(name, path)
    yield path
    if previous is None:
        os.environ.pop("JAXTRAIN_DATA_DIR", None)
    else:
        os.environ["JAXTRAIN_DATA_DIR"] = previous


_TRACING = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
)


class _Profile:
    """Per test: XLA compilations and their seconds, tracing seconds, compilation-cache
    hits and Python subprocesses."""

    def __init__(self, path: Path):
        import jax.monitoring

        self.path, self.counts = path, Counter()
        jax.monitoring.register_event_duration_secs_listener(self._duration)
        jax.monitoring.register_event_listener(self._event)
        original = subprocess.Popen.__init__
        counts = self.counts

        def counted(popen, args, *rest, **kwargs):
            words = [str(a) for a in (args if isinstance(args, list | tuple) else [args])]
            if words and (words[0] == sys.executable or "python" in Path(words[0]).name):
                counts["python_subprocesses"] += 1
            return original(popen, args, *rest, **kwargs)

        subprocess.Popen.__init__ = counted

    def _duration(self, name: str, seconds: float, **_kwargs) -> None:
        if name == "/jax/core/compile/backend_compile_duration":
            self.counts["compiles"] += 1
            self.counts["compile_seconds"] += seconds
        elif name in _TRACING:
            self.counts["tracing_seconds"] += seconds

    def _event(self, name: str, **_kwargs) -> None:
        if name == "/jax/compilation_cache/cache_hits":
            self.counts["cache_hits"] += 1

    def record(self, nodeid: str, seconds: float) -> None:
        counts = {k: round(v, 3) if isinstance(v, float) else v for k, v in self.counts.items()}
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        row = {"test": nodeid, "seconds": round(seconds, 3), "worker": worker,
               "finished": round(time.time(), 2), **counts}  # fmt: skip
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        self.counts.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    target = item.config.getoption("--profile-tests")
    if not target:
        yield
        return
    if _PROFILE not in item.config.stash:
        item.config.stash[_PROFILE] = _Profile(Path(target))
    profile = item.config.stash[_PROFILE]
    started = time.perf_counter()
    yield
    profile.record(item.nodeid, time.perf_counter() - started)


_PROFILE = pytest.StashKey[_Profile]()
