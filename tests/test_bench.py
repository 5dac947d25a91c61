"""Every benchmark's dependencies install with the README's install command.

A newcomer runs ``pip install -e .[dev]`` and then ``python bench/backtest.py``: each
third-party module a benchmark imports (at the top or inside a function) must import,
and must come from a distribution that ``pyproject.toml`` declares, at runtime or in the
dev extras, so a reference tool cannot again be missing from every extra.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def third_party(path: Path) -> set[str]:
    local = {p.stem for p in BENCH.glob("*.py")}
    return {
        n
        for n in imported_modules(path)
        if n not in sys.stdlib_module_names and n not in local and n != "asterai"
    }


def declared() -> set[str]:
    """The distributions installed by ``pip install -e .[dev]``: the runtime ones, the
    dev extra's and those of the extras it names (``asterai[serve,docs]``)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    specs, todo, seen = list(project["dependencies"]), ["dev"], set()
    while todo:
        extra = todo.pop()
        seen.add(extra)
        for spec in extras[extra]:
            if spec.startswith(f"{project['name']}["):
                todo += [e for e in spec[spec.index("[") + 1 : -1].split(",") if e not in seen]
            else:
                specs.append(spec)
    return {re.split(r"[<>=!~\[; ]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}


BENCHMARKS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def test_every_benchmark_is_checked() -> None:
    assert {p.name for p in BENCHMARKS} >= {"backtest.py", "features.py", "pipeline.py"}


@pytest.mark.parametrize("bench", BENCHMARKS, ids=lambda p: p.name)
def test_a_benchmarks_dependencies_import_and_are_declared(bench: Path) -> None:
    owners = importlib.metadata.packages_distributions()
    wanted = declared()
    for module in sorted(third_party(bench)):
        importlib.import_module(module)  # installed by `pip install -e .[dev]`
        dists = {d.lower().replace("_", "-") for d in owners.get(module, [])}
        assert dists & wanted, (
            f"{bench.name} imports {module} (from {sorted(dists) or 'no distribution'}), "
            "which pyproject.toml declares neither at runtime nor in the dev extras"
        )
