"""The feature stage: verified series in, ``data/features/{interval}.parquet`` out.

``load_inputs`` takes data only through the quality gate. ``build_features`` is a
pure function of those inputs: per-asset indicators on each symbol's own bars, a
panel on the union of their timestamps for the cross-asset confluence and the
regime, higher-timeframe indicators joined to a base row only once the higher bar
has closed (its ``close_time`` at or before the base bar's), the cross-sectional ranks
of the asset-level features (``xs_rank_*``, from each bar's values across the symbols,
higher timeframes included), then the labels. The output is long: one row per
(symbol, open_time) where the symbol has a bar, the catalog's feature columns, then
the ``label_`` columns.

The symbols are the gate's trainable ones (excluded symbols are left out with their
reasons in the gate's report; a contaminated file anywhere stops the stage). Every
trainable symbol keeps all its rows, also those before it becomes tradeable: features
need that history. Which rows may be traded, or trained on, is the point-in-time
universe's decision (``data/universe.parquet``, written by the gate from trailing data
only), which training and the backtest read. The cross-asset features of a row are
computed over the trainable symbols that have a bar at that time; a symbol the gate
excludes for its whole history (dead, too many outliers) is absent from them, which the
gate's report lists. The metadata records the symbols used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from asterai import __version__, atomic
from asterai.config import FeatureSettings, Settings
from asterai.data.store import read_provenance, read_series, to_epoch_ms
from asterai.features import catalog as cat
from asterai.features.confluence import EVENT_FLAGS, confluence, cross_sectional_rank
from asterai.features.indicators import asset_features, consecutive_run, core_indicators, mask_gaps
from asterai.features.regime import regime
from asterai.features.types import FeatureResult, SymbolInput
from asterai.intervals import INTERVAL_MS, iso_ms
from asterai.paths import DataPaths

log = logging.getLogger(__name__)

FEATURES_META_KEY = b"asterai.features"
#: The longest funding interval Aster uses (8 h): an older rate is a missing one.
FUNDING_MAX_AGE_MS = 8 * 3_600_000
PANEL_COLUMNS = ("ret_1", "ret_4", "ret_24", "ret_72", "adx_14", *EVENT_FLAGS, "volume_spike")


def _asof(event_times: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Index of the last event with time <= ``at`` (or -1)."""
    return np.searchsorted(event_times, at, side="right") - 1


