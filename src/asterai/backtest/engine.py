"""The frame-facing side of the backtest: checked inputs in, the kernel, tables out.

``load_inputs`` refuses anything but out-of-sample predictions that belong to the
trained models (same run id), reads the bars only through the quality gate, the
point-in-time universe, the ATR the labels used, funding and the exchange filters, and
lays them on one time grid. ``simulate`` runs ``kernel.simulate_nb`` and returns the
trades, the rejected orders and the equity curve as frames.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from asterai.backtest import kernel
from asterai.backtest.enums import EXIT_REASONS, REJECT_REASONS
from asterai.config import Settings
from asterai.data.store import read_series, to_epoch_ms
from asterai.intervals import INTERVAL_MS
from asterai.paths import DataPaths

log = logging.getLogger(__name__)

PREDICTIONS_META_KEY = b"asterai.predictions"
CONFIG_FILES = {"confluence": "ensemble_config.json", "aster_native": "model_config.json"}


class BacktestInputError(ValueError):
    """The backtest cannot run on these inputs; the message says what to fix."""


@dataclass(slots=True)
class Inputs:
    symbols: list[str]
    times: np.ndarray  # (T,) epoch ms, the grid
    open_: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    tradeable: np.ndarray
    p_long: np.ndarray
    p_short: np.ndarray
    atr: np.ndarray
    funding: np.ndarray
    tick: np.ndarray
    step: np.ndarray
    min_notional: np.ndarray
    notes: list[str] = field(default_factory=list)
    window: tuple[int, int] = (0, 0)
    run_id: str | None = None


def _predictions(settings: Settings, model: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    paths = DataPaths.at(settings.data_root)
    path = paths.predictions(model)
    if not path.exists():
        raise BacktestInputError(
            f"{path} does not exist: train first (`asterai train {model.replace('_', '-')}`)"
        )
    meta = json.loads((pq.read_schema(path).metadata or {}).get(PREDICTIONS_META_KEY, b"{}"))
    if meta.get("out_of_sample_only") is not True:
        raise BacktestInputError(f"{path} is not marked out-of-sample: the backtest refuses it")
    config_path = paths.models(model) / CONFIG_FILES[model]
    if config_path.exists():
        run_id = json.loads(config_path.read_text()).get("run_id")
        if run_id != meta.get("run_id"):
            raise BacktestInputError(
                f"{path} (run {meta.get('run_id')}) does not belong to the models in "
                f"{config_path.parent} (run {run_id}): train again"
            )
    frame = pd.read_parquet(path, columns=["symbol", "open_time", "fold", "p_long", "p_short"])
    folds = meta.get("folds") or []
    times = to_epoch_ms(frame["open_time"])
    inside = np.zeros(len(frame), dtype=bool)
    for f in folds:
        inside |= (
            (frame["fold"].to_numpy() == f["fold"])
            & (times >= f["test_start_ms"])
            & (times <= f["test_end_ms"])
        )
    if not inside.all():
        raise BacktestInputError(
            f"{path}: {int((~inside).sum())} rows lie outside their fold's test window "
            "(in-sample rows): the backtest refuses them"
        )
    bad = ~frame[["p_long", "p_short"]].apply(lambda c: c.between(0, 1)).all(axis=1)
    if bad.any():
        raise BacktestInputError(
            f"{path}: probabilities outside 0..1 at row {int(np.flatnonzero(bad)[0])}"
        )
    return frame, meta


def load_inputs(settings: Settings, model: str = "confluence") -> Inputs:
    from asterai.data.gate import verified_series

    if not 0 < settings.train.threshold < 1:
        raise BacktestInputError(
            f"train.threshold must lie in 0..1, got {settings.train.threshold}"
        )
    preds, meta = _predictions(settings, model)
    paths = DataPaths.at(settings.data_root)
    base = settings.features.base_interval
    step_ms = INTERVAL_MS[base]
    symbols = sorted(preds["symbol"].unique())
    bars = verified_series(settings, intervals=[base], symbols=symbols)
    start = int(to_epoch_ms(preds["open_time"]).min())
    end = max(int(to_epoch_ms(f["open_time"])[-1]) for f in bars.values())
    times = np.arange(start, end + step_ms, step_ms, dtype=np.int64)
    T, N = len(times), len(symbols)

    def grid() -> np.ndarray:
        return np.full((T, N), np.nan)

    o, h, lo, c, vol, fund = (grid() for _ in range(6))
    universe = pq.read_table(paths.universe).to_pandas()
    features = pd.read_parquet(paths.features(base), columns=["symbol", "open_time", "atr_14"])
    notes: list[str] = []
    no_funding: list[str] = []
    for j, s in enumerate(symbols):
        frame = bars[(s, base)]
        t = to_epoch_ms(frame["open_time"])
        keep = t >= start
        idx = (t[keep] - start) // step_ms
        for arr, col in ((o, "open"), (h, "high"), (lo, "low"), (c, "close"), (vol, "volume")):
            arr[idx, j] = frame[col].to_numpy(dtype=float)[keep]

        path = paths.funding(s)
        if path.exists():
            f = read_series(path, "funding").frame
            ft = to_epoch_ms(f["funding_time"])
            # a funding event belongs to the bar whose (open, close] holds it
            bar = (ft - 1 - start) // step_ms
            ok = (bar >= 0) & (bar < T)
            # every event of the bar counts (a 4h or 1d bar holds several)
            column = np.zeros(T)
            np.add.at(column, bar[ok], f["funding_rate"].to_numpy(dtype=float)[ok])
            fund[:, j] = np.where(np.bincount(bar[ok], minlength=T) > 0, column, np.nan)
        if not path.exists() or np.isnan(fund[:, j]).all():
            no_funding.append(s)
    if no_funding:
        notes.append(
            f"no funding history in the window for {len(no_funding)} of {N} symbols "
            f"({', '.join(no_funding)}): their funding is assumed zero"
        )
    tradeable = _on_grid(universe, "tradeable", symbols, times, step_ms) == 1.0
    pl = _on_grid(preds, "p_long", symbols, times, step_ms)
    ps = _on_grid(preds, "p_short", symbols, times, step_ms)
    atr = _on_grid(features, "atr_14", symbols, times, step_ms)
    tick, step, min_notional = _filters(paths, symbols, settings, notes)
    return Inputs(
        symbols, times, o, h, lo, c, vol, tradeable, pl, ps, atr, np.nan_to_num(fund), tick, step,
        min_notional, notes, (start, end), meta.get("run_id"),
    )  # fmt: skip


def grid_feature(settings: Settings, inputs: Inputs, column: str) -> np.ndarray:
    """A column of ``data/features/{base}.parquet`` laid on the inputs' (T, N) grid."""
    paths = DataPaths.at(settings.data_root)
    frame = pd.read_parquet(
        paths.features(settings.features.base_interval), columns=["symbol", "open_time", column]
    )
    step_ms = INTERVAL_MS[settings.features.base_interval]
    return _on_grid(frame, column, inputs.symbols, inputs.times, step_ms)


