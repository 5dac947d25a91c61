"""The package's layering, read from the source with ``ast``.

Imports run down the flow: settings and the small shared facts
(``config``, ``intervals``, ``limits``, ``provenance``) are the ground floor;
the exchange layer knows nothing of storage; the feature plots read the
feature types, never the feature stage. An import inside a function counts
like one at the top of a module.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import asterai

PACKAGE = Path(asterai.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports anywhere in its body, relative imports resolved.

    ``from pkg import name`` counts as importing ``pkg`` and ``pkg.name`` (the
    name may be a submodule).
    """
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            out.add(source)
            out.update(f"{source}.{alias.name}" for alias in node.names)
    return out


GRAPH = {module_name(p): imported_modules(p) for p in sorted(PACKAGE.rglob("*.py"))}


def imports_from(module: str, targets: tuple[str, ...]) -> list[str]:
    return sorted(m for m in GRAPH[module] if any(m == t or m.startswith(t + ".") for t in targets))


def test_the_source_tree_is_read():
    read = {"asterai.config", "asterai.exchange.replay.recording", "asterai.features.build"}
    assert read <= set(GRAPH)
    assert "asterai.intervals" in GRAPH["asterai.config"]


@pytest.mark.parametrize(
    "module", ["asterai.config", "asterai.intervals", "asterai.limits", "asterai.provenance"]
)
def test_the_ground_floor_imports_nothing_above_it(module):
    above = tuple(
        f"asterai.{p}" for p in ("exchange", "data", "features", "models", "backtest", "pipeline")
    )
    assert imports_from(module, above) == []
    assert imports_from(module, ("asterai.cli", "asterai.deploy")) == []


def test_the_exchange_layer_knows_nothing_of_storage():
    exchange = [m for m in GRAPH if m == "asterai.exchange" or m.startswith("asterai.exchange.")]
    assert len(exchange) > 3
    offending = {m: imports_from(m, ("asterai.data",)) for m in exchange}
    assert {m: found for m, found in offending.items() if found} == {}


def test_the_replay_package_has_no_import_cycle():
    """The stand-in exchange's files import each other in one direction only: no
    submodule imports the package's ``__init__`` (it only re-exports), and no two
    submodules need each other, directly or round a longer circle."""
    package = "asterai.exchange.replay"
    members = {m for m in GRAPH if m == package or m.startswith(package + ".")}
    assert {f"{package}.{name}" for name in ("market", "http", "server", "streams")} <= members
    graph = {m: {i for i in GRAPH[m] if i in members and i != m} for m in members}
    assert [m for m in members - {package} if package in graph[m]] == []
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as err:
        pytest.fail(f"the replay package imports in a circle: {' -> '.join(err.args[1])}")


def test_feature_plots_and_the_feature_stage_do_not_import_each_other():
    build, plots = "asterai.features.build", "asterai.features.plots"
    assert imports_from(plots, (build,)) == []
    assert not (imports_from(build, (plots,)) and imports_from(plots, (build,)))
    types = "asterai.features.types"
    assert types in GRAPH[plots] and types in GRAPH[build]


def test_moved_facts_are_still_one_object():
    from asterai.data import store
    from asterai.exchange import weights
    from asterai.limits import OPTIMAL_KLINE_PAGE
    from asterai.provenance import PROVENANCE_KEY

    assert store.PROVENANCE_KEY is PROVENANCE_KEY == b"asterai.provenance"
    assert weights.OPTIMAL_KLINE_PAGE is OPTIMAL_KLINE_PAGE
    # the ground-floor page size still follows from the weight table it is re-exported beside
    per_bar = {n: weights.klines_weight(n) / n for n in range(1, weights.KLINES_MAX_LIMIT + 1)}
    assert min(per_bar, key=lambda n: (per_bar[n], n)) == OPTIMAL_KLINE_PAGE
