"""Per-asset indicators on one symbol's own bars (TA-Lib for the standard ones).

``asset_features`` takes plain numpy arrays of one symbol's consecutive bars and
returns named feature arrays of the same length. Every value at row ``t`` uses bars
``<= t`` only; warm-up rows are NaN (never filled).
"""

from __future__ import annotations

import numpy as np
import talib
from talib import stream as ta_stream

from asterai.features.rolling import (
    lag_diff,
    rolling_max,
    rolling_mean,
    rolling_min,
    rolling_std,
    rolling_zscore,
)
from asterai.features.rolling import last_rows as _last

RETURN_HORIZONS = (1, 4, 12, 24, 72)
RSI_PERIOD = 14
RSI_OVERSOLD, RSI_OVERBOUGHT = 30.0, 70.0
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
BB_PERIOD, BB_DEV = 20, 2.0
ATR_PERIOD = 14
ADX_PERIOD = 14
VOL_WINDOWS = (24, 72)
RANGE_WINDOWS = (24, 168)
VOLUME_SPIKE_Z = 2.0


#: Consecutive bars each feature needs (its lookback, the current bar included). After a
#: gap in a symbol's bars the feature stays NaN until that many consecutive bars exist
#: again, so no window or return ever spans a gap as if it were one bar.
BARS_NEEDED: dict[str, int] = {
    "rsi_14": RSI_PERIOD + 1,
    "macd": MACD_SLOW,
    "macd_signal": MACD_SLOW + MACD_SIGNAL - 1,
    "macd_hist": MACD_SLOW + MACD_SIGNAL - 1,
    "bb_pctb_20": BB_PERIOD,
    "bb_width_20": BB_PERIOD,
    "atr_14": ATR_PERIOD + 1,
    "atr_pct_14": ATR_PERIOD + 1,
    "adx_14": 2 * ADX_PERIOD,
    "rv_24": 25,
    "rv_72": 73,
    "volume_z_24": 24,
    "volume_z_72": 72,
    "taker_buy_share_24": 24,
    **{f"dist_{side}_{w}": w for w in RANGE_WINDOWS for side in ("high", "low")},
    **{f"ret_{h}": h + 1 for h in RETURN_HORIZONS},
    "rsi_oversold": RSI_PERIOD + 1,
    "rsi_overbought": RSI_PERIOD + 1,
    "macd_cross_up": MACD_SLOW + MACD_SIGNAL,
    "macd_cross_down": MACD_SLOW + MACD_SIGNAL,
    "bb_break_up": BB_PERIOD,
    "bb_break_down": BB_PERIOD,
    "volume_spike": 24,
}


def consecutive_run(open_time: np.ndarray, step: int) -> np.ndarray:
    """At each bar, how many consecutive bars (no gap) end there, itself included."""
    n = len(open_time)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    breaks = np.r_[True, np.diff(open_time) != step]
    starts = np.maximum.accumulate(np.where(breaks, np.arange(n), 0))
    return np.arange(n) - starts + 1


def mask_gaps(features: dict[str, np.ndarray], run: np.ndarray) -> None:
    """Blank every feature whose lookback would reach across a gap (in place)."""
    if len(run) and run[-1] == len(run):
        return  # no gap at all
    for name, needed in BARS_NEEDED.items():
        if name in features:
            features[name] = np.where(run >= needed, features[name], np.nan)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / den, np.nan)


