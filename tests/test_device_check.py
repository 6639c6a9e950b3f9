"""The GPU check (``scripts/device_check.sh``) runs here, on the CPU, in its dry-run form.

No GPU is needed to know the check works: ``--dry-run`` takes every measurement at tiny sizes
on whatever JAX finds and writes the same BENCHMARKS.md section the GPU run writes. The
default suite runs the Transformer part (the quick one); the slow suite runs every part.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

SCRIPT = ROOT / "scripts" / "device_check.sh"
ROW = re.compile(
    r"^(transformer_lm|resnet_cifar)\s+jaxtrain\s+\d+\s+([\d,.]+)\s+([\d.]+)\s+([\d.]+)\s+"
    r"([\d.]+)%$",
    re.MULTILINE,
)


def _dry_run(out: Path, parts: str | None = None) -> str:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"}
    if parts:
        env["DEVICE_CHECK_PARTS"] = parts
    process = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert process.returncode == 0, (process.stdout + process.stderr)[-3000:]
    return (out / "device_check.md").read_text()


def _check_rows(section: str, models: set[str]) -> None:
    rows = {m.group(1): m.groups()[1:] for m in ROW.finditer(section)}
    assert set(rows) == models, section
    for examples, step_ms, tflops, mfu in rows.values():
        assert float(examples.replace(",", "")) > 0 and float(step_ms) > 0
        assert float(tflops) >= 0 and 0 < float(mfu) < 100
    try:
        import torch  # noqa: F401

        assert re.search(r"^transformer_lm\s+pytorch\s+4\s+[\d,.]+", section, re.MULTILINE)
    except ImportError:
        assert "pytorch        4  skipped: PyTorch is not installed" in section


@pytest.mark.slow
def test_device_check_dry_run_measures_the_lm(tmp_path: Path) -> None:
    section = _dry_run(tmp_path, "lm")
    assert section.startswith("## GPU check: `scripts/device_check.sh`")
    assert "Command: `bash scripts/device_check.sh --dry-run`" in section
    _check_rows(section, {"transformer_lm"})
    assert re.search(r"^lm_mfu: 0\.\d{3}$", section, re.MULTILINE)
    # A section of BENCHMARKS.md: the figures sit in one fenced block.
    assert section.count("```") == 2


@pytest.mark.slow
def test_device_check_dry_run_takes_every_measurement(tmp_path: Path) -> None:
    section = _dry_run(tmp_path)
    _check_rows(section, {"transformer_lm", "resnet_cifar"})
    assert re.search(r"^sweep: 3 members vmapped .* [\d.]+ s; 3 sequential", section, re.M)
    assert re.search(r"^federated: one round of 10 clients [\d.]+ ms", section, re.MULTILINE)
    for key in ("lm_mfu", "sweep_vs_sequential", "round_vs_client_loop"):
        assert re.search(rf"^{key}: [\d.]+$", section, re.MULTILINE), key


def test_device_check_refuses_unknown_arguments(tmp_path: Path) -> None:
    process = subprocess.run(
        ["bash", str(SCRIPT), "--dryrun"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert process.returncode == 2
    assert "unknown argument '--dryrun'" in process.stderr
