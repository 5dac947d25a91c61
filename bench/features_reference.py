"""A straightforward per-symbol pandas implementation of the feature catalog.

This is the baseline ``bench/features.py`` measures ``asterai.features.build`` against,
and the oracle it checks the output with. It is written the way one would write the
catalog (``asterai/features/catalog.py``) in plain pandas without thinking about speed:

* per-asset indicators: one DataFrame per symbol, TA-Lib called per symbol, rolling
  statistics with ``Series.rolling()``;
* funding and the higher timeframes: ``pd.merge_asof`` on close times (backward, so a
  value joins a base bar only once it is known at that bar's close);
* cross-asset confluence: the per-asset columns pivoted to a wide (time x symbol)
  DataFrame on the union of the timestamps, then pandas row/rolling operations; the
  average pairwise correlation with ``DataFrame.corr()`` on every 24-bar window;
* cross-sectional ranks: ``groupby("open_time").rank(method="average")`` on the long
  frame;
* labels: a plain Python loop per symbol.

Only the catalog's parameters (windows, thresholds) are imported from ``asterai``; no
computation is.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import talib

from asterai.config import FeatureSettings
from asterai.features import catalog as cat
from asterai.features import confluence as cf
from asterai.features import indicators as ind
from asterai.features import regime as rg
from asterai.intervals import INTERVAL_MS

FLAGS = (
    "rsi_oversold",
    "rsi_overbought",
    "macd_cross_up",
    "macd_cross_down",
    "bb_break_up",
    "bb_break_down",
)


def _div(num: pd.Series, den: pd.Series) -> pd.Series:
    """num / den, NaN where the denominator is zero."""
    return (num / den).where(den != 0)


def _flag(condition: pd.Series, defined_by: pd.Series) -> pd.Series:
    return condition.astype(float).where(defined_by.notna())


def _zscore(x: pd.Series, window: int) -> pd.Series:
    roll = x.rolling(window)
    std = roll.std()
    return ((x - roll.mean()) / std).where(std > 0)


def core_indicators(bars: pd.DataFrame) -> pd.DataFrame:
    """The indicators of every timeframe, on one symbol's bars (same index)."""
    close, high, low = bars["close"], bars["high"], bars["low"]
    c, h, lo = close.to_numpy(float), high.to_numpy(float), low.to_numpy(float)
    idx = bars.index
    out = pd.DataFrame(index=idx)
    out["ret_1"] = np.log(close).diff()
    out["rsi_14"] = pd.Series(talib.RSI(c, ind.RSI_PERIOD), idx)
    macd, signal, hist = (
        pd.Series(a, idx) for a in talib.MACD(c, ind.MACD_FAST, ind.MACD_SLOW, ind.MACD_SIGNAL)
    )
    out["macd"] = _div(macd, close)
    out["macd_signal"] = _div(signal, close)
    out["macd_hist"] = _div(hist, close)
    upper, middle, lower = (
        pd.Series(a, idx) for a in talib.BBANDS(c, ind.BB_PERIOD, ind.BB_DEV, ind.BB_DEV, 0)
    )
    out["bb_pctb_20"] = _div(close - lower, upper - lower)
    out["bb_width_20"] = _div(upper - lower, middle)
    atr = pd.Series(talib.ATR(h, lo, c, ind.ATR_PERIOD), idx)
    out["atr_14"] = atr
    out["atr_pct_14"] = _div(atr, close)
    out["adx_14"] = pd.Series(talib.ADX(h, lo, c, ind.ADX_PERIOD), idx)
    out["rv_24"] = out["ret_1"].rolling(24).std()
    out["volume_z_24"] = _zscore(np.log1p(bars["volume"]), 24)
    return out