def funding_at(
    times: np.ndarray, rates: np.ndarray, close_times: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """At each bar close: the latest funding rate settled at or before it (NaN when
    older than the longest funding interval) and its change from the rate before.
    ``times`` (ms, increasing) and ``rates``: the settled funding."""
    rate = np.full(len(close_times), np.nan)
    change = np.full(len(close_times), np.nan)
    if len(times):
        idx = _asof(times, close_times)
        has = idx >= 0
        has[has] = close_times[has] - times[idx[has]] <= FUNDING_MAX_AGE_MS  # never a stale rate
        rate[has] = rates[idx[has]]
        prev = has & (idx >= 1)
        change[prev] = rates[idx[prev]] - rates[idx[prev] - 1]
    return rate, change


def _symbol_block(
    inp: SymbolInput, fs: FeatureSettings
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    base = inp.bars[fs.base_interval]
    step = INTERVAL_MS[fs.base_interval]
    times = to_epoch_ms(base["open_time"])
    close_times = times + step - 1
    o, h, lo, c, v = (
        base[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close", "volume")
    )
    tb = base["taker_buy_base"].to_numpy(dtype=float)
    out = asset_features(o, h, lo, c, v, tb, times, inp.listing_ms, step / 3_600_000)

    rate, change = np.full(len(times), np.nan), np.full(len(times), np.nan)
    if inp.funding is not None and len(inp.funding):
        rate, change = funding_at(
            to_epoch_ms(inp.funding["funding_time"]),
            inp.funding["funding_rate"].to_numpy(dtype=float),
            close_times,
        )
    out["funding_rate"] = rate
    out["funding_rate_change"] = change
    out["quote_volume"] = base["quote_volume"].to_numpy(dtype=float)

    # higher timeframes, joined once their bar has closed
    for iv in fs.higher_intervals:
        names = [f"{iv}_{name}" for name, _ in cat.HIGHER_TF]
        frame = inp.bars.get(iv)
        if frame is None or frame.empty:
            for n in names:
                out[n] = np.full(len(times), np.nan)
            continue
        ht = to_epoch_ms(frame["open_time"])
        core = core_indicators(
            *(frame[k].to_numpy(dtype=float) for k in ("high", "low", "close", "volume"))
        )
        mask_gaps(core, consecutive_run(ht, INTERVAL_MS[iv]))
        higher_close = ht + INTERVAL_MS[iv] - 1
        idx = _asof(higher_close, close_times)
        has = idx >= 0
        # only the latest higher bar: if it is missing, no older one stands in for it
        has[has] = close_times[has] - higher_close[idx[has]] < INTERVAL_MS[iv]
        for (name, _), col in zip(cat.HIGHER_TF, names, strict=True):
            values = np.full(len(times), np.nan)
            values[has] = core[name][idx[has]]
            out[col] = values

    out.update(label_columns(base, out["atr_14"], inp.tick, fs))
    return times, out


def label_columns(
    base: pd.DataFrame, atr: np.ndarray, tick: float, fs: FeatureSettings
) -> dict[str, np.ndarray]:
    """One symbol's label columns from its base bars ``base``, the ATR known at each
    bar and its price tick, by ``fs``' barriers and horizon (the search recomputes them
    with a trial's, ``asterai.optimize``; nothing else of the feature table changes)."""
    from asterai.features.labels import forward_return, triple_barrier_r_nb  # numba: batch only

    step = INTERVAL_MS[fs.base_interval]
    times = to_epoch_ms(base["open_time"])
    o, h, lo, c = (base[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    out: dict[str, np.ndarray] = {}
    r_columns: dict[str, np.ndarray] = {}
    for direction, side in ((1, ""), (-1, "_short")):
        label, bars, r_mult, risk = triple_barrier_r_nb(
            o, h, lo, c, atr, times, step, fs.label_horizon, fs.tp_atr, fs.sl_atr, direction, tick
        )
        out[f"label_tb{side}"] = label
        out[f"label_tb{side}_bars"] = bars
        r_columns[f"label_r{side}"] = r_mult
        r_columns[f"label_risk{side}"] = risk
    out["label_fwd_ret"] = forward_return(o, c, times, step, fs.label_horizon)
    # the catalog's order: the triple barrier's, the forward return, then the R-multiples
    for name in ("label_r", "label_r_short", "label_risk", "label_risk_short"):
        out[name] = r_columns[name]
    return out


def build_features(inputs: list[SymbolInput], fs: FeatureSettings) -> FeatureResult:
    """All features and labels for ``inputs`` (pure: no I/O)."""
    inputs = sorted(inputs, key=lambda i: i.symbol)
    symbols = [i.symbol for i in inputs]
    blocks = [_symbol_block(inp, fs) for inp in inputs]
    grid = np.unique(np.concatenate([t for t, _ in blocks])) if blocks else np.empty(0, np.int64)
    positions = [np.searchsorted(grid, t) for t, _ in blocks]

    def wide(name: str) -> np.ndarray:
        """``name`` on the panel (time x symbols), NaN where a symbol has no bar."""
        out = np.full((len(grid), len(blocks)), np.nan)
        for j, ((_, values), pos) in enumerate(zip(blocks, positions, strict=True)):
            out[pos, j] = values[name]
        return out

    panel = {name: wide(name) for name in (*PANEL_COLUMNS, "quote_volume")}
    market, cross = confluence(panel, symbols)
    market.update(regime(panel["adx_14"], market["market_rv_24"]))
    ranked = {f"xs_rank_{name}": name for name in cat.ranked_features(fs.higher_intervals)}

    features = cat.feature_names(fs.higher_intervals)
    labels = cat.label_names()
    # one long frame, rows ordered by (time, symbol): each symbol's rows sit at its grid
    # positions, so a single argsort of grid position x symbols + column gives the order
    pos_all = np.concatenate(positions) if positions else np.empty(0, np.int64)
    col_all = (
        np.concatenate([np.full(len(p), j) for j, p in enumerate(positions)])
        if positions
        else pos_all
    )
    order = np.argsort(pos_all * max(len(symbols), 1) + col_all, kind="stable")
    pos_sorted, col_sorted = pos_all[order], col_all[order]
    names = [*features, *labels]
    # every column is float64: filled into one (columns x rows) array that the frame
    # takes as its float block, instead of pandas copying 100+ columns into one
    data = np.empty((len(names), len(order)))
    for i, name in enumerate(names):
        if name in cross:
            data[i] = cross[name][pos_sorted, col_sorted]
        elif name in market:
            data[i] = market[name][pos_sorted]
        elif name in ranked:  # one panel at a time: only one extra (time x symbols) array
            data[i] = cross_sectional_rank(wide(ranked[name]))[pos_sorted, col_sorted]
        else:
            data[i] = np.concatenate([values[name] for _, values in blocks])[order]
    frame = pd.DataFrame(data.T, columns=names, copy=False)
    opened = pd.to_datetime(grid[pos_sorted], unit="ms", utc=True).as_unit("ms")
    frame.insert(0, "open_time", opened)
    frame.insert(
        0,
        "symbol",
        pd.Categorical.from_codes(col_sorted, categories=symbols).astype(object)
        if symbols
        else np.empty(0, dtype=object),
    )
    produced = [c for c in frame.columns if c not in ("symbol", "open_time")]
    if produced != features + labels:
        raise AssertionError("feature columns drifted from the catalog")  # a programming error
    return FeatureResult(frame, symbols, features, labels)


# -- loading through the gate and writing ------------------------------------------------


def load_inputs(
    settings: Settings, symbols: list[str] | None = None
) -> tuple[list[SymbolInput], dict[str, str]]:
    """Verified bars (through the quality gate) for the trainable or named symbols."""
    from asterai.data.filters import read_filters
    from asterai.data.gate import GateRefused, verified_series

    fs = settings.features
    intervals = (fs.base_interval, *fs.higher_intervals)
    missing = [iv for iv in intervals if iv not in settings.collect.intervals]
    if missing:
        raise GateRefused(
            f"the features need {', '.join(missing)} bars, which collect.intervals "
            f"({', '.join(settings.collect.intervals)}) does not include: add them and collect, "
            "or set features.higher_intervals"
        )
    series = verified_series(settings, intervals=intervals, symbols=symbols)
    paths = DataPaths.at(settings.data_root)
    filters = read_filters(paths.discovery)
    names = sorted({s for s, _ in series})
    inputs: list[SymbolInput] = []
    hashes: dict[str, str] = {}
    for s in names:
        bars = {iv: series[(s, iv)] for iv in intervals if (s, iv) in series}
        base_path = paths.klines(s, fs.base_interval)
        prov = read_provenance(base_path) or {}
        for path in [paths.klines(s, iv) for iv in intervals] + [paths.funding(s)]:
            if path.exists():
                hashes[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
        first = int(to_epoch_ms(bars[fs.base_interval]["open_time"])[0])
        listing = prov.get("listing_open_time")
        funding = None
        if paths.funding(s).exists():
            funding = read_series(paths.funding(s), "funding").frame
        tick = (filters.get(s) or {}).get("tick_size") or 0.0
        inputs.append(
            SymbolInput(
                s, bars, funding, int(listing) if listing is not None else first, float(tick)
            )
        )
    listings = {
        s: {
            iv: (read_provenance(paths.klines(s, iv)) or {}).get("listing_open_time")
            for iv in intervals
            if paths.klines(s, iv).exists()
        }
        for s in names
    }
    return unknown_listings(inputs, listings), hashes


def unknown_listings(
    inputs: list[SymbolInput], listings: dict[str, dict[str, int | None]]
) -> list[SymbolInput]:
    """Listing times that are really the start of a cut history become unknown (None).

    The collector records the exchange's first kline of each interval as that file's
    listing (``listing_open_time``). A live exchange answers with the market's true
    first bars: the listing day's 4h and 1d bars *contain* the listing hour (the daily
    bar opens at 00:00). A recording that starts in the middle of a market's life (the
    replay of ``shared/aster-real``) answers with its own first bars, and its 4h and 1d
    series start with their first complete bar after the cut, later than its first
    hour. So when any higher interval's first kline opens after the base interval's,
    the history was cut there and the listing is unknown
    (``listing_age_h`` NaN): hours since the cut would be a clock, not a listing age.
    ``listings``: symbol -> interval -> first kline (epoch ms) from the provenance.
    """
    out = []
    for inp in inputs:
        firsts = listings.get(inp.symbol, {})
        base = min(inp.bars, key=lambda iv: INTERVAL_MS[iv])
        base_first = firsts.get(base)
        cut = base_first is not None and any(
            t is not None and t > base_first for iv, t in firsts.items() if iv != base
        )
        out.append(replace(inp, listing_ms=None) if cut else inp)
    return out


def write_features(settings: Settings, result: FeatureResult) -> Any:
    path = DataPaths.at(settings.data_root).features(settings.features.base_interval)
    table = pa.Table.from_pandas(result.frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta.pop(b"pandas", None)
    meta[FEATURES_META_KEY] = json.dumps(
        {
            "asterai_version": __version__,
            "created_at": iso_ms(int(time.time() * 1000)),
            "base_interval": settings.features.base_interval,
            "settings": settings.features.model_dump(mode="json"),
            "symbols": result.symbols,
            "features": result.features,
            "labels": result.labels,
            "inputs_sha256": result.inputs,
        },
        sort_keys=True,
    ).encode()
    table = table.replace_schema_metadata(meta)
    atomic.write_with(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    return path


def run_features(
    settings: Settings, *, symbols: list[str] | None = None, plots: bool = True
) -> dict[str, Any]:
    """Load verified data, build every feature and label, write them (and the charts)."""
    started = time.perf_counter()
    inputs, hashes = load_inputs(settings)
    result = build_features(inputs, settings.features)
    result.inputs = hashes
    path = write_features(settings, result)
    built = time.perf_counter() - started
    charts: list[str] = []
    if plots:
        from asterai.features.plots import plot_confluence

        wanted = list(symbols) if symbols else list(settings.features.plot_symbols)
        charts = [str(p) for p in plot_confluence(settings, result, inputs, wanted)]
    return {
        "path": str(path),
        "rows": len(result.frame),
        "symbols": result.symbols,
        "features": len(result.features),
        "labels": result.labels,
        "seconds": round(built, 3),
        "charts": charts,
    }
