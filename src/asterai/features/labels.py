"""Labels: triple-barrier outcome and forward return (they look ahead by design, and
are the only columns that do; their names start with ``label_``).

A signal at bar ``t``'s close is filled at bar ``t+1``'s open (DESIGN.md rule 3). From
that entry a long trade's take-profit barrier sits ``tp_atr`` ATRs above and its stop
``sl_atr`` ATRs below (ATR known at ``t``); a short trade's are mirrored (target below,
stop above). Bars ``t+1 .. t+horizon`` are scanned for the first touch of either by
their high or low. When one bar touches both, the stop is assumed (the worse outcome).
Label: +1 target first, -1 stop first, 0 neither by the vertical barrier.

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
    direction: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Label (+1 take profit, -1 stop, 0 vertical; NaN unlabelled) and bars to the outcome.

    ``direction`` +1 labels a long trade, -1 a short one.
    """
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
        if direction > 0:
            target = entry + tp_atr * a
            stop = entry - sl_atr * a
        else:
            target = entry - tp_atr * a
            stop = entry + sl_atr * a
        outcome = 0.0
        took = horizon
        for k in range(t + 1, t + horizon + 1):
            if direction > 0:
                stopped = low[k] <= stop
                reached = high[k] >= target
            else:
                stopped = high[k] >= stop
                reached = low[k] <= target
            if stopped:  # checked first: a bar touching both counts as the stop
                outcome = -1.0
                took = k - t
                break
            if reached:
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