def asset_frame(inp, fs: FeatureSettings) -> pd.DataFrame:
    """Every per-asset column of one symbol, plus its labels."""
    bars = inp.bars[fs.base_interval].reset_index(drop=True)
    step_ms = INTERVAL_MS[fs.base_interval]
    step = pd.Timedelta(milliseconds=step_ms)
    close = bars["close"]
    core = core_indicators(bars)
    df = pd.DataFrame({"symbol": inp.symbol, "open_time": bars["open_time"]})
    df["close_time"] = bars["close_time"]
    for h in ind.RETURN_HORIZONS:
        df[f"ret_{h}"] = np.log(close) - np.log(close).shift(h)
    for name in (
        "rsi_14",
        "macd",
        "macd_signal",
        "macd_hist",
        "bb_pctb_20",
        "bb_width_20",
        "atr_14",
        "atr_pct_14",
        "adx_14",
        "rv_24",
        "volume_z_24",
    ):
        df[name] = core[name]
    df["rv_72"] = core["ret_1"].rolling(72).std()
    df["volume_z_72"] = _zscore(np.log1p(bars["volume"]), 72)
    df["taker_buy_share"] = _div(bars["taker_buy_base"].astype(float), bars["volume"])
    df["taker_buy_share_24"] = df["taker_buy_share"].rolling(24).mean()
    for w in ind.RANGE_WINDOWS:
        df[f"dist_high_{w}"] = close / bars["high"].rolling(w).max() - 1.0
        df[f"dist_low_{w}"] = close / bars["low"].rolling(w).min() - 1.0

    # funding: the latest settlement at or before the bar's close
    funding = inp.funding
    if funding is None:
        funding = pd.DataFrame(
            {
                "funding_time": pd.Series([], dtype=bars["close_time"].dtype),
                "funding_rate": pd.Series([], dtype=float),
            }
        )
    funding = funding.sort_values("funding_time")[["funding_time", "funding_rate"]].copy()
    funding["funding_rate_change"] = funding["funding_rate"].diff()
    funding["funding_time"] = funding["funding_time"].astype(bars["close_time"].dtype)
    joined = pd.merge_asof(
        df[["close_time"]], funding, left_on="close_time", right_on="funding_time"
    )
    df["funding_rate"] = joined["funding_rate"].to_numpy(float)
    df["funding_rate_change"] = joined["funding_rate_change"].to_numpy(float)

    if inp.listing_ms is None:  # listed before the available history: unknown
        df["listing_age_h"] = np.nan
    else:
        listing = pd.Timestamp(inp.listing_ms, unit="ms", tz="UTC")
        df["listing_age_h"] = (df["open_time"] + step - listing) / pd.Timedelta(hours=1)

    rsi, hist, pctb, vz = core["rsi_14"], core["macd_hist"], core["bb_pctb_20"], core["volume_z_24"]
    prev_hist = hist.shift(1)
    df["rsi_oversold"] = _flag(rsi < ind.RSI_OVERSOLD, rsi)
    df["rsi_overbought"] = _flag(rsi > ind.RSI_OVERBOUGHT, rsi)
    df["macd_cross_up"] = _flag((prev_hist <= 0) & (hist > 0), hist + prev_hist)
    df["macd_cross_down"] = _flag((prev_hist >= 0) & (hist < 0), hist + prev_hist)
    df["bb_break_up"] = _flag(pctb > 1.0, pctb)
    df["bb_break_down"] = _flag(pctb < 0.0, pctb)
    df["volume_spike"] = _flag(vz > ind.VOLUME_SPIKE_Z, vz)
    df["quote_volume"] = bars["quote_volume"].astype(float)

    # higher timeframes, joined on close time once the higher bar has closed
    for iv in fs.higher_intervals:
        names = [name for name, _ in cat.HIGHER_TF]
        frame = inp.bars.get(iv)
        if frame is None or frame.empty:
            for name in names:
                df[f"{iv}_{name}"] = np.nan
            continue
        frame = frame.reset_index(drop=True)
        higher = core_indicators(frame)[names].add_prefix(f"{iv}_")
        higher["htf_close_time"] = frame["close_time"].astype(df["close_time"].dtype)
        joined = pd.merge_asof(
            df[["close_time"]], higher, left_on="close_time", right_on="htf_close_time"
        )
        for name in names:
            df[f"{iv}_{name}"] = joined[f"{iv}_{name}"].to_numpy(float)

    # labels
    for side, name in ((1, "label_tb"), (-1, "label_tb_short")):
        label, bars_to = triple_barrier_loop(
            bars["open"].tolist(),
            bars["high"].tolist(),
            bars["low"].tolist(),
            core["atr_14"].tolist(),
            bars["open_time"].dt.as_unit("ms").astype("int64").tolist(),
            step_ms,
            fs.label_horizon,
            fs.tp_atr,
            fs.sl_atr,
            side,
        )
        df[name] = label
        df[f"{name}_bars"] = bars_to
    h = fs.label_horizon
    consecutive = (bars["open_time"].shift(-h) - bars["open_time"]) == h * step
    entry = bars["open"].shift(-1)  # a signal at t's close fills at t+1's open
    df["label_fwd_ret"] = np.log(close.shift(-h) / entry).where(consecutive)
    return df


