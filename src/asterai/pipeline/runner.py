"""Pipeline stages, in the order of DESIGN.md, and the runner for ``asterai pipeline``.

Each stage is a library call that reads and writes the artifacts of DESIGN.md, so
any stage can be rerun alone (``--start-from`` / ``--stop-at``). Stages that this
version does not build yet are listed as such and never pretend to have run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asterai.config import Settings

STAGES: tuple[str, ...] = (
    "asset_discovery",
    "rate_limit_testing",
    "data_collection",
    "data_validation",
    "feature_engineering",
    "model_training_confluence",
    "model_training_aster_native",
    "backtesting",
)


class PipelineUsageError(ValueError):
    """An unknown stage name or an empty stage range."""


@dataclass(frozen=True, slots=True)
class StageResult:
    ok: bool
    summary: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    description: str
    run: Callable[[Settings, dict[str, Any]], StageResult] | None


def _discovery(settings: Settings, opts: dict[str, Any]) -> StageResult:
    from asterai.data.discovery import run_discovery

    result = run_discovery(settings, progress=opts.get("progress", False))
    counts = result.get("counts", {})
    return StageResult(
        True, f"{counts.get('total', 0)} symbols, {counts.get('trainable', 0)} trainable"
    )


def _rate_limits(settings: Settings, opts: dict[str, Any]) -> StageResult:
    from asterai.data.ratelimit_probe import run_ratelimit_probe

    result = run_ratelimit_probe(settings, progress=opts.get("progress", False))
    problems = result.get("problems") or []
    return StageResult(
        bool(result.get("ok", True)), "; ".join(problems) or "limits read, probe clean"
    )


def _collection(settings: Settings, opts: dict[str, Any]) -> StageResult:
    from asterai.data.collector import collect

    report = asyncio.run(
        collect(settings, symbols=opts.get("symbols"), progress=opts.get("progress", False))
    )
    totals = report.to_json()["totals"]
    summary = (
        f"{totals['ok']}/{totals['series']} series, {totals['bars_collected']} new bars, "
        f"{totals['requests']} requests, {totals['rate_limited_429']} rate-limited"
    )
    if report.aborted:
        return StageResult(False, f"aborted: {report.aborted}")
    if report.failures:
        names = ", ".join(f"{r.symbol} {r.interval}" for r in report.failures)
        return StageResult(False, f"{summary}; failed: {names}")
    return StageResult(True, summary)


def _validation(settings: Settings, opts: dict[str, Any]) -> StageResult:
    from asterai.data.gate import validate

    report = validate(settings, required=opts.get("symbols") or ())
    summary = (
        f"{len(report.trainable)} trainable, {len(report.excluded)} excluded, "
        f"{len(report.contaminated)} contaminated"
    )
    details = [
        f"  {info['outcome']}: {symbol} ({', '.join(info['failed_rules'])}): "
        f"{info['refusals'][0]['message'] if info['refusals'] else ''}"
        for symbol, info in report.symbols.items()
        if info["outcome"] != "trainable"
    ]
    if details:
        details.insert(0, "  symbols left out (see `asterai validate` for every finding):")
    if not report.ok:
        return StageResult(
            False, f"{summary}; not ready: {'; '.join(report.reasons())}", tuple(details)
        )
    return StageResult(True, summary, tuple(details))


def _features(settings: Settings, opts: dict[str, Any]) -> StageResult:
    from asterai.data.gate import GateRefused
    from asterai.features.build import run_features

    try:
        summary = run_features(settings)
    except GateRefused as err:
        return StageResult(False, str(err))
    return StageResult(
        True,
        f"{summary['features']} features for {len(summary['symbols'])} symbols, {summary['rows']} rows, "
        f"{len(summary['charts'])} charts",
    )


def _training(name: str) -> Callable[[Settings, dict[str, Any]], StageResult]:
    def run(settings: Settings, opts: dict[str, Any]) -> StageResult:
        from asterai.data.gate import GateRefused
        from asterai.models.data import TrainingDataError
        from asterai.models.splits import SplitError
        from asterai.models.train import TrainingError, walk_forward

        try:
            result = walk_forward(name, settings)
        except (GateRefused, TrainingDataError, TrainingError, SplitError) as err:
            return StageResult(False, str(err))
        return StageResult(
            True,
            f"{len(result.folds)} folds, wrote {result.folder.name}/ and "
            f"{result.predictions_path.name}",
            tuple(f"  {line}" for line in [*result.verdict, *result.warnings]),
        )

    return run


def _backtest(settings: Settings, opts: dict[str, Any]) -> StageResult:
    from asterai.backtest.engine import BacktestInputError, run_backtest
    from asterai.data.gate import GateRefused

    try:
        out = run_backtest(settings)
    except (BacktestInputError, GateRefused) as err:
        return StageResult(False, str(err))
    m = out["metrics"]
    summary = (
        f"{m['trades']} trades, final equity {m['final_equity']:.2f} USDT "
        f"({m['total_return']:+.1%}); "
        + ", ".join(f"{k} {c['verdict']}" for k, c in m["criteria"].items())
    )
    failed = [k for k, c in m["criteria"].items() if c["verdict"] != "PASS"]
    if failed:
        return StageResult(False, f"{summary}; criteria not met: {', '.join(failed)}")
    return StageResult(True, summary)


REGISTRY: dict[str, Stage] = {
    "asset_discovery": Stage("asset_discovery", "discover every Aster symbol", _discovery),
    "rate_limit_testing": Stage(
        "rate_limit_testing", "read and probe the rate limits", _rate_limits
    ),
    "data_collection": Stage("data_collection", "collect klines and funding", _collection),
    "data_validation": Stage("data_validation", "gate the data: real, complete, sane", _validation),
    "feature_engineering": Stage("feature_engineering", "build confluence features", _features),
    "model_training_confluence": Stage(
        "model_training_confluence", "train XGBoost + LSTM", _training("confluence")
    ),
    "model_training_aster_native": Stage(
        "model_training_aster_native", "train the Aster-native model", _training("aster_native")
    ),
    "backtesting": Stage("backtesting", "backtest with full costs", _backtest),
}


@dataclass(slots=True)
class PipelineOutcome:
    ok: bool = True
    failure: str | None = None
    lines: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    not_built: list[str] = field(default_factory=list)


def select_stages(start_from: str | None, stop_at: str | None) -> list[str]:
    for name in (start_from, stop_at):
        if name is not None and name not in STAGES:
            raise PipelineUsageError(
                f"unknown stage {name!r}; stages, in order: {', '.join(STAGES)}"
            )
    first = STAGES.index(start_from) if start_from else 0
    last = STAGES.index(stop_at) if stop_at else len(STAGES) - 1
    if first > last:
        raise PipelineUsageError(f"--start-from {start_from} comes after --stop-at {stop_at}")
    return list(STAGES[first : last + 1])


def run_pipeline(
    settings: Settings,
    *,
    start_from: str | None = None,
    stop_at: str | None = None,
    validate_only: bool = False,
    symbols: list[str] | None = None,
    progress: bool = False,
) -> PipelineOutcome:
    """Run the selected stages in order; stop at the first that fails."""
    names = ["data_validation"] if validate_only else select_stages(start_from, stop_at)
    opts = {"symbols": symbols, "progress": progress}
    outcome = PipelineOutcome()
    for name in names:
        stage = REGISTRY[name]
        if stage.run is None:
            outcome.not_built.append(name)
            outcome.lines.append(f"[{name}] not built in this version yet: nothing ran")
            continue
        started = time.perf_counter()
        result = stage.run(settings, opts)
        outcome.ran.append(name)
        outcome.lines.append(
            f"[{name}] {'ok' if result.ok else 'FAILED'} in {time.perf_counter() - started:.1f} s: {result.summary}"
        )
        outcome.lines.extend(result.details)
        if not result.ok:
            outcome.ok = False
            outcome.failure = f"stage {name} failed: {result.summary}"
            break
    if outcome.not_built and outcome.ok:
        outcome.lines.append(
            "stages not built yet (skipped, not run): " + ", ".join(outcome.not_built)
        )
    return outcome
