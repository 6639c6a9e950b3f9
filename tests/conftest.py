"""Shared fixtures: a session-wide TFDS data directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bundled datasets are built once per session here, never in the user's cache."""
    path = tmp_path_factory.mktemp("tensorflow_datasets")
    # Compiled programs are cached for the session (never in the user's cache): the many
    # small runs of the suite share most of their programs.
    os.environ.setdefault("JAXTRAIN_CACHE_DIR", str(tmp_path_factory.mktemp("xla_cache")))
    from jaxtrain.compilation_cache import enable_compilation_cache

    enable_compilation_cache()
    previous = os.environ.get("JAXTRAIN_DATA_DIR")
    os.environ["JAXTRAIN_DATA_DIR"] = str(path)
    from jaxtrain.data import LOCAL_BUILDERS, load_tfds

    for name in LOCAL_BUILDERS:  # build once up front so no test depends on running first
        load_tfds(name, path)
    yield path
    if previous is None:
        os.environ.pop("JAXTRAIN_DATA_DIR", None)
    else:
        os.environ["JAXTRAIN_DATA_DIR"] = previous