def triple_barrier_loop(open_, high, low, atr, times, step, horizon, tp_atr, sl_atr, side=1):
    """The triple-barrier label as a plain loop (see asterai/features/labels.py's doc).

    ``side`` +1 for a long trade, -1 for a short one (target below, stop above).
    """
    n = len(open_)
    label = [float("nan")] * n
    bars = [float("nan")] * n
    for t in range(n - horizon):
        if times[t + horizon] - times[t] != horizon * step:
            continue
        a = atr[t]
        if not math.isfinite(a) or a <= 0.0:
            continue
        entry = open_[t + 1]
        target = entry + side * tp_atr * a
        stop = entry - side * sl_atr * a
        outcome, took = 0.0, horizon
        for k in range(t + 1, t + horizon + 1):
            stopped = low[k] <= stop if side > 0 else high[k] >= stop
            reached = high[k] >= target if side > 0 else low[k] <= target
            if stopped:  # the stop first when a bar touches both
                outcome, took = -1.0, k - t
                break
            if reached:
                outcome, took = 1.0, k - t
                break
        label[t] = outcome
        bars[t] = float(took)
    return label, bars


def _row_mean(wide: pd.DataFrame) -> pd.Series:
    """Mean across the assets that have a value, NaN with fewer than two."""
    return wide.mean(axis=1).where(wide.count(axis=1) >= cf.MIN_ASSETS)


def average_pairwise_correlation(returns: pd.DataFrame, window: int) -> pd.Series:
    """Mean off-diagonal Pearson correlation over each window, among the assets with a
    full window that varies in it."""
    out = pd.Series(np.nan, index=returns.index)
    for end in range(window, len(returns) + 1):
        win = returns.iloc[end - window : end]
        keep = win.notna().all() & (win.std(ddof=0) > 1e-12)
        win = win.loc[:, keep]
        n = win.shape[1]
        if n < cf.MIN_ASSETS:
            continue
        corr = win.corr().to_numpy()
        out.iloc[end - 1] = (corr.sum() - np.trace(corr)) / (n * (n - 1))
    return out


