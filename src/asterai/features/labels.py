"""Labels: triple-barrier outcome and forward return (they look ahead by design, and
are the only columns that do; their names start with ``label_``).

A signal at bar ``t``'s close is filled at bar ``t+1``'s open (DESIGN.md rule 3). From
that entry a long trade's take-profit barrier sits ``tp_atr`` ATRs above and its stop
``sl_atr`` ATRs below (ATR known at ``t``); a short trade's are mirrored (target below,
stop above), both on the symbol's tick. Bars ``t+1 .. t+horizon`` are scanned for the
first bar that reaches either, by the rules the backtest fills by (``asterai.barriers``,
one definition for both): the stop when the low (high) touches it, the target only when
the bar trades at least a tick through it (the backtest places the same barriers from
its slipped fill instead of the open: a trade's sit slightly further against it). When
one bar reaches both, the stop is assumed (the worse outcome). Label: +1 target first, -1 stop first, 0 neither by the
vertical barrier.

The same scan gives the trade's **R-multiple** (``triple_barrier_r_nb``): its gross
outcome in units of its risk, the distance from the entry to the placed stop. Exit at
the stop: -1 R, or, when a bar after the entry bar opens through the stop (a gap), that
bar's open (worse than -1 R; the backtest's gap exit). Exit at the target: its distance
over the risk (about ``tp_atr / sl_atr``). Neither by the time limit: the close of bar
``t+horizon`` (the backtest's time exit). No costs: training subtracts the round-trip
cost in R (``models.target``), since fees are strategy settings, not feature settings.
The risk is also returned as a share of the entry price, for that conversion.

Rows whose horizon reaches past the data, or whose next ``horizon`` bars are not
consecutive (a gap), are left unlabelled (NaN), never filled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit

from asterai import barriers as _barriers
from asterai.barriers import place, stop_touched, target_filled
from asterai.jitcache import invalidate_on_change


@njit(cache=True)
def triple_barrier_r_nb(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    atr: np.ndarray,
    times: np.ndarray,
    step: int,
    horizon: int,
    tp_atr: float,
    sl_atr: float,
    direction: int = 1,
    tick: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Label (+1 take profit, -1 stop, 0 vertical; NaN unlabelled), bars to the
    outcome, the gross R-multiple and the risk as a share of the entry price.

    ``direction`` +1 labels a long trade, -1 a short one; ``tick`` is the symbol's price
    tick (0: unknown, the barriers are not rounded and a target needs a print beyond it).
    All four are NaN at the same rows. A row reads bars ``t+1 .. t+horizon`` only (and
    the ATR known at ``t``).
    """
    n = len(open_)
    label = np.full(n, np.nan)
    bars = np.full(n, np.nan)
    r_mult = np.full(n, np.nan)
    risk_share = np.full(n, np.nan)
    for t in range(n - horizon):
        if times[t + horizon] - times[t] != horizon * step:
            continue
        a = atr[t]
        if not np.isfinite(a) or a <= 0.0:
            continue
        entry = open_[t + 1]
        stop, target = place(entry, direction, a, tp_atr, sl_atr, tick)
        risk = direction * (entry - stop)  # > 0: placed at least sl_atr ATRs away
        outcome = 0.0
        took = horizon
        exit_px = close[t + horizon]  # the time limit, unless a barrier comes first
        for k in range(t + 1, t + horizon + 1):
            # the stop checked first: a bar reaching both counts as the stop
            if stop_touched(direction, low[k], high[k], stop):
                outcome = -1.0
                took = k - t
                gapped = direction * (open_[k] - stop) <= 0.0
                # the entry bar opens at the entry itself: only a later bar gaps
                exit_px = open_[k] if k > t + 1 and gapped else stop
                break
            if target_filled(direction, low[k], high[k], target, tick):
                outcome = 1.0
                took = k - t
                exit_px = target
                break
        label[t] = outcome
        bars[t] = took
        r_mult[t] = direction * (exit_px - entry) / risk
        risk_share[t] = risk / entry
    return label, bars, r_mult, risk_share


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
    tick: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Label (+1 take profit, -1 stop, 0 vertical; NaN unlabelled) and bars to the
    outcome: ``triple_barrier_r_nb``'s first two (the close is not needed for them)."""
    label, bars, _, _ = triple_barrier_r_nb(
        open_, high, low, open_, atr, times, step, horizon, tp_atr, sl_atr, direction, tick
    )
    return label, bars


# the labels compile in ``barriers``' rules: a change there must reach the cached code
invalidate_on_change(triple_barrier_r_nb, _barriers)
invalidate_on_change(triple_barrier_nb, _barriers)


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


#: A bar whose cross-section has fewer eligible symbols than this gets no
#: cross-sectional label (a median of two is no market).
MIN_CROSS_SECTION = 3


def cross_sectional_labels(
    fwd: np.ndarray, times: np.ndarray, eligible: np.ndarray, cost: float
) -> np.ndarray:
    """Did the symbol beat its bar's cross-section by the round-trip cost? (rows, 2).

    ``fwd``: each row's forward log return from the next bar's open over the label
    horizon (``forward_return``); ``times``: its bar; ``eligible``: the rows that form
    the cross-section (tradeable at that bar). At each bar with at least
    ``MIN_CROSS_SECTION`` eligible rows with a forward return, ``m`` is their median:
    the long label is 1 where ``fwd - m > cost`` (a long trade beat the market's middle
    after paying to get in and out), the short label 1 where ``m - fwd > cost``, else 0.
    NaN for rows outside the cross-section or at bars too thin for one. The label at a
    bar reads that bar's rows only: no row of another bar enters it.
    """
    fwd = np.asarray(fwd, dtype=float)
    ok = np.asarray(eligible, dtype=bool) & np.isfinite(fwd)
    out = np.full((len(fwd), 2), np.nan, dtype=np.float32)
    if not ok.any():
        return out
    idx = np.flatnonzero(ok)
    _, group, counts = np.unique(times[idx], return_inverse=True, return_counts=True)
    median = pd.Series(fwd[idx]).groupby(group).transform("median").to_numpy()
    enough = counts[group] >= MIN_CROSS_SECTION
    rows, excess = idx[enough], (fwd[idx] - median)[enough]
    out[rows, 0] = excess > cost
    out[rows, 1] = -excess > cost
    return out
