"""The public API: every exported name resolves, and importing the CLI stays light."""

from __future__ import annotations

import subprocess
import sys

import jaxtrain


def test_every_public_name_resolves() -> None:
    for name in jaxtrain.__all__:
        assert getattr(jaxtrain, name) is not None, name


def test_cli_help_does_not_import_jax() -> None:
    code = (
        "import sys; from jaxtrain.cli import _parser; _parser(); "
        "print('jax' in sys.modules, 'tensorflow_datasets' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