def cross_asset(long: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-asset cross columns (long, aligned with ``long``) and market columns (by time)."""

    def wide(col: str) -> pd.DataFrame:
        return long.pivot(index="open_time", columns="symbol", values=col)

    ret1 = wide("ret_1")
    market = pd.DataFrame(index=ret1.index)
    per_asset: dict[str, pd.DataFrame] = {}

    for ref in ("btc", "eth"):
        sym = f"{ref.upper()}USDT"
        for w in cf.CORR_WINDOWS:
            if sym in ret1.columns:
                corr = ret1.rolling(w).corr(ret1[sym])
                varies = ret1.rolling(w).var() > 0
                ref_varies = ret1[sym].rolling(w).var() > 0
                ok = (np.isfinite(corr) & varies).where(ref_varies, False, axis=0)
                per_asset[f"corr_{ref}_{w}"] = corr.where(ok).clip(-1.0, 1.0)
            else:
                per_asset[f"corr_{ref}_{w}"] = ret1 * np.nan
    market["market_avg_corr_24"] = average_pairwise_correlation(ret1, cf.PAIRWISE_WINDOW)

    for flag in FLAGS:
        market[f"share_{flag}"] = _row_mean(wide(flag))
    spikes = wide("volume_spike")
    market["n_volume_spikes"] = spikes.sum(axis=1).where(spikes.count(axis=1) >= cf.MIN_ASSETS)
    market["share_volume_spikes"] = _row_mean(spikes)

    for h in cf.ALIGN_HORIZONS:
        r = wide(f"ret_{h}")
        moved = r.notna() & (r != 0)  # a zero return says nothing about direction
        positive = (r > 0).astype(float).where(moved)
        share = _row_mean(positive)
        market[f"share_pos_ret_{h}"] = share
        majority = np.sign(share - 0.5)
        agree = np.sign(r).eq(majority, axis=0).astype(float)
        ok = moved & pd.DataFrame({c: majority.notna() & (majority != 0) for c in r.columns})
        per_asset[f"agree_majority_{h}"] = agree.where(ok)

    for h in cf.STRENGTH_HORIZONS:
        r = wide(f"ret_{h}")
        per_asset[f"rel_strength_{h}"] = r.sub(_row_mean(r), axis=0)

    market["market_ret_1"] = _row_mean(ret1)
    market["market_rv_24"] = market["market_ret_1"].rolling(24).std()

    qv = wide("quote_volume")
    total = qv.sum(axis=1).rolling(cf.DOMINANCE_WINDOW).sum()
    for ref in ("btc", "eth"):
        sym = f"{ref.upper()}USDT"
        if sym in qv.columns:
            dom = qv[sym].rolling(cf.DOMINANCE_WINDOW).sum() / total
            market[f"{ref}_dominance_24"] = dom.where(total > 0)
        else:
            market[f"{ref}_dominance_24"] = np.nan

    adx = wide("adx_14")
    trend_share = _row_mean((adx > rg.ADX_TREND).astype(float).where(adx.notna()))
    market["regime_trending"] = (trend_share >= 0.5).astype(float).where(trend_share.notna())
    rv = market["market_rv_24"]
    median = rv.rolling(rg.VOL_MEDIAN_WINDOW, min_periods=rg.VOL_MEDIAN_MIN).median()
    market["regime_high_vol"] = (rv > median).astype(float).where(rv.notna() & median.notna())
    market["regime"] = 2 * market["regime_trending"] + market["regime_high_vol"]

    keys = pd.MultiIndex.from_frame(long[["open_time", "symbol"]])
    cross = pd.DataFrame(
        {name: frame.stack().reindex(keys).to_numpy() for name, frame in per_asset.items()},
        index=long.index,
    )
    return cross, market


def build_reference(inputs, fs: FeatureSettings) -> pd.DataFrame:
    """The feature frame (same columns and row order as ``build_features``)."""
    long = pd.concat(
        [asset_frame(inp, fs) for inp in sorted(inputs, key=lambda i: i.symbol)],
        ignore_index=True,
    )
    cross, market = cross_asset(long)
    long = pd.concat([long, cross], axis=1)
    long = long.join(market, on="open_time")
    by_bar = long.groupby("open_time")
    ranks = {}
    for name in cat.ranked_features(fs.higher_intervals):
        n = by_bar[name].transform("count")
        rank = (by_bar[name].rank(method="average") - 1) / (n - 1)
        ranks[f"xs_rank_{name}"] = rank.where(n >= cf.MIN_RANK_ASSETS)
    long = pd.concat([long, pd.DataFrame(ranks, index=long.index)], axis=1)
    columns = [
        c for c in cat.feature_names(fs.higher_intervals) + cat.label_names() if c in long.columns
    ]
    out = long[["symbol", "open_time", *columns]]
    return out.sort_values(["open_time", "symbol"], kind="stable").reset_index(drop=True)
