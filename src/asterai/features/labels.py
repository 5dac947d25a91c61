"""Labels: triple-barrier outcome and forward return (they look ahead by design, and
are the only columns that do; their names start with ``label_``).

A signal at bar ``t``'s close is filled at bar ``t+1``'s open (DESIGN.md rule 3). From
that entry, the take-profit barrier sits ``tp_atr`` ATRs above and the stop-loss
``sl_atr`` ATRs below (ATR known at ``t``); bars ``t+1 .. t+horizon`` are scanned for
the first touch of either by their high or low. When one bar touches both, the stop
is assumed (the worse outcome). No touch by the vertical barrier: label 0.

Rows whose horizon reaches past the data, or whose next ``horizon`` bars are not
consecutive (a gap), are left unlabelled (NaN), never filled.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def triple_barrier_nb(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    atr: np.ndarray,
    times: np.ndarray,
    step: int,
    horizon: int,
    tp_atr: float,
    sl_atr: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Label (+1 take profit, -1 stop, 0 vertical; NaN unlabelled) and bars to the outcome."""
    n = len(open_)
    label = np.full(n, np.nan)
    bars = np.full(n, np.nan)
    for t in range(n - horizon):
        if times[t + horizon] - times[t] != horizon * step:
            continue
        a = atr[t]
        if not np.isfinite(a) or a <= 0.0:
            continue
        entry = open_[t + 1]
        upper = entry + tp_atr * a
        lower = entry - sl_atr * a
        outcome = 0.0
        took = horizon
        for k in range(t + 1, t + horizon + 1):
            hit_low = low[k] <= lower
            hit_high = high[k] >= upper
            if hit_low:
                outcome = -1.0
                took = k - t
                break
            if hit_high:
                outcome = 1.0
                took = k - t
                break
        label[t] = outcome
        bars[t] = took
    return label, bars


def forward_return(
    open_: np.ndarray, close: np.ndarray, times: np.ndarray, step: int, horizon: int
) -> np.ndarray:
    """log(close[t + horizon] / open[t + 1]): from the fill of a signal at ``t``'s close.

    NaN where the next ``horizon`` bars are not consecutive or reach past the data.
    """
    out = np.full(len(close), np.nan)
    if len(close) > horizon:
        ok = (times[horizon:] - times[:-horizon]) == horizon * step
        entry = open_[1 : len(close) - horizon + 1]
        out[:-horizon] = np.where(ok, np.log(close[horizon:] / entry), np.nan)
    return out
