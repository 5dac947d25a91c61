"""The stage registry: DESIGN.md's stages, in order, each with what it reads, what it
writes, the settings that shape it and the library call that runs it.

The CLI (``asterai pipeline``), ``scripts/run_complete_pipeline.py`` and the tests all
use this one registry. What a stage reads and writes is what the runner hashes to
decide whether the stage is current (``runner.py``); the settings sections named in
``config`` are the only ones whose change makes the stage run again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asterai.config import Settings
from asterai.paths import DataPaths

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

#: Stages after these that run only when asked (``--optimize``, ``--export-onnx``, or
#: named in ``--start-from`` / ``--stop-at``): the strategy search and the ONNX export.
OPTIONAL: tuple[str, ...] = ("optimization", "onnx_export")
ALL_STAGES: tuple[str, ...] = (*STAGES, *OPTIONAL)

#: The stages ``--validate-only`` runs: discovery, the probe and the gate over what is
#: stored; no collection, no training.
VALIDATE_ONLY: tuple[str, ...] = ("asset_discovery", "rate_limit_testing", "data_validation")


@dataclass(frozen=True, slots=True)
class StageResult:
    ok: bool
    summary: str
    details: tuple[str, ...] = ()
    numbers: dict[str, Any] = field(default_factory=dict)
    #: False: the stage finished but incompletely (some requests failed), so it is not
    #: recorded as current and the next run tries it again
    complete: bool = True


@dataclass(frozen=True, slots=True)
class Need:
    """An input a stage cannot run without, and the stage that makes it."""

    what: str
    paths: Callable[[DataPaths, Settings], list[Path]]
    made_by: str


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    description: str
    run: Callable[[Settings, dict[str, Any]], StageResult]
    #: files the stage reads (hashed: a change makes it run again)
    reads: Callable[[DataPaths, Settings], list[Path]]
    #: files the stage writes (hashed after it ran: missing or edited, it runs again)
    writes: Callable[[DataPaths, Settings], list[Path]]
    #: top-level settings whose values shape the stage's outputs
    config: tuple[str, ...]
    #: inputs that must exist before it starts
    needs: tuple[Need, ...] = ()
    #: talks to the exchange: its inputs include the exchange's clock
    network: bool = False


# -- what each stage reads and writes ----------------------------------------------------


def _files(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file()) if folder.is_dir() else []


def _tree(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def _existing(*paths: Path) -> list[Path]:
    return [p for p in paths if p.exists()]


def _collected(p: DataPaths, s: Settings) -> list[Path]:
    return _files(p.historical, "*.parquet")


def _collection_out(p: DataPaths, s: Settings) -> list[Path]:
    return [*_collected(p, s), *_existing(p.collection_report, p.collection_summary)]


def _gate_out(p: DataPaths, s: Settings) -> list[Path]:
    return _existing(p.validation, p.universe)


def _gate_in(p: DataPaths, s: Settings) -> list[Path]:
    return [*_collected(p, s), *_existing(p.discovery)]


def _features_out(p: DataPaths, s: Settings) -> list[Path]:
    return [*_files(p.features_dir, "*.parquet"), *_files(p.visualizations, "*.png")]


def _features_in(p: DataPaths, s: Settings) -> list[Path]:
    return [*_gate_in(p, s), *_gate_out(p, s)]


def _training_in(p: DataPaths, s: Settings) -> list[Path]:
    return [*_features_in(p, s), *_files(p.features_dir, "*.parquet")]


def _training_out(model: str) -> Callable[[DataPaths, Settings], list[Path]]:
    def writes(p: DataPaths, s: Settings) -> list[Path]:
        return [*_tree(p.models(model)), *_existing(p.predictions(model))]

    return writes


def _backtest_in(p: DataPaths, s: Settings) -> list[Path]:
    return [
        *_training_in(p, s),
        *_training_out("confluence")(p, s),
        *_training_out("aster_native")(p, s),
    ]


def _backtest_out(p: DataPaths, s: Settings) -> list[Path]:
    return _tree(p.backtest_results)


#: the settings the gate decides with: every stage that reads data through the gate
#: (``verified_series`` runs it again with the current settings) depends on them
GATED = ("collect", "discovery", "quality", "universe", "exclude_symbols")

NEED_DISCOVERY = Need(
    "data/aster_assets_discovery.json", lambda p, s: [p.discovery], "asset_discovery"
)
NEED_COLLECTED = Need(
    "collected data in data/historical/real_aster_only/", lambda p, s: _collected(p, s)[:1],
    "data_collection",
)  # fmt: skip
NEED_GATE = Need(
    "a READY gate verdict and data/universe.parquet",
    lambda p, s: [p.validation, p.universe],
    "data_validation",
)
NEED_FEATURES = Need(
    "data/features/", lambda p, s: [p.features(s.features.base_interval)], "feature_engineering"
)
NEED_PREDICTIONS = Need(
    "data/predictions/confluence.parquet",
    lambda p, s: [p.predictions("confluence")],
    "model_training_confluence",
)


# -- the runs ------------------------------------------------------------------------------


def _discovery(settings: Settings, opts: dict[str, Any]) -> StageResult:
    from asterai.data.discovery import run_discovery

    result = run_discovery(settings, progress=opts.get("progress", False))
    counts = result.get("counts", {})
    problems = [str(p) for p in result.get("problems") or []]
    summary = f"{counts.get('total', 0)} symbols, {counts.get('trainable', 0)} trainable"
    if problems:
        summary += f"; {len(problems)} problem(s), tried again next run: {problems[0]}"
    return StageResult(
        True,
        summary,
        tuple(f"  {p}" for p in problems),
        numbers={"symbols": counts.get("total", 0), "trainable": counts.get("trainable", 0)},
        complete=not problems,
    )


def _rate_limits(settings: Settings, opts: dict[str, Any]) -> StageResult:
    from asterai.data.ratelimit_probe import run_ratelimit_probe

    result = run_ratelimit_probe(settings, progress=opts.get("progress", False))
    problems = result.get("problems") or []
    notes = result.get("notes") or []
    met = result.get("met_limit")
    if problems:
        summary = "; ".join(problems)
    elif met:
        client = (result.get("recommendations") or {}).get("client") or {}
        summary = (
            f"met the limit at {met['at']} and waited {met['waited_s']:g} s: the collection "
            f"uses weight share {client.get('weight_safety')}, {client.get('concurrency')} "
            "request(s) at once"
        )
    else:
        summary = "limits read, probe clean" if not notes else f"limits read; {notes[0]}"
    return StageResult(bool(result.get("ok", True)), summary, tuple(f"  {n}" for n in notes))


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
    numbers = {
        "series": totals["series"],
        "series_ok": totals["ok"],
        "new_bars": totals["bars_collected"],
        "requests": totals["requests"],
    }
    again = "; what was collected is kept: run the same command again to resume"
    if report.aborted:
        return StageResult(
            False, f"{totals['ok']}/{totals['series']} series, aborted: {report.aborted}{again}",
            numbers=numbers,
        )  # fmt: skip
    if report.failures:
        names = [f"{r.symbol} {r.interval}" for r in report.failures]
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        first = report.failures[0].errors[-1] if report.failures[0].errors else "unknown"
        return StageResult(
            False,
            f"{summary}; {len(names)} failed ({', '.join(names[:5])}{more}); the first "
            f"error: {first}{again}",
            numbers=numbers,
        )
    return StageResult(True, summary, numbers=numbers)


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
    numbers = {
        "trainable": len(report.trainable),
        "excluded": len(report.excluded),
        "contaminated": len(report.contaminated),
    }
    if not report.ok:
        return StageResult(
            False, f"{summary}; not ready: {'; '.join(report.reasons())}", tuple(details), numbers
        )
    return StageResult(True, summary, tuple(details), numbers)


def _features(settings: Settings, opts: dict[str, Any]) -> StageResult:
    from asterai.data.gate import GateRefused
    from asterai.features.build import run_features

    try:
        summary = run_features(settings)
    except GateRefused as err:
        return StageResult(False, str(err))
    return StageResult(
        True,
        f"{summary['features']} features for {len(summary['symbols'])} symbols, "
        f"{summary['rows']} rows, {len(summary['charts'])} charts",
        numbers={
            "features": summary["features"],
            "symbols": len(summary["symbols"]),
            "rows": summary["rows"],
        },
    )


def _training(name: str) -> Callable[[Settings, dict[str, Any]], StageResult]:
    def run(settings: Settings, opts: dict[str, Any]) -> StageResult:
        import contextlib

        from asterai.data.gate import GateRefused
        from asterai.models.data import TrainingDataError
        from asterai.models.errors import TrainingError
        from asterai.models.splits import SplitError
        from asterai.models.train import walk_forward

        make_bars = opts.get("train_bars")
        bars = make_bars() if make_bars else None
        try:
            with bars.bars if bars is not None else contextlib.nullcontext():
                result = walk_forward(name, settings, progress=bars)
        except (GateRefused, TrainingDataError, TrainingError, SplitError) as err:
            return StageResult(False, f"training aborted: {err}")
        numbers: dict[str, Any] = {"folds": len(result.folds)}
        for direction in ("long", "short"):
            model = result.overall.get("model", {}).get(direction, {})
            logistic = result.overall.get("logistic", {}).get(direction, {})
            numbers[f"auc_{direction}"] = model.get("mean_fold_auc")
            numbers[f"logistic_auc_{direction}"] = logistic.get("mean_fold_auc")
        return StageResult(
            True,
            f"{len(result.folds)} folds, wrote {result.folder.name}/ and "
            f"{result.predictions_path.name}",
            tuple(f"  {line}" for line in [*result.verdict, *result.warnings]),
            numbers,
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
    ci = (m.get("confidence_95") or {}).get("sharpe_ratio")
    verdicts = {k: c["verdict"] for k, c in m["criteria"].items()}
    failed = [k for k, v in verdicts.items() if v != "PASS"]
    summary = (
        f"{m['trades']} trades, final equity {m['final_equity']:.2f} USDT "
        f"({m['total_return']:+.1%}); criteria "
        + ("all PASS" if not failed else f"FAIL: {', '.join(failed)}")
        + f"; report {out['folder']}/report.html"
    )
    numbers = {
        "trades": m["trades"],
        "total_return": m["total_return"],
        "sharpe_ratio": m["sharpe_ratio"],
        "sharpe_interval_95": ci,
        "probabilistic_sharpe_ratio": m["probabilistic_sharpe_ratio"],
        "break_even_cost": (m.get("cost_sensitivity") or {}).get("break_even"),
        "criteria": verdicts,
        "criteria_passed": not failed,
    }
    return StageResult(True, summary, numbers=numbers)


def _optimization_out(p: DataPaths, s: Settings) -> list[Path]:
    folder = p.study(s.optimize.study)
    return _existing(*(folder / f for f in ("best_params.json", "trials.csv", "summary.json",
                                             "report.html")))  # fmt: skip


def _optimization(settings: Settings, opts: dict[str, Any]) -> StageResult:
    from asterai.data.gate import GateRefused
    from asterai.models.data import TrainingDataError
    from asterai.models.errors import TrainingError
    from asterai.models.splits import SplitError
    from asterai.optimize.run import run_optimize
    from asterai.optimize.space import SpaceError
    from asterai.optimize.workspace import OptimizeError

    try:
        result = run_optimize(settings)
    except (OptimizeError, SpaceError, GateRefused, TrainingDataError, TrainingError,
            SplitError) as err:  # fmt: skip
        return StageResult(False, str(err))
    s = result.summary
    best, fw = s["search_best"], s["final_window"]

    def f(x: Any) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    summary = (
        f"{s['trials']['total']} trials ({s['trials']['complete']} complete); best #"
        f"{s['best_trial']} scored {f(best['score'])} ({s['objective']}) on the search part, "
        f"{f(fw['best_params']['score'])} on the final window (defaults "
        f"{f(fw['default_params']['score'])}); {s['deflated_sharpe_sentence']}; report "
        f"{result.folder}/report.html"
    )
    numbers = {
        "trials": s["trials"],
        "search_score": best["score"],
        "final_window_score": fw["best_params"]["score"],
        "final_window_default_score": fw["default_params"]["score"],
        "deflated_sharpe_ratio": s["deflated_sharpe"]["deflated_sharpe_ratio"],
        "pbo": s["pbo"].get("pbo"),
    }
    return StageResult(True, summary, numbers=numbers)


def _onnx_out(p: DataPaths, s: Settings) -> list[Path]:
    return _existing(*(p.models(m) / "onnx" / f for m in ("confluence", "aster_native")
                       for f in ("manifest.json", "xgboost.onnx", "lstm.onnx")))  # fmt: skip


def _onnx_in(p: DataPaths, s: Settings) -> list[Path]:
    # the trained models and the feature rows the parity check runs on
    return [*_training_out("confluence")(p, s), *_training_out("aster_native")(p, s),
            *_existing(p.features(s.features.base_interval))]  # fmt: skip


def _onnx_export(settings: Settings, opts: dict[str, Any]) -> StageResult:
    from asterai.deploy.export import ParityError, export_onnx
    from asterai.deploy.onnx_xgb import ExportError
    from asterai.models.registry import ModelNotFound

    parts, numbers = [], {}
    for name in ("confluence", "aster_native"):
        try:
            result = export_onnx(settings, name)
        except (ModelNotFound, ParityError, ExportError) as err:
            return StageResult(False, f"{name}: {err}")
        parts.append(f"{name} {result.max_abs_diff:.1e}")
        numbers[f"{name}_max_abs_diff"] = result.max_abs_diff
    return StageResult(True, "exported; parity (max |ONNX - native|) " + ", ".join(parts),
                       numbers=numbers)  # fmt: skip


REGISTRY: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "asset_discovery",
            "discover every Aster symbol",
            _discovery,
            reads=lambda p, s: [],
            writes=lambda p, s: _existing(p.discovery),
            config=("base_url", "discovery"),
            network=True,
        ),
        Stage(
            "rate_limit_testing",
            "read and probe the rate limits",
            _rate_limits,
            # it estimates the collection: discovery's symbols, the collect settings
            reads=lambda p, s: _existing(p.discovery),
            writes=lambda p, s: _existing(p.rate_limit_test),
            config=("base_url", "exchange", "collect"),
            network=True,
        ),
        Stage(
            "data_collection",
            "collect klines and funding",
            _collection,
            # (the probe's client recommendation after a 429 shapes how politely it
            # collects, never what: not an input of its results)
            reads=lambda p, s: _existing(p.discovery),
            writes=_collection_out,
            config=("base_url", "collect", "exclude_symbols"),
            needs=(NEED_DISCOVERY,),
            network=True,
        ),
        Stage(
            "data_validation",
            "gate the data: real, complete, sane",
            _validation,
            reads=_gate_in,
            writes=_gate_out,
            # features: the base interval decides the history rule and the universe's grid
            config=(*GATED, "features"),
            needs=(NEED_COLLECTED,),
        ),
        Stage(
            "feature_engineering",
            "build the confluence features and labels",
            _features,
            reads=_features_in,
            writes=_features_out,
            config=(*GATED, "features"),
            needs=(NEED_GATE,),
        ),
        Stage(
            "model_training_confluence",
            "train the XGBoost + LSTM ensemble",
            _training("confluence"),
            reads=_training_in,
            writes=_training_out("confluence"),
            config=(*GATED, "features", "train", "ensemble"),
            needs=(NEED_GATE, NEED_FEATURES),
        ),
        Stage(
            "model_training_aster_native",
            "train the Aster-native model",
            _training("aster_native"),
            # its report sets the confluence model's predictions beside its own
            reads=lambda p, s: [*_training_in(p, s), *_existing(p.predictions("confluence"))],
            writes=_training_out("aster_native"),
            config=(*GATED, "features", "train", "aster_native"),
            needs=(NEED_GATE, NEED_FEATURES),
        ),
        Stage(
            "backtesting",
            "backtest with full costs and grade it",
            _backtest,
            reads=_backtest_in,
            writes=_backtest_out,
            config=(*GATED, "features", "train", "strategy"),
            needs=(NEED_GATE, NEED_FEATURES, NEED_PREDICTIONS),
        ),
        Stage(
            "optimization",
            "search the parameters; grade the best on the final window (optional)",
            _optimization,
            reads=_training_in,
            writes=_optimization_out,
            config=(
                *GATED,
                "features",
                "train",
                "ensemble",
                "aster_native",
                "strategy",
                "optimize",
            ),  # fmt: skip
            needs=(NEED_GATE, NEED_FEATURES),
        ),
        Stage(
            "onnx_export",
            "export the models to ONNX, checked against the native ones (optional)",
            _onnx_export,
            reads=_onnx_in,
            writes=_onnx_out,
            config=("features", "train", "ensemble", "aster_native"),
            needs=(NEED_FEATURES,),
        ),
    )  # fmt: skip
}
assert tuple(REGISTRY) == ALL_STAGES