def _on_grid(
    frame: pd.DataFrame, column: str, symbols: list[str], times: np.ndarray, step_ms: int
) -> np.ndarray:
    out = np.full((len(times), len(symbols)), np.nan)
    frame = frame[frame["symbol"].isin(symbols)]
    code = pd.Categorical(frame["symbol"], categories=symbols).codes
    t = to_epoch_ms(frame["open_time"])
    ok = (code >= 0) & (t >= times[0]) & (t <= times[-1])
    out[(t[ok] - times[0]) // step_ms, code[ok]] = frame[column].to_numpy(dtype=float)[ok]
    return out


def _filters(
    paths: DataPaths, symbols: list[str], settings: Settings, notes: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    entries: dict[str, dict[str, Any]] = {}
    if paths.discovery.exists():
        doc = json.loads(paths.discovery.read_text())
        entries = {e.get("symbol"): e for e in doc.get("symbols", []) if isinstance(e, dict)}
    tick, step, notional = (np.zeros(len(symbols)) for _ in range(3))
    missing_notional = []
    for j, s in enumerate(symbols):
        filters = entries.get(s, {}).get("filters") or {}
        tick[j] = filters.get("tick_size") or 0.0
        step[j] = filters.get("step_size") or 0.0
        if filters.get("min_notional"):
            notional[j] = filters["min_notional"]
        else:
            notional[j] = settings.strategy.default_min_notional
            missing_notional.append(s)
        if not tick[j] or not step[j]:
            notes.append(f"{s}: no tick or lot step from discovery; orders are not rounded to it")
    if missing_notional:
        notes.append(
            f"no MIN_NOTIONAL filter for {len(missing_notional)} symbol(s); the default "
            f"{settings.strategy.default_min_notional:g} USDT applies (strategy.default_min_notional)"
        )
    return tick, step, notional


def params(settings: Settings) -> kernel.Params:
    st, fs = settings.strategy, settings.features
    return kernel.Params(
        st.capital, st.risk_per_trade, st.max_positions, st.taker_fee, st.maker_fee,
        st.slippage, settings.train.threshold, fs.tp_atr, fs.sl_atr, fs.label_horizon,
        st.max_leverage, st.max_drawdown, kelly_fraction=st.kelly_fraction,
    )  # fmt: skip


@dataclass(slots=True)
class Result:
    trades: pd.DataFrame
    rejected: pd.DataFrame
    equity: pd.DataFrame
    final_cash: float
    inputs: Inputs


def simulate(inputs: Inputs, p: kernel.Params) -> Result:
    trades, rejects, curve, cash = kernel.simulate_nb(
        inputs.open_, inputs.high, inputs.low, inputs.close, inputs.volume, inputs.tradeable,
        inputs.p_long,
        inputs.p_short, inputs.atr, inputs.funding, inputs.tick, inputs.step,
        inputs.min_notional, p,
    )  # fmt: skip
    names = np.array(inputs.symbols, dtype=object)

    def when(idx: np.ndarray) -> pd.DatetimeIndex:
        return pd.to_datetime(inputs.times[idx.astype(np.int64)], unit="ms", utc=True).as_unit("ms")

    t = pd.DataFrame(trades, columns=kernel.TRADE_FIELDS)
    trade_frame = pd.DataFrame(
        {
            "symbol": names[t["symbol"].to_numpy(dtype=np.int64)],
            "side": np.where(t["side"] > 0, "long", "short"),
            "signal_time": when(t["signal_t"].to_numpy()),
            "entry_time": when(t["entry_t"].to_numpy()),
            "exit_time": when(t["exit_t"].to_numpy()),
            "entry_price": t["entry_price"],
            "exit_price": t["exit_price"],
            "quantity": t["quantity"],
            "notional": t["quantity"] * t["entry_price"],
            "stop": t["stop"],
            "target": t["target"],
            "fees": t["fees"],
            "funding": t["funding"],
            "pnl": t["pnl"],
            "exit_reason": np.array(EXIT_REASONS, dtype=object)[
                t["exit_reason"].to_numpy(dtype=np.int64)
            ],
        }
    )
    r = pd.DataFrame(rejects, columns=kernel.REJECT_FIELDS)
    rejected = pd.DataFrame(
        {
            "time": when(r["t"].to_numpy()),
            "symbol": names[r["symbol"].to_numpy(dtype=np.int64)],
            "side": np.where(r["side"] > 0, "long", "short"),
            "probability": r["probability"],
            "reason": np.array(REJECT_REASONS, dtype=object)[r["reason"].to_numpy(dtype=np.int64)],
        }
    )
    e = pd.DataFrame(curve, columns=kernel.EQUITY_FIELDS)
    equity = pd.DataFrame(
        {
            "time": when(np.arange(len(inputs.times))),
            "equity": e["equity"],
            "cash": e["cash"],
            "open_positions": e["open_positions"].astype(np.int64),
            "exposure": e["notional"] / e["equity"],
        }
    )
    return Result(trade_frame, rejected, equity, float(cash), inputs)


MODELS = ("confluence", "aster_native")


@dataclass(slots=True)
class ModelRun:
    """One model's backtest: its result, its metrics and the baselines' curves."""

    result: Result
    metrics: dict[str, Any]
    curves: dict[str, pd.DataFrame | None]


def backtest_model(settings: Settings, model: str) -> ModelRun:
    """Simulate one model's out-of-sample predictions, measure, grade, and compare with
    the baselines on the same window, universe and costs. Writes nothing."""
    from asterai.backtest import metrics

    inputs = load_inputs(settings, model)
    result = simulate(inputs, params(settings))
    per_year, per_day = annualisation(settings)
    m = metrics.compute(
        result.equity, result.trades, result.rejected, settings.strategy.capital,
        settings.train.seed, bars_per_year=per_year, block_bars=per_day,
    )  # fmt: skip
    m["model"] = model
    m["run_id"] = inputs.run_id
    m["notes"] = inputs.notes
    curves, n_rule = baseline_curves(inputs, settings)
    m["baselines"] = compare_baselines(curves, n_rule, settings, m)
    m["by_category"] = by_category(result.trades, settings)
    m["settings"] = {
        "strategy": settings.strategy.model_dump(mode="json"),
        "threshold": settings.train.threshold,
        "take_profit_atr": settings.features.tp_atr,
        "stop_atr": settings.features.sl_atr,
        "horizon_bars": settings.features.label_horizon,
    }
    return ModelRun(result, m, curves)


def annualisation(settings: Settings) -> tuple[int, int]:
    """Bars a year (a 24/7 market) and bars a day, of the base interval."""
    step = INTERVAL_MS[settings.features.base_interval]
    return 365 * 86_400_000 // step, max(1, 86_400_000 // step)


def _headline(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("window", "final_equity", "total_return", "sharpe_ratio", "max_drawdown",
            "win_rate", "trades", "probabilistic_sharpe_ratio", "confidence_95", "criteria",
            "run_id")  # fmt: skip
    return {k: m[k] for k in keys}


def run_backtest(settings: Settings, model: str = "confluence") -> dict[str, Any]:
    """Backtest ``model`` and, beside it, every other model that has predictions; write
    ``data/backtest_results/`` as one set: the main model's ``metrics.json``,
    ``trades.csv``, ``rejected_orders.csv``, ``equity.csv``, the charts and
    ``report.html``; each other model's files in a subfolder named after it."""
    from asterai import atomic
    from asterai.backtest import report

    if model not in MODELS:
        raise BacktestInputError(f"unknown model {model!r}: one of {', '.join(MODELS)}")
    main = backtest_model(settings, model)
    others: dict[str, ModelRun] = {}
    models: dict[str, Any] = {model: _headline(main.metrics)}
    paths = DataPaths.at(settings.data_root)
    for other in MODELS:
        if other == model:
            continue
        if not paths.predictions(other).exists():
            models[other] = "not trained (no predictions)"
            continue
        try:
            others[other] = backtest_model(settings, other)
            models[other] = _headline(others[other].metrics)
        except Exception as err:  # the other model never sinks the main one's results
            log.warning("%s not backtested beside %s: %s", other, model, err)
            models[other] = f"not backtested: {type(err).__name__}: {err}"
    m = main.metrics
    m["models"] = models
    folder = paths.backtest_results
    curves = {name: run.result.equity for name, run in others.items()} | main.curves

    def write_set(tmp, run: ModelRun) -> None:
        run.result.trades.to_csv(tmp / "trades.csv", index=False)
        run.result.rejected.to_csv(tmp / "rejected_orders.csv", index=False)
        run.result.equity.to_csv(tmp / "equity.csv", index=False)
        (tmp / "metrics.json").write_text(json.dumps(run.metrics, indent=2, default=str))

    def build(tmp):
        write_set(tmp, main)
        for name, run in others.items():
            (tmp / name).mkdir()
            write_set(tmp / name, run)
        report.write_charts(
            tmp, model, main.result.equity, main.result.trades, settings.strategy.capital,
            settings.strategy.max_drawdown, curves,
        )  # fmt: skip
        page = report.render_html(m, tmp, main.result.trades)
        (tmp / "report.html").write_text(page, encoding="utf-8")

    atomic.replace_folder(folder, build)
    return {"folder": str(folder), "metrics": m}


def baseline_curves(
    inputs: Inputs, settings: Settings
) -> tuple[dict[str, pd.DataFrame | None], int]:
    """The baselines' equity curves on the model's window, universe and costs, and the
    rule strategy's number of trades."""
    from asterai.backtest import baselines

    curves: dict[str, pd.DataFrame | None] = {
        "buy_and_hold_btc": baselines.buy_and_hold_btc(inputs, settings),
        "equal_weight_universe": baselines.equal_weight(inputs, settings),
    }
    rule, n_rule = baselines.rule_confluence(inputs, settings, params(settings))
    curves["rule_confluence"] = rule
    return curves, n_rule


def compare_baselines(
    curves: dict[str, pd.DataFrame | None], n_rule: int, settings: Settings, m: dict[str, Any]
) -> dict[str, Any]:
    """Each baseline's return, Sharpe and drawdown, and whether the model beats it by
    more than the width of its own Sharpe interval (the noise a month carries)."""
    from asterai.backtest import metrics

    capital = settings.strategy.capital
    ci = (m["confidence_95"] or {}).get("sharpe_ratio")
    half_width = (ci[1] - ci[0]) / 2 if ci else None
    out: dict[str, Any] = {}
    for name, frame in curves.items():
        if frame is None:
            out[name] = "not available (the symbol is not in the predictions)"
            continue
        curve = frame["equity"].to_numpy(dtype=float)
        r = metrics.returns_of(np.concatenate([[capital], curve]))
        sr = metrics.sharpe(r, annualisation(settings)[0])
        entry = {
            "final_equity": float(curve[-1]),
            "total_return": float(curve[-1] / capital - 1),
            "sharpe_ratio": sr,
            "max_drawdown": metrics.drawdown(np.concatenate([[capital], curve]))[0],
        }
        if name == "rule_confluence":
            entry["trades"] = n_rule
        if sr is not None and m["sharpe_ratio"] is not None:
            diff = m["sharpe_ratio"] - sr
            entry["model_sharpe_minus_baseline"] = diff
            entry["model_beats_it"] = bool(diff > 0)
            entry["by_more_than_the_noise"] = bool(half_width is not None and diff > half_width)
        out[name] = entry
    out["note"] = (
        "same window, universe, capital and costs; 'by more than the noise' means the "
        "Sharpe difference exceeds half the width of the model's 95% Sharpe interval"
    )
    return out


def by_category(trades: pd.DataFrame, settings: Settings) -> dict[str, Any]:
    """Trades, win rate and PnL per kind of market (majors, alts, stock perpetuals; a
    trade opened while its market was younger than ``discovery.new_listing_days`` counts
    as a new listing's)."""
    from asterai.data.store import read_provenance
    from asterai.models.data import static_categories

    paths = DataPaths.at(settings.data_root)
    kinds = static_categories(paths, sorted(trades["symbol"].unique()), settings.discovery.majors)
    listing: dict[str, int | None] = {}
    for symbol in kinds:
        # the exchange's first kline per interval; a history cut short (the higher
        # timeframes start later, see features.build.unknown_listings) has no known listing
        firsts = {
            iv: (read_provenance(paths.klines(symbol, iv)) or {}).get("listing_open_time")
            for iv in settings.collect.intervals
            if paths.klines(symbol, iv).exists()
        }
        base = firsts.get(settings.features.base_interval)
        cut = base is None or any(t is not None and t > base for t in firsts.values())
        listing[symbol] = None if cut else base
    young_ms = settings.discovery.new_listing_days * 86_400_000
    entry_ms = to_epoch_ms(trades["entry_time"])
    cats = []
    for symbol, t in zip(trades["symbol"], entry_ms, strict=True):
        listed = listing.get(symbol)
        cats.append(
            "new_listing" if listed is not None and t - listed < young_ms else kinds[symbol]
        )
    out: dict[str, Any] = {}
    frame = trades.assign(category=cats)
    for cat, group in frame.groupby("category"):
        out[str(cat)] = {
            "trades": int(len(group)),
            "win_rate": float((group["pnl"] > 0).mean()),
            "pnl": float(group["pnl"].sum()),
            "symbols": sorted(group["symbol"].unique()),
        }
    return out
