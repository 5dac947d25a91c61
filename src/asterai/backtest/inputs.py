"""The backtest's inputs, checked and laid on one time grid (read by the engine and the
baselines alike, so neither imports the other).

``load_inputs`` refuses anything but out-of-sample predictions that belong to the
trained models (same run id), reads the bars only through the quality gate, the
point-in-time universe, the ATR the labels used, funding and the exchange filters, and
lays them on one time grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from asterai.config import Settings
from asterai.data.store import read_series, to_epoch_ms
from asterai.intervals import INTERVAL_MS
from asterai.paths import DataPaths

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
    liquidation_fees: list[float] = field(default_factory=list)  # stated by discovery
    stated_fee: dict[str, float] | None = None  # a market grid's, by symbol


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
    """The backtest's inputs for ``model``'s stored out-of-sample predictions: the
    market from the first prediction to the last bar, the predictions laid on it."""
    preds, meta = _predictions(settings, model)
    target = meta.get("target", "triple_barrier")  # files from before the option
    check_sizing(settings, target, model)
    symbols = sorted(preds["symbol"].unique())
    start = int(to_epoch_ms(preds["open_time"]).min())
    market = market_inputs(settings, symbols, start)
    market.run_id = meta.get("run_id")
    return with_predictions(market, preds)


def check_sizing(settings: Settings, target: str, model: str) -> None:
    """The threshold lies in 0..1, and Kelly sizing reads triple-barrier odds only."""
    if not 0 < settings.train.threshold < 1:
        raise BacktestInputError(
            f"train.threshold must lie in 0..1, got {settings.train.threshold}"
        )
    if settings.strategy.kelly_fraction > 0 and target != "triple_barrier":
        question = (
            "sigmoid of the trade's expected net R-multiple, not a chance"
            if target == "r_multiple"
            else "does the symbol beat the bar's median?"
        )
        raise BacktestInputError(
            f"strategy.kelly_fraction = {settings.strategy.kelly_fraction} sizes a trade by "
            f"the chance of reaching its target at the ATR odds, and the {model} model's "
            f"outputs answer another question (train.target = {target!r}: {question}): "
            'set kelly_fraction = 0, or train with train.target = "triple_barrier"'
        )


def market_inputs(
    settings: Settings, symbols: list[str], start: int, end: int | None = None
) -> Inputs:
    """``symbols``' market on one grid of base bars from ``start`` to ``end`` (default:
    the last verified bar), read through the gate, without predictions (NaN): bars,
    the universe's tradeable mask, the labels' ATR, funding and the exchange filters.
    Built once, it serves any number of predictions (``with_predictions``)."""
    from asterai.data.gate import verified_series

    paths = DataPaths.at(settings.data_root)
    base = settings.features.base_interval
    step_ms = INTERVAL_MS[base]
    bars = verified_series(settings, intervals=[base], symbols=symbols)
    if end is None:
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
        keep = (t >= start) & (t <= end)
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
    tradeable = lay_on_grid(universe, "tradeable", symbols, times, step_ms) == 1.0
    atr = lay_on_grid(features, "atr_14", symbols, times, step_ms)
    tick, step, min_notional, liquidation_fees = exchange_filters(paths, symbols, settings, notes)
    market = Inputs(
        symbols, times, o, h, lo, c, vol, tradeable, grid(), grid(), atr, np.nan_to_num(fund),
        tick, step, min_notional, notes, (start, end), None, liquidation_fees,
    )  # fmt: skip
    market.stated_fee = _stated_fees(paths, symbols)
    return market


def _stated_fees(paths: DataPaths, symbols: list[str]) -> dict[str, float]:
    from asterai.data.filters import read_filters

    entries = read_filters(paths.discovery)
    return {
        s: float(entries[s]["liquidation_fee"])
        for s in symbols
        if (entries.get(s) or {}).get("liquidation_fee") is not None
    }


def with_predictions(
    market: Inputs, preds: pd.DataFrame, start: int | None = None, end: int | None = None
) -> Inputs:
    """``market`` cut to [``start`` (default: the first prediction), ``end`` (default:
    the market's last bar)] with ``preds``' ``p_long``/``p_short`` laid on it (NaN where
    there is no prediction: no signal). ``market`` itself is left as it was."""
    step_ms = int(market.times[1] - market.times[0]) if len(market.times) > 1 else 1
    if start is None:
        start = int(to_epoch_ms(preds["open_time"]).min())
    end = int(market.times[-1]) if end is None else end
    if not market.times[0] <= start <= end <= market.times[-1]:
        raise BacktestInputError(
            f"predictions from {start} to {end} lie outside the market's grid "
            f"({market.times[0]} .. {market.times[-1]})"
        )
    lo, hi = int((start - market.times[0]) // step_ms), int((end - market.times[0]) // step_ms)
    rows = slice(lo, hi + 1)
    times = market.times[rows]
    outside = ~preds["symbol"].isin(market.symbols)
    if outside.any():
        raise BacktestInputError(
            f"predictions for symbols the market does not hold: "
            f"{sorted(preds.loc[outside, 'symbol'].unique())[:5]}"
        )
    # the predictions' symbols, as the backtest stage would lay them out
    symbols = sorted(preds["symbol"].unique())
    cols = np.searchsorted(np.asarray(market.symbols, dtype=object), symbols)
    everything = len(symbols) == len(market.symbols)

    def cut(a: np.ndarray) -> np.ndarray:
        return a[rows] if everything else a[rows][:, cols]

    def per_symbol(a: np.ndarray) -> np.ndarray:
        return a if everything else a[cols]

    fees = (
        market.liquidation_fees
        if everything or market.stated_fee is None
        else [market.stated_fee[s] for s in symbols if s in market.stated_fee]
    )
    return Inputs(
        symbols, times, cut(market.open_), cut(market.high), cut(market.low),
        cut(market.close), cut(market.volume), cut(market.tradeable),
        lay_on_grid(preds, "p_long", symbols, times, step_ms),
        lay_on_grid(preds, "p_short", symbols, times, step_ms),
        cut(market.atr), cut(market.funding), per_symbol(market.tick), per_symbol(market.step),
        per_symbol(market.min_notional), list(market.notes), (start, end), market.run_id, fees,
    )  # fmt: skip


def grid_feature(settings: Settings, inputs: Inputs, column: str) -> np.ndarray:
    """A column of ``data/features/{base}.parquet`` laid on the inputs' (T, N) grid."""
    paths = DataPaths.at(settings.data_root)
    frame = pd.read_parquet(
        paths.features(settings.features.base_interval), columns=["symbol", "open_time", column]
    )
    step_ms = INTERVAL_MS[settings.features.base_interval]
    return lay_on_grid(frame, column, inputs.symbols, inputs.times, step_ms)


def lay_on_grid(
    frame: pd.DataFrame, column: str, symbols: list[str], times: np.ndarray, step_ms: int
) -> np.ndarray:
    out = np.full((len(times), len(symbols)), np.nan)
    frame = frame[frame["symbol"].isin(symbols)]
    code = pd.Categorical(frame["symbol"], categories=symbols).codes
    t = to_epoch_ms(frame["open_time"])
    ok = (code >= 0) & (t >= times[0]) & (t <= times[-1])
    out[(t[ok] - times[0]) // step_ms, code[ok]] = frame[column].to_numpy(dtype=float)[ok]
    return out


def exchange_filters(
    paths: DataPaths, symbols: list[str], settings: Settings, notes: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
    """Tick, lot step and minimum notional per symbol, and the liquidation fee rates
    discovery states for them (the exchange's own filters)."""
    from asterai.data.filters import read_filters

    entries = read_filters(paths.discovery)
    tick, step, notional = (np.zeros(len(symbols)) for _ in range(3))
    missing_notional = []
    liquidation_fees: list[float] = []
    for j, s in enumerate(symbols):
        filters = entries.get(s) or {}
        tick[j] = filters.get("tick_size") or 0.0
        step[j] = filters.get("step_size") or 0.0
        if filters.get("min_notional"):
            notional[j] = filters["min_notional"]
        else:
            notional[j] = settings.strategy.default_min_notional
            missing_notional.append(s)
        if filters.get("liquidation_fee") is not None:
            liquidation_fees.append(float(filters["liquidation_fee"]))
        if not tick[j] or not step[j]:
            notes.append(f"{s}: no tick or lot step from discovery; orders are not rounded to it")
    if missing_notional:
        notes.append(
            f"no MIN_NOTIONAL filter for {len(missing_notional)} symbol(s); the default "
            f"{settings.strategy.default_min_notional:g} USDT applies (strategy.default_min_notional)"
        )
    if len(liquidation_fees) < len(symbols):
        notes.append(
            f"no liquidation fee from discovery for {len(symbols) - len(liquidation_fees)} "
            f"symbol(s); a liquidation pays the highest stated rate, else "
            f"{settings.strategy.liquidation_fee:g} (strategy.liquidation_fee)"
        )
    return tick, step, notional, liquidation_fees