def ta_series(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> dict[str, np.ndarray]:
    """TA-Lib's outputs for one series of consecutive bars (1-d arrays).

    Kept apart from the arithmetic on them (``core_from``) because these are the only
    recursive indicators (Wilder's smoothing, EMAs): the live features run them on each
    symbol's held bars and the rest on a panel of the last bars (``features.latest``).
    """
    macd, signal, hist = talib.MACD(close, MACD_FAST, MACD_SLOW, MACD_SIGNAL)
    upper, middle, lower = talib.BBANDS(close, BB_PERIOD, BB_DEV, BB_DEV, 0)
    return {
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
        "atr": talib.ATR(high, low, close, ATR_PERIOD),
        "rsi": talib.RSI(close, RSI_PERIOD),
        "adx": talib.ADX(high, low, close, ADX_PERIOD),
    }


#: ``ta_series``' outputs, in its order
TA_OUTPUTS = ("macd", "macd_signal", "macd_hist", "bb_upper", "bb_middle", "bb_lower", "atr",
              "rsi", "adx")  # fmt: skip


class TaHandles:
    """TA-Lib's own streaming handles (``talib.stream``, TA-Lib 0.8) of ``ta_series``'
    indicators, positioned at the last bar of the series they were opened on: each
    ``update`` with the next bar gives that bar's outputs, bit-identical to ``ta_series``
    on the series extended by that bar (TA-Lib's promise, checked by
    ``tests/test_features.py``), in a few microseconds instead of a pass over the
    series. The live features carry one per symbol and timeframe."""

    __slots__ = ("macd", "bbands", "atr", "rsi", "adx")

    def __init__(self, macd, bbands, atr, rsi, adx) -> None:
        self.macd, self.bbands, self.atr, self.rsi, self.adx = macd, bbands, atr, rsi, adx

    @staticmethod
    def open(
        high: np.ndarray, low: np.ndarray, close: np.ndarray
    ) -> tuple[TaHandles | None, dict[str, np.ndarray]]:
        """``ta_series(high, low, close)`` and the handles at its last bar; None for the
        handles while the series is shorter than an indicator's warm-up."""
        try:
            macd, (m, sig, hist) = ta_stream.MACD.open_and_fill(
                close, MACD_FAST, MACD_SLOW, MACD_SIGNAL
            )
            bb, (up, mid, lo) = ta_stream.BBANDS.open_and_fill(close, BB_PERIOD, BB_DEV, BB_DEV, 0)
            atr, a = ta_stream.ATR.open_and_fill(high, low, close, ATR_PERIOD)
            rsi, r = ta_stream.RSI.open_and_fill(close, RSI_PERIOD)
            adx, d = ta_stream.ADX.open_and_fill(high, low, close, ADX_PERIOD)
        except talib.InsufficientHistory:
            return None, ta_series(high, low, close)
        values = (m, sig, hist, up, mid, lo, a, r, d)
        return TaHandles(macd, bb, atr, rsi, adx), dict(zip(TA_OUTPUTS, values, strict=True))

    def update(self, high: float, low: float, close: float) -> tuple[float, ...]:
        """The next bar's outputs, in ``TA_OUTPUTS``' order (raises on a bar that is not
        finite, the handles left as they were)."""
        if not np.isfinite(high + low + close):
            raise ValueError(f"a bar that is not finite: high {high}, low {low}, close {close}")
        m = self.macd.update(close)
        b = self.bbands.update(close)
        return (*m, *b, self.atr.update(high, low, close), self.rsi.update(close),
                self.adx.update(high, low, close))  # fmt: skip


def core_from(
    ta: dict[str, np.ndarray],
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    tail: int | None = None,
) -> dict[str, np.ndarray]:
    """The indicators computed on every timeframe (base, 4h, 1d), from ``ta_series``'
    outputs and the bars: 1-d arrays of one series, or (time x assets) panels.
    ``tail``: only the last rows are wanted (the rolling statistics skip the others)."""
    logc = np.log(close)
    ret1 = lag_diff(logc, 1)
    upper, middle, lower = ta["bb_upper"], ta["bb_middle"], ta["bb_lower"]
    atr = ta["atr"]
    return {
        "ret_1": ret1,
        "rsi_14": ta["rsi"],
        "macd": _ratio(ta["macd"], close),
        "macd_signal": _ratio(ta["macd_signal"], close),
        "macd_hist": _ratio(ta["macd_hist"], close),
        "bb_pctb_20": _ratio(close - lower, upper - lower),
        "bb_width_20": _ratio(upper - lower, middle),
        "atr_14": atr,
        "atr_pct_14": _ratio(atr, close),
        "adx_14": ta["adx"],
        "rv_24": _last(rolling_std, 24, tail, ret1),
        "volume_z_24": _last(rolling_zscore, 24, tail, np.log1p(volume)),
    }


def core_indicators(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray
) -> dict[str, np.ndarray]:
    """The indicators computed on every timeframe (base, 4h, 1d), for one series."""
    return core_from(ta_series(high, low, close), high, low, close, volume)


def asset_features(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    taker_buy: np.ndarray,
    open_time: np.ndarray,
    listing_ms: int | None,
    hours_per_bar: float,
) -> dict[str, np.ndarray]:
    """Every per-asset feature of the base timeframe for one symbol."""
    core = core_indicators(high, low, close, volume)
    out = asset_from(
        core, close, high, low, volume, taker_buy, open_time,
        np.nan if listing_ms is None else float(listing_ms), hours_per_bar,
    )  # fmt: skip
    mask_gaps(out, consecutive_run(open_time, round(hours_per_bar * 3_600_000)))
    return out


def asset_from(
    core: dict[str, np.ndarray],
    close: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    volume: np.ndarray,
    taker_buy: np.ndarray,
    open_time: np.ndarray,
    listing_ms: float | np.ndarray,
    hours_per_bar: float,
    tail: int | None = None,
) -> dict[str, np.ndarray]:
    """The per-asset features of the base timeframe from ``core_from``'s indicators and
    the bars, before the gap mask: 1-d arrays of one series, or (time x assets) panels
    (then ``open_time`` is the panel's times and ``listing_ms`` one value per asset,
    NaN where the listing is unknown). ``tail``: as in ``core_from``."""
    logc = np.log(close)
    out: dict[str, np.ndarray] = {}
    for h in RETURN_HORIZONS:
        out[f"ret_{h}"] = core["ret_1"] if h == 1 else lag_diff(logc, h)
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
        out[name] = core[name]
    out["rv_72"] = _last(rolling_std, 72, tail, core["ret_1"])
    out["volume_z_72"] = _last(rolling_zscore, 72, tail, np.log1p(volume))
    share = _ratio(taker_buy, volume)
    out["taker_buy_share"] = share
    out["taker_buy_share_24"] = _last(rolling_mean, 24, tail, share)
    for w in RANGE_WINDOWS:
        out[f"dist_high_{w}"] = close / _last(rolling_max, w, tail, high) - 1.0
        out[f"dist_low_{w}"] = close / _last(rolling_min, w, tail, low) - 1.0
    opened = open_time.astype(float) if close.ndim == 1 else open_time.astype(float)[:, None]
    # exact: epoch milliseconds are integers far below 2**53
    out["listing_age_h"] = (opened - listing_ms) / 3_600_000.0 + hours_per_bar
    # events that the cross-asset confluence counts (1.0 / 0.0, NaN while warming up)
    rsi, hist, pctb = core["rsi_14"], core["macd_hist"], core["bb_pctb_20"]
    prev_hist = np.concatenate([np.full((1, *hist.shape[1:]), np.nan), hist[:-1]])
    out["rsi_oversold"] = _flag(rsi < RSI_OVERSOLD, rsi)
    out["rsi_overbought"] = _flag(rsi > RSI_OVERBOUGHT, rsi)
    out["macd_cross_up"] = _flag((prev_hist <= 0) & (hist > 0), hist + prev_hist)
    out["macd_cross_down"] = _flag((prev_hist >= 0) & (hist < 0), hist + prev_hist)
    out["bb_break_up"] = _flag(pctb > 1.0, pctb)
    out["bb_break_down"] = _flag(pctb < 0.0, pctb)
    out["volume_spike"] = _flag(core["volume_z_24"] > VOLUME_SPIKE_Z, core["volume_z_24"])
    return out


def _flag(condition: np.ndarray, defined_by: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(defined_by), condition.astype(float), np.nan)
