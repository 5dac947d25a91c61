"""Market regime per timestamp, causal.

trending: at least half of the assets with a defined ADX(14) have ADX > 25.
high volatility: the market's 24-bar realised volatility (of the equal-weighted mean
return) is above its own median over the last 720 bars (30 days of 1h; at least 168
bars of history needed, NaN before).
regime code: 2 x trending + high_vol (0 ranging/calm, 1 ranging/volatile,
2 trending/calm, 3 trending/volatile).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from asterai.features.confluence import share_of

ADX_TREND = 25.0
VOL_MEDIAN_WINDOW = 720
VOL_MEDIAN_MIN = 168


def trending(adx: np.ndarray) -> np.ndarray:
    """Per row of ``adx`` (time x assets): 1 when at least half the assets with a
    defined ADX have ADX > 25, NaN when too few have one."""
    trend_flags = np.where(np.isfinite(adx), (adx > ADX_TREND).astype(float), np.nan)
    share = share_of(trend_flags)
    return np.where(np.isfinite(share), (share >= 0.5).astype(float), np.nan)


def high_volatility(market_rv: np.ndarray) -> np.ndarray:
    """Per bar: 1 when ``market_rv`` is above its median over the last 720 bars."""
    median = (
        pd.Series(market_rv)
        .rolling(VOL_MEDIAN_WINDOW, min_periods=VOL_MEDIAN_MIN)
        .median()
        .to_numpy()
    )
    return np.where(
        np.isfinite(market_rv) & np.isfinite(median), (market_rv > median).astype(float), np.nan
    )


def regime(adx: np.ndarray, market_rv: np.ndarray) -> dict[str, np.ndarray]:
    trend, high_vol = trending(adx), high_volatility(market_rv)
    return {"regime_trending": trend, "regime_high_vol": high_vol, "regime": 2 * trend + high_vol}
