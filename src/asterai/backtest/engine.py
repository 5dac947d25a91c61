"""The frame-facing side of the backtest: checked inputs in, the kernel, tables out.

``inputs.load_inputs`` lays the checked inputs on one grid; ``simulate`` runs
``kernel.simulate_nb`` and returns the trades, the rejected orders and the equity curve
as frames; ``backtest_model`` measures and compares; ``run_backtest`` writes the set.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from asterai.backtest import kernel
from asterai.backtest.enums import EXIT_REASONS, REJECT_REASONS
from asterai.backtest.inputs import BacktestInputError, Inputs, load_inputs
from asterai.backtest.sources import training_figures, where_the_money_came_from
from asterai.config import Settings
from asterai.data.store import to_epoch_ms
from asterai.entry import allowed_sides
from asterai.intervals import INTERVAL_MS
from asterai.paths import DataPaths

__all__ = ["BacktestInputError", "Inputs", "load_inputs", "params", "simulate", "run_backtest"]

log = logging.getLogger(__name__)


def params(settings: Settings, inputs: Inputs | None = None) -> kernel.Params:
    """The kernel's parameters. The liquidation fee is one rate for the account: the
    highest that discovery states for the ``inputs``' symbols, and never below
    ``strategy.liquidation_fee`` while any symbol has no stated rate."""
    st, fs = settings.strategy, settings.features
    allow_long, allow_short = allowed_sides(st.sides)
    liquidation_fee = st.liquidation_fee
    if inputs is not None:
        liquidation_fee = account_liquidation_fee(
            settings, inputs.liquidation_fees, len(inputs.symbols)
        )
    return kernel.Params(
        st.capital, st.risk_per_trade, st.max_positions, st.taker_fee, st.maker_fee,
        st.slippage, settings.train.threshold, fs.tp_atr, fs.sl_atr, fs.label_horizon,
        st.max_leverage, st.max_drawdown, allow_long=allow_long, allow_short=allow_short,
        kelly_fraction=st.kelly_fraction,
        maintenance_margin=st.maintenance_margin, liquidation_fee=liquidation_fee,
    )  # fmt: skip


def account_liquidation_fee(settings: Settings, stated: list[float], n_symbols: int) -> float:
    """The account's one liquidation fee rate: the highest stated for its ``n_symbols``
    symbols (``stated``: those discovery gives), never below ``strategy.liquidation_fee``
    while a symbol has none."""
    default = settings.strategy.liquidation_fee
    if not stated:
        return default
    return max(stated) if len(stated) == n_symbols else max(max(stated), default)


@dataclass(slots=True)
class Result:
    trades: pd.DataFrame
    rejected: pd.DataFrame
    equity: pd.DataFrame
    final_cash: float
    inputs: Inputs


def _run_kernel(inputs: Inputs, p: kernel.Params):
    return kernel.simulate_nb(
        inputs.open_, inputs.high, inputs.low, inputs.close, inputs.volume, inputs.tradeable,
        inputs.p_long, inputs.p_short, inputs.atr, inputs.funding, inputs.tick, inputs.step,
        inputs.min_notional, p,
    )  # fmt: skip


def simulate(inputs: Inputs, p: kernel.Params) -> Result:
    trades, rejects, curve, cash = _run_kernel(inputs, p)
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
    inputs = load_inputs(settings, model)
    return measure(settings, inputs, params(settings, inputs), model)


def measure(settings: Settings, inputs: Inputs, p: kernel.Params, model: str) -> ModelRun:
    """Simulate ``inputs``, measure, grade, and compare with the baselines on the same
    window, universe and costs (the backtest's, and paper trading's report over the
    journal's bars). Writes nothing."""
    from asterai.backtest import metrics

    result = simulate(inputs, p)
    per_year, per_day = annualisation(settings)
    m = metrics.compute(
        result.equity, result.trades, result.rejected, settings.strategy.capital,
        settings.train.seed, bars_per_year=per_year, block_bars=per_day,
        max_drawdown=settings.strategy.max_drawdown,
    )  # fmt: skip
    m["model"] = model
    m["run_id"] = inputs.run_id
    m["notes"] = inputs.notes
    m["assumptions"] = assumptions(settings, p)
    m["cost_sensitivity"] = cost_sensitivity(inputs, p, settings)
    curves, n_rule = baseline_curves(inputs, settings)
    m["baselines"] = compare_baselines(curves, n_rule, settings, result.equity)
    m["by_category"] = by_category(result.trades, settings)
    m["money_sources"] = where_the_money_came_from(result.trades, inputs)
    m["money_sources"]["training"] = training_figures(settings.data_root, model, inputs.run_id)
    m["settings"] = {
        "strategy": settings.strategy.model_dump(mode="json"),
        "threshold": settings.train.threshold,
        "sides": settings.strategy.sides,
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


def write_report_files(
    folder, settings: Settings, name: str, run: ModelRun, curves: dict[str, Any]
) -> None:
    """``run``'s charts and ``report.html`` into ``folder`` (its metrics complete)."""
    from asterai.backtest import report

    report.write_charts(
        folder, name, run.result.equity, run.result.trades, settings.strategy.capital,
        settings.strategy.max_drawdown, curves,
    )  # fmt: skip
    page = report.render_html(run.metrics, folder, run.result.trades)
    (folder / "report.html").write_text(page, encoding="utf-8")


def run_backtest(settings: Settings, model: str = "confluence") -> dict[str, Any]:
    """Backtest ``model`` and, beside it, every other model that has predictions; write
    ``data/backtest_results/`` as one set: the main model's ``metrics.json``,
    ``trades.csv``, ``rejected_orders.csv``, ``equity.csv``, the charts and
    ``report.html``; each other model's files in a subfolder named after it."""
    from asterai import atomic

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
        baselines_frame(run).to_csv(tmp / "baselines_equity.csv", index=False)
        (tmp / "metrics.json").write_text(json.dumps(run.metrics, indent=2, default=str))

    def build(tmp):
        write_set(tmp, main)
        for name, run in others.items():
            (tmp / name).mkdir()
            write_set(tmp / name, run)
        write_report_files(tmp, settings, model, main, curves)

    atomic.replace_folder(folder, build)
    return {"folder": str(folder), "metrics": m}


def assumptions(settings: Settings, p: kernel.Params) -> list[str]:
    """What the simulation assumes, in words, with the values it ran with."""
    from asterai.backtest.metrics import MIN_ANNUALISED_DAYS, SAMPLING

    st = settings.strategy
    return [
        "A signal at a bar's close fills at the next bar's open; no fill in a bar without "
        "trades (entries are rejected, exits wait for the next bar that trades).",
        f"Every market fill (entries, stops, gaps, time limits, signal exits, the circuit "
        f"breaker, liquidation, the end of the data) pays the full slippage of "
        f"{p.slippage:.3%} against the trader, then the tick against him, never clipped to "
        "the bar's range: our own order would have printed there.",
        "A stop fills when the bar's low (high) touches it; a bar that opens through it "
        "fills at the open. When a bar reaches both the stop and the target, the stop is "
        "assumed.",
        "A target is a resting limit order: it fills at its own price, as a maker, only "
        "when the bar trades at least one tick through it (a bare touch may have left our "
        "order in the queue). The labels the models learned use the same rules, with "
        "their barriers placed from the open rather than from the slipped fill.",
        f"Fees: taker {p.taker_fee:.3%} on market fills, maker {p.maker_fee:.3%} on "
        "targets; funding paid or received at each funding time on open positions.",
        f"Liquidation (one cross-margin account): when the equity at every position's worst "
        f"price of the bar falls to {p.maintenance_margin:.2%} of the open notional (one "
        "maintenance margin rate for every symbol; Aster's real brackets, per symbol and "
        "notional, are at the signed GET /fapi/v1/leverageBracket), everything closes at "
        f"those extremes less the slippage, even in a bar without trades, paying the taker "
        f"fee and a liquidation fee of {p.liquidation_fee:.2%}; trading stops.",
        f"Sizing: {st.risk_per_trade:.1%} of equity at risk to the stop (costs included), "
        f"at most {st.max_positions} positions and {st.max_leverage:g}x open notional; "
        "orders below the minimum notional or one lot step are rejected.",
        f"Circuit breaker: a close {st.max_drawdown:.0%} below the peak closes everything "
        "at the next open and stops trading.",
        "Which symbols may be traded at a bar is decided from data available then "
        "(data/universe.parquet).",
        f"Risk-adjusted figures and significance from {SAMPLING}.",
        f"CAGR and the Calmar ratio only over a window of {MIN_ANNUALISED_DAYS} days or more.",
    ]


def baselines_frame(run: ModelRun) -> pd.DataFrame:
    """The baselines' equity at every bar of the model's run, one column each (empty
    where a baseline is not available), for ``baselines_equity.csv``."""
    frame = pd.DataFrame({"time": run.result.equity["time"]})
    for name, curve in run.curves.items():
        frame[name] = np.nan if curve is None else curve["equity"].to_numpy(dtype=float)
    return frame


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
    rule, n_rule = baselines.rule_confluence(inputs, settings, params(settings, inputs))
    curves["rule_confluence"] = rule
    return curves, n_rule


def compare_baselines(
    curves: dict[str, pd.DataFrame | None],
    n_rule: int,
    settings: Settings,
    equity: pd.DataFrame,
) -> dict[str, Any]:
    """Each baseline's return, Sharpe and drawdown, and the paired comparison: the
    model's Sharpe minus the baseline's over the same days, with its bootstrap interval
    and the probability that the model is the better (the same resampled blocks of days
    for both)."""
    from asterai.backtest import metrics

    capital = settings.strategy.capital
    model_daily = metrics.daily_returns(equity, capital)
    out: dict[str, Any] = {}
    for name, frame in curves.items():
        if frame is None:
            out[name] = "not available (the symbol is not in the predictions)"
            continue
        curve = frame["equity"].to_numpy(dtype=float)
        daily = metrics.daily_returns(frame, capital)
        sr = metrics.sharpe(daily, metrics.DAYS_PER_YEAR)
        entry: dict[str, Any] = {
            "final_equity": float(curve[-1]),
            "total_return": float(curve[-1] / capital - 1),
            "sharpe_ratio": sr,
            "max_drawdown": metrics.drawdown(np.concatenate([[capital], curve]))[0],
        }
        if name == "rule_confluence":
            entry["trades"] = n_rule
        paired = metrics.paired_sharpe_difference(model_daily, daily, settings.train.seed)
        if paired is not None:
            entry["model_sharpe_minus_baseline"] = paired["sharpe_difference"]
            entry["difference_interval_95"] = paired["interval_95"]
            entry["probability_model_better"] = paired["probability_model_better"]
            entry["model_beats_it"] = bool(paired["sharpe_difference"] > 0)
            entry["by_more_than_the_noise"] = bool(paired["interval_95"][0] > 0)
        out[name] = entry
    out["note"] = (
        "same window, universe, capital and costs; the Sharpe difference is bootstrapped "
        "over the same resampled blocks of days for the model and the baseline; 'by more "
        "than the noise' means its 95% interval lies above zero"
    )
    return out


#: cost multipliers shown in the sensitivity table, and the search range of break-even
COST_MULTIPLIERS = (0.0, 1.0, 2.0)
BREAK_EVEN_MAX = 10.0


def cost_sensitivity(inputs: Inputs, p: kernel.Params, settings: Settings) -> dict[str, Any]:
    """The strategy's return and Sharpe with every fee and the slippage scaled by 0, 1 and
    2 (the liquidation fee too), and the break-even cost: the multiplier (and the round
    trip it means, a taker entry and exit with slippage on both) at which the return
    crosses zero. Each point is a whole new run through the kernel (sizing counts costs,
    so the trades differ); the break-even search reads only each run's final cash."""
    from asterai.backtest import metrics

    capital = settings.strategy.capital

    def scaled(k: float) -> kernel.Params:
        return p._replace(
            taker_fee=p.taker_fee * k, maker_fee=p.maker_fee * k, slippage=p.slippage * k,
            liquidation_fee=p.liquidation_fee * k,
        )  # fmt: skip

    def final_return(k: float) -> float:
        return float(_run_kernel(inputs, scaled(k))[3] / capital - 1.0)

    round_trip = 2.0 * (p.taker_fee + p.slippage)
    table = []
    for k in COST_MULTIPLIERS:
        res = simulate(inputs, scaled(k))
        table.append(
            {"multiplier": k, "round_trip_cost": k * round_trip,
             "total_return": float(res.final_cash / capital - 1.0),
             "sharpe_ratio": metrics.sharpe(metrics.daily_returns(res.equity, capital),
                                            metrics.DAYS_PER_YEAR),
             "trades": int(len(res.trades))}
        )  # fmt: skip
    out: dict[str, Any] = {"table": table, "round_trip_cost_at_1x": round_trip}
    if table[0]["total_return"] <= 0:
        out["break_even_multiplier"] = 0.0
        out["break_even_round_trip_cost"] = 0.0
        out["break_even"] = "none: the strategy loses money even without any cost"
        return out
    # the first crossing on a grid of quarter steps, then bisection inside it
    lo, hi = 0.0, None
    k = 0.25
    while k <= BREAK_EVEN_MAX + 1e-12:
        if final_return(k) <= 0:
            hi = k
            break
        lo = k
        k += 0.25
    if hi is None:
        out["break_even_multiplier"] = None
        out["break_even_round_trip_cost"] = None
        out["break_even"] = f"above {BREAK_EVEN_MAX:g}x the configured costs"
        return out
    for _ in range(12):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if final_return(mid) > 0 else (lo, mid)
    be = (lo + hi) / 2
    out["break_even_multiplier"] = be
    out["break_even_round_trip_cost"] = be * round_trip
    out["break_even"] = (
        f"{be:.2f}x the configured costs: a round trip of {be * round_trip:.3%} of notional"
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
