"""Count the test suite's assertions against an independent reference (docs/testing.md).

A test function counts when its source (or a module-level helper it calls) uses a reference
(by name, or through a name the module imports from it)
the code under test does not produce itself: scikit-learn, fairlearn, SciPy, cleanlab,
statsmodels, NumPy's linear algebra, the standard library's statistics or lzma (the xz
baselines), Optax's own optimizers, or a second run of jaxtrain that must agree bitwise (a
single-device, standalone, uninterrupted or sequential run). Its assertions are the
``assert`` statements plus ``np.testing.assert_*`` / ``pytest.approx`` / ``assert_*`` calls.

    python scripts/count_reference_asserts.py [TESTS_DIR]      # totals, then per file
    python scripts/count_reference_asserts.py --by-marker      # default suite vs slow

The count is a heuristic (it reads source, it does not run anything); its use is comparing
two versions of the suite, e.g. before and after moving tests behind the ``slow`` marker.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import Counter
from pathlib import Path

REFERENCES = re.compile(
    r"sklearn|fairlearn|scipy|cleanlab|statsmodels|np\.linalg|numpy\.linalg|statistics\."
    r"|lzma|optax\.(adamw|adam|sgd)\(|standalone|single[_ -]device|uninterrupted|sequential"
    r"|closed[_ -]form|reference|by hand|brute",
    re.IGNORECASE,
)


def _is_assert_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    name = ast.unparse(node.func)
    return name.rsplit(".", 1)[-1].startswith("assert_") or name.endswith("approx")


def _assertions(function: ast.AST) -> int:
    count = 0
    for node in ast.walk(function):
        if isinstance(node, ast.Assert):
            count += 1
        elif _is_assert_call(node) and not _inside_assert(node, function):
            count += 1
    return count


def _inside_assert(target: ast.AST, function: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Assert) and any(child is target for child in ast.walk(node))
        for node in ast.walk(function)
    )


def _reference_names(tree: ast.Module) -> set[str]:
    """Names the module imports from a reference library (``from sklearn.metrics import
    f1_score``: ``f1_score``), which a test may use without spelling the library's name."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and REFERENCES.search(node.module or ""):
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if REFERENCES.search(alias.name):
                    names.add(alias.asname or alias.name.split(".")[0])
    return names


def _slow(function: ast.FunctionDef, module_slow: bool) -> bool:
    marks = [ast.unparse(d) for d in function.decorator_list]
    return module_slow or any("mark.slow" in m for m in marks)


def count_file(path: Path) -> tuple[Counter, Counter]:
    """(assertions against a reference, test functions with any) by ``default``/``slow``."""
    source = path.read_text()
    tree = ast.parse(source)
    module_slow = "pytestmark = pytest.mark.slow" in source
    imported = _reference_names(tree)
    helpers = {
        node.name: ast.get_source_segment(source, node) or ""
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("test_")
    }
    asserts, tests = Counter(), Counter()
    for node in tree.body:
        if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
            continue
        text = ast.get_source_segment(source, node) or ""
        called = {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call)
                  and isinstance(n.func, ast.Name)}  # fmt: skip
        text += "".join(helpers[name] for name in called if name in helpers)
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        if not (REFERENCES.search(text) or used & imported):
            continue
        kind = "slow" if _slow(node, module_slow) else "default"
        n = _assertions(node)
        if n:
            asserts[kind] += n
            tests[kind] += 1
    return asserts, tests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tests", nargs="?", default="tests")
    parser.add_argument("--by-marker", action="store_true")
    args = parser.parse_args(argv)
    total_asserts, total_tests = Counter(), Counter()
    rows = []
    for path in sorted(Path(args.tests).glob("test_*.py")):
        asserts, tests = count_file(path)
        total_asserts.update(asserts)
        total_tests.update(tests)
        rows.append((path.name, sum(asserts.values()), sum(tests.values())))
    all_asserts, all_tests = sum(total_asserts.values()), sum(total_tests.values())
    print(f"reference assertions: {all_asserts} in {all_tests} test functions")
    if args.by_marker:
        for kind in ("default", "slow"):
            print(f"  {kind}: {total_asserts[kind]} in {total_tests[kind]} test functions")
    else:
        for name, n_asserts, n_tests in rows:
            if n_asserts:
                print(f"  {name}: {n_asserts} ({n_tests} tests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
