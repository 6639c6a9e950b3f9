"""Every code block of docs/library.md runs: each section's blocks in order, in a fresh
folder (a block starting ``# file: NAME`` is written there for the next ones), so the tutorial
cannot rot."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from jaxtrain import registry
from tests.support import ROOT

DOC = ROOT / "docs" / "library.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
FILE = re.compile(r"^# file: (\S+)")
RUNS = {"python", "yaml"}  # toml blocks show a package's pyproject.toml: nothing to run


def sections() -> list[tuple[str, list[tuple[str, str]]]]:
    """(heading, [(language, code), ...]) of every section holding a block that runs."""
    found = []
    for part in re.split(r"^## ", DOC.read_text(), flags=re.MULTILINE)[1:]:
        title = part.splitlines()[0].strip()
        blocks = [(lang, code) for lang, code in FENCE.findall(part) if lang in RUNS]
        if blocks:
            found.append((title, blocks))
    return found


SECTIONS = sections()
SLOW = ("2.", "4.")  # a full run with its report, a vmapped population: over 10 s on 2 cores
CASES = [
    pytest.param(
        title, blocks, id=title, marks=[pytest.mark.slow] if title.startswith(SLOW) else []
    )
    for title, blocks in SECTIONS
]


def test_the_tutorial_has_a_script_for_each_part_of_the_toolkit() -> None:
    titles = " ".join(title for title, _ in SECTIONS)
    for part in ("model in a config", "fit", "Optax", "Sweep", "Data", "sequences",
                 "Checkpoints"):  # fmt: skip
        assert part in titles, part
    for _, blocks in SECTIONS:
        for lang, code in blocks:
            assert lang == "python" or FILE.match(code), "a yaml block must be a file"


@pytest.mark.parametrize(("title", "blocks"), CASES)
def test_every_block_of_the_section_runs(title, blocks, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JAXTRAIN_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.syspath_prepend(str(tmp_path))
    registered = {kind: dict(names) for kind, names in registry._REGISTERED.items()}
    modules = set(sys.modules)
    try:
        for index, (_, code) in enumerate(blocks):
            target = FILE.match(code)
            if target:
                (tmp_path / target.group(1)).write_text(code)
                continue
            namespace = {"__name__": "__main__"}
            exec(compile(code, f"{DOC}: {title}, block {index + 1}", "exec"), namespace)  # noqa: S102
    finally:
        for kind, names in registered.items():
            registry._REGISTERED[kind].clear()
            registry._REGISTERED[kind].update(names)
        registry._RESOLVED.clear()
        for name in set(sys.modules) - modules:
            module = sys.modules[name]
            if str(getattr(module, "__file__", "") or "").startswith(str(tmp_path)):
                del sys.modules[name]
