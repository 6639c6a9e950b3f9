"""Reproducing a run: environment.json names what decides the last bits of a result."""

from __future__ import annotations

from pathlib import Path

import pytest
from numpy._core._multiarray_umath import __cpu_features__ as NUMPY_CPU

from jaxtrain.logging.report import write_report
from jaxtrain.runner.run_dirs import environment

# numpy's own runtime CPU detection (its dispatch table) against our /proc/cpuinfo reading.
NUMPY_NAMES = {"AVX": "avx", "AVX2": "avx2", "FMA3": "fma", "F16C": "f16c", "AVX512F": "avx512f",
               "SSE42": "sse4_2", "AVX512BW": "avx512bw"}  # fmt: skip


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads Linux /proc/cpuinfo")
def test_environment_records_the_cpu_flags_numpy_detects(monkeypatch) -> None:
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    monkeypatch.setenv("JAX_DEFAULT_MATMUL_PRECISION", "highest")
    env = environment()
    cpu = env["cpu"]
    assert cpu["model"]
    assert cpu["cores"] >= 1
    for numpy_name, flag in NUMPY_NAMES.items():
        if numpy_name in NUMPY_CPU:
            assert (flag in cpu["flags"]) == bool(NUMPY_CPU[numpy_name]), flag
    assert env["xla_flags"] == "--xla_cpu_enable_fast_math=false"
    assert env["environment_variables"]["JAX_DEFAULT_MATMUL_PRECISION"] == "highest"
    assert env["backend"] == "cpu"
    assert set(env["jax_settings"]) >= {"jax_enable_x64", "jax_default_matmul_precision"}


def test_report_shows_the_cpu_on_one_line(tmp_path: Path) -> None:
    cpu = {"model": "Some CPU", "cores": 2, "flags": ["avx", "fma"]}
    write_report(tmp_path, {"name": "r", "environment": {"cpu": cpu, "xla_flags": ""}})
    text = (tmp_path / "report.md").read_text()
    assert "- **cpu**: model Some CPU; cores 2; flags avx, fma" in text
    assert "- **xla_flags**: none" in text
