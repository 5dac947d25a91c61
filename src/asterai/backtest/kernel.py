"""The simulation kernel: one pass over the bars of every symbol, a portfolio at a time.

Pure numpy arrays in and out, ``@njit`` (vectorbt's ``portfolio/nb.py`` habit); the
frame-facing wrapper is ``engine.py``. Arrays are ``(T, N)``: T bars on one time grid,
N symbols; NaN marks a bar a symbol does not have. Where stops and targets sit and when
a bar reaches them is ``asterai.barriers``, the labels' own definition.

At each bar ``t``, in this order (DESIGN.md rules 3 and 4):

1. Orders decided at ``t-1``'s close fill at ``t``'s open: first exits on an opposite
   signal or the circuit breaker, then entries, strongest signal first. Every market
   fill pays the full slippage against the trader, then the tick against him, never
   clipped to the bar's range (our own order would have printed there). An entry the
   exchange would reject (notional below the minimum, over the leverage limit, no bar
   to fill at) is rejected and recorded.
2. Liquidation at the maintenance margin (one cross-margin account): when the equity
   marked at every open position's worst price of the bar (the low for a long, the
   high for a short) falls to ``maintenance_margin`` x the notional at those prices,
   everything is closed at those extremes less the slippage, paying the taker fee and
   the ``liquidation_fee``, and trading stops.
3. Exits of open positions against the bar's high and low: a position opened before
   ``t`` whose stop the open gapped through exits at the open; otherwise a stop touched
   exits at the stop (the worse outcome when the target is reached in the same bar, as
   the labels assume), else a target the bar traded at least a tick through exits at
   the target's own price (a resting limit: a maker fill, never better than its price
   even when the bar opens beyond it; a bare touch is not a fill), else a position held
   ``horizon`` bars exits at the close (the labels' time limit). Stops, gaps and time
   limits are market fills.
4. Funding at the bar's funding time, for positions still open: a long pays
   ``qty x close x rate``, a short receives it.
5. Equity marked at the close (on the last bar: after the end-of-data closes, their
   costs included); when it falls ``max_drawdown`` below its peak the
   drawdown circuit breaker stops trading and closes everything at the next open
   (decided at the close, filled after it, like every other order). A
   symbol whose data ends (delisted) has its position closed at its last close.
6. New signals at the close: ``p_long`` or ``p_short`` at least ``threshold`` on a
   tradeable bar with a known ATR, one position per symbol, the strongest first into the
   free slots (``max_positions``). Size: ``risk x equity`` divided by what a stop costs
   per unit (``sl_atr`` ATRs, slippage and taker fees on both fills, a tick), rounded
   down to the lot step. With ``kelly_fraction`` > 0 the risk is that share of the
   Kelly bet at the labels' odds (capped by ``risk``); no edge, no order. An open
   position whose opposite side signals exits at the next open. An order meets no trade
   in a bar without volume (a closed market): entries are rejected, exits wait. Two
   closes do not wait for a trade: a liquidation (the exchange's engine takes the
   position at the bar's extreme) and a market whose data ends (closed at its last close,
   with the slippage, whether that bar traded or not).

Fees: taker on market fills (entries, stops, time limits, signals), maker on targets,
taker plus the liquidation fee on a liquidation.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from asterai import barriers as _barriers
from asterai import entry as _entry
from asterai.backtest import enums as _enums
from asterai.backtest.enums import (
    EXIT_BREAKER,
    EXIT_END,
    EXIT_GAP,
    EXIT_LIQUIDATION,
    EXIT_SIGNAL,
    EXIT_STOP,
    EXIT_TARGET,
    EXIT_TIME,
    REJECT_LEVERAGE,
    REJECT_LOT_STEP,
    REJECT_MARKET_CLOSED,
    REJECT_MAX_POSITIONS,
    REJECT_MIN_NOTIONAL,
    REJECT_NO_EDGE,
    REJECT_NO_NEXT_BAR,
    REJECT_STOPPED,
)
from asterai.barriers import market_fill, place, stop_touched, target_filled
from asterai.jitcache import invalidate_on_change


class Params(NamedTuple):
    capital: float
    risk: float
    max_positions: int
    taker_fee: float
    maker_fee: float
    slippage: float
    threshold: float
    tp_atr: float
    sl_atr: float
    horizon: int
    max_leverage: float
    max_drawdown: float
    allow_short: bool = True
    fixed_quantity: float = 0.0  # > 0: every order this size (for cross-checks), not risk-sized
    kelly_fraction: float = 0.0  # > 0: risk this share of the Kelly bet, capped by ``risk``
    # liquidation when the worst-case equity falls to this share of the open notional
    # (0: only when it reaches zero); its fill pays this fee rate on top of the taker fee
    maintenance_margin: float = 0.0
    liquidation_fee: float = 0.0


#: Trade record columns (float64), in order.
TRADE_FIELDS = (
    "symbol", "side", "signal_t", "entry_t", "exit_t", "entry_price", "exit_price",
    "quantity", "fees", "funding", "pnl", "exit_reason", "stop", "target",
)  # fmt: skip
#: Rejection record columns.
REJECT_FIELDS = ("t", "symbol", "side", "reason", "probability")
#: Per-bar columns.
EQUITY_FIELDS = ("equity", "cash", "open_positions", "notional")


#: the entry rule (``asterai.entry``), compiled: the signal service runs the same function
entry_side = njit(cache=True)(_entry.entry_side)


@njit(cache=True)
def _worst(side: float, low: float, high: float, last_close: float) -> float:
    """A position's worst price of the bar (its last close when the bar is missing)."""
    if np.isnan(low):
        return last_close
    return low if side > 0 else high


@njit(cache=True)
def _exit(
    j, t, px, fee_rate, reason, cash, n_trades, trades, side, qty, entry_px, stop, target,
    entry_t, signal_t, fees, paid,
):  # fmt: skip
    """Close position ``j`` at ``px``: book the PnL and the fee, record the trade."""
    fee = qty[j] * px * fee_rate
    gross = side[j] * qty[j] * (px - entry_px[j])
    fees[j] += fee
    r = trades[n_trades]
    r[0], r[1], r[2], r[3], r[4] = j, side[j], signal_t[j], entry_t[j], t
    r[5], r[6], r[7], r[8], r[9] = entry_px[j], px, qty[j], fees[j], paid[j]
    r[10], r[11], r[12], r[13] = gross - fees[j] - paid[j], reason, stop[j], target[j]
    side[j] = 0.0
    return cash + gross - fee, n_trades + 1


@njit(cache=True)
def simulate_nb(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    tradeable: np.ndarray,
    p_long: np.ndarray,
    p_short: np.ndarray,
    atr: np.ndarray,
    funding: np.ndarray,
    tick: np.ndarray,
    step: np.ndarray,
    min_notional: np.ndarray,
    p: Params,
):
    T, N = open_.shape
    cap = T * min(N, p.max_positions) + N + 1
    trades = np.full((cap, len(TRADE_FIELDS)), np.nan)
    n_trades = 0
    rejects = np.full((T * N + 1, len(REJECT_FIELDS)), np.nan)
    n_rejects = 0
    curve = np.full((T, len(EQUITY_FIELDS)), np.nan)

    side = np.zeros(N)  # +1 long, -1 short, 0 flat
    qty = np.zeros(N)
    entry_px = np.zeros(N)
    stop = np.zeros(N)
    target = np.zeros(N)
    entry_t = np.zeros(N, np.int64)
    signal_t = np.zeros(N, np.int64)
    fees = np.zeros(N)
    paid = np.zeros(N)  # funding paid
    pend_side = np.zeros(N)  # entries decided at the last close
    pend_qty = np.zeros(N)
    pend_atr = np.zeros(N)
    pend_prob = np.zeros(N)
    pend_order = np.full(N, -1, np.int64)  # strength rank
    pend_exit = np.zeros(N, np.bool_)
    pend_exit_reason = np.zeros(N, np.int64)
    last_bar = np.full(N, -1, np.int64)  # each symbol's last bar: where its data ends
    for j in range(N):
        for t in range(T - 1, -1, -1):
            if not np.isnan(close[t, j]):
                last_bar[j] = t
                break
    last_close = np.full(N, np.nan)

    cash = p.capital
    peak = p.capital
    stopped = False
    rank = 0  # orders pending for the next open
    no_order = np.zeros(N, np.int64)
    wanted = np.zeros(N)
    strength = np.full(N, -1.0)

    for t in range(T):
        # -- 1. fills at the open: exits on an opposite signal, then entries -----------
        for j in range(N):
            if not pend_exit[j]:
                continue
            if side[j] == 0.0:
                pend_exit[j] = False
            elif not np.isnan(open_[t, j]) and volume[t, j] > 0.0:  # else: its next bar
                px = market_fill(open_[t, j], side[j] < 0, p.slippage, tick[j])
                cash, n_trades = _exit(
                    j, t, px, p.taker_fee, pend_exit_reason[j], cash, n_trades, trades, side,
                    qty, entry_px, stop, target, entry_t, signal_t, fees, paid,
                )  # fmt: skip
                pend_exit[j] = False
        # (the sorts only on bars that need them: most bars have no order and no signal)
        if rank > 0:
            ranked = np.argsort(np.where(pend_order >= 0, pend_order, 1 << 30))
        else:
            ranked = no_order
        for k in range(N if rank > 0 else 0):
            j = ranked[k]
            if pend_order[j] < 0:
                break
            s = pend_side[j]
            reason = -1
            if np.isnan(open_[t, j]):
                reason = REJECT_NO_NEXT_BAR
            elif not volume[t, j] > 0.0:
                reason = REJECT_MARKET_CLOSED
            else:
                px = market_fill(open_[t, j], s > 0, p.slippage, tick[j])
                notional = pend_qty[j] * px
                if notional < min_notional[j]:
                    reason = REJECT_MIN_NOTIONAL
                else:
                    equity = cash
                    open_notional = 0.0
                    for i in range(N):
                        if side[i] != 0.0:
                            mark = open_[t, i] if not np.isnan(open_[t, i]) else last_close[i]
                            equity += side[i] * qty[i] * (mark - entry_px[i])
                            open_notional += qty[i] * mark
                    if open_notional + notional > p.max_leverage * equity:
                        reason = REJECT_LEVERAGE
            if reason >= 0:
                rj = rejects[n_rejects]
                rj[0], rj[1], rj[2], rj[3], rj[4] = t, j, s, reason, pend_prob[j]
                n_rejects += 1
            else:
                side[j] = s
                qty[j] = pend_qty[j]
                entry_px[j] = px
                # on the tick, each rounded away from the entry (the labels' placement)
                stop[j], target[j] = place(px, s, pend_atr[j], p.tp_atr, p.sl_atr, tick[j])
                entry_t[j] = t
                signal_t[j] = t - 1
                fees[j] = qty[j] * px * p.taker_fee
                paid[j] = 0.0
                cash -= fees[j]
            pend_order[j] = -1

        # -- 2. liquidation at the maintenance margin, at the bar's worst prices ---------
        worst = cash
        worst_notional = 0.0
        any_open = False
        for j in range(N):
            if side[j] != 0.0:
                any_open = True
                px = _worst(side[j], low[t, j], high[t, j], last_close[j])
                worst += side[j] * qty[j] * (px - entry_px[j])
                worst_notional += qty[j] * px
        if any_open and worst <= p.maintenance_margin * worst_notional:
            for j in range(N):
                if side[j] != 0.0:
                    px = _worst(side[j], low[t, j], high[t, j], last_close[j])
                    px = market_fill(px, side[j] < 0, p.slippage, tick[j])
                    cash, n_trades = _exit(
                        j, t, px, p.taker_fee + p.liquidation_fee, EXIT_LIQUIDATION, cash,
                        n_trades, trades, side, qty, entry_px, stop, target, entry_t,
                        signal_t, fees, paid,
                    )  # fmt: skip
            stopped = True

        # -- 3. exits against the bar's range ------------------------------------------
        for j in range(N):
            if side[j] == 0.0 or np.isnan(open_[t, j]) or not volume[t, j] > 0.0:
                continue  # no trade in the bar: no order can fill in it
            s = side[j]
            reason = -1
            px = 0.0
            fee_rate = p.taker_fee
            gapped = (s > 0 and open_[t, j] <= stop[j]) or (s < 0 and open_[t, j] >= stop[j])
            if entry_t[j] < t and gapped:
                reason = EXIT_GAP
                px = market_fill(open_[t, j], s < 0, p.slippage, tick[j])
            elif stop_touched(s, low[t, j], high[t, j], stop[j]):
                reason = EXIT_STOP  # also when the target is reached too: the worse one
                px = market_fill(stop[j], s < 0, p.slippage, tick[j])
            elif target_filled(s, low[t, j], high[t, j], target[j], tick[j]):
                reason = EXIT_TARGET
                # a resting limit order the bar traded through: the maker, filled at its
                # own price (never better, even when the bar opens beyond it), no
                # slippage, the maker fee
                px = target[j]
                fee_rate = p.maker_fee
            elif t - entry_t[j] + 1 >= p.horizon:
                reason = EXIT_TIME
                px = market_fill(close[t, j], s < 0, p.slippage, tick[j])
            if reason >= 0:
                cash, n_trades = _exit(
                    j, t, px, fee_rate, reason, cash, n_trades, trades, side, qty, entry_px,
                    stop, target, entry_t, signal_t, fees, paid,
                )  # fmt: skip

        # a symbol whose data ends here (delisted, or the end of its history) is closed at
        # its last close: a position cannot outlive its market
        for j in range(N):
            if side[j] != 0.0 and t == last_bar[j] and t < T - 1:
                px = market_fill(close[t, j], side[j] < 0, p.slippage, tick[j])
                # (an exit already decided keeps its reason: the market ends under it)
                why = pend_exit_reason[j] if pend_exit[j] else EXIT_END
                pend_exit[j] = False
                cash, n_trades = _exit(
                    j, t, px, p.taker_fee, why, cash, n_trades, trades, side, qty,
                    entry_px, stop, target, entry_t, signal_t, fees, paid,
                )  # fmt: skip

        # -- 4. funding -------------------------------------------------------------------
        for j in range(N):
            if side[j] != 0.0 and funding[t, j] != 0.0:
                mark = close[t, j] if not np.isnan(close[t, j]) else last_close[j]
                amount = side[j] * qty[j] * mark * funding[t, j]
                cash -= amount
                paid[j] += amount

        # -- 5. equity at the close; the circuit breaker --------------------------------
        for j in range(N):
            if not np.isnan(close[t, j]):
                last_close[j] = close[t, j]
        equity = cash
        notional = 0.0
        n_open = 0
        for j in range(N):
            if side[j] != 0.0:
                equity += side[j] * qty[j] * (last_close[j] - entry_px[j])
                notional += qty[j] * last_close[j]
                n_open += 1
        peak = max(peak, equity)
        if not stopped and equity < peak * (1.0 - p.max_drawdown):
            # decided at this close, so filled at the next open (rule 3), like any signal
            for j in range(N):
                if side[j] != 0.0:
                    pend_exit[j] = True
                    pend_exit_reason[j] = EXIT_BREAKER
            stopped = True
        curve[t, 0], curve[t, 1], curve[t, 2], curve[t, 3] = equity, cash, n_open, notional

        # -- 6. signals at the close, for the next open -------------------------------------
        if t == T - 1:
            break
        n_busy = n_open
        wanted[:] = 0.0
        strength[:] = -1.0
        n_candidates = 0
        for j in range(N):
            if not tradeable[t, j] or np.isnan(close[t, j]):
                continue
            pl, ps = p_long[t, j], p_short[t, j]
            if np.isnan(pl) or np.isnan(ps):
                continue
            if side[j] != 0.0:
                if (side[j] > 0 and ps >= p.threshold and ps > pl) or (
                    side[j] < 0 and pl >= p.threshold and pl > ps
                ):
                    if not pend_exit[j]:
                        pend_exit[j] = True
                        pend_exit_reason[j] = EXIT_SIGNAL
                continue
            w = entry_side(pl, ps, p.threshold)
            if w == 0 or np.isnan(atr[t, j]) or atr[t, j] <= 0.0:
                continue
            wanted[j] = float(w)
            if wanted[j] < 0 and not p.allow_short:
                continue
            strength[j] = max(pl, ps)
            n_candidates += 1
        order = np.argsort(-strength) if n_candidates > 0 else no_order
        rank = 0
        for k in range(N if n_candidates > 0 else 0):
            j = order[k]
            if strength[j] < 0.0:
                break
            reason = -1
            q = 0.0
            if stopped:
                reason = REJECT_STOPPED
            elif n_busy >= p.max_positions:
                reason = REJECT_MAX_POSITIONS
            else:
                # what a stop costs per unit: the distance, the slippage on both fills,
                # both taker fees and a tick of rounding, so the loss at the stop stays
                # within the risk budget
                per_unit = (
                    p.sl_atr * atr[t, j]
                    + close[t, j] * (2.0 * p.taker_fee + 2.0 * p.slippage)
                    + tick[j]
                )
                risk = p.risk
                if p.kelly_fraction > 0.0:
                    # Kelly for a bet that wins at the target or loses at the stop with
                    # the model's calibrated probability, f = p - (1 - p) / b, the odds b
                    # after costs: the win pays a taker entry, a maker exit and slippage,
                    # the loss is ``per_unit`` (costs included); no win after costs, no bet
                    win = (
                        p.tp_atr * atr[t, j]
                        - close[t, j] * (p.taker_fee + p.maker_fee + p.slippage)
                        - tick[j]
                    )
                    kelly = strength[j] - (1.0 - strength[j]) * per_unit / win if win > 0 else -1.0
                    risk = min(p.risk, p.kelly_fraction * kelly)
                q = risk * equity / per_unit if p.fixed_quantity <= 0.0 else p.fixed_quantity
                if risk <= 0.0:
                    reason = REJECT_NO_EDGE
                elif step[j] > 0.0:
                    q = math.floor(q / step[j] + 1e-9) * step[j]
                if reason < 0 and q <= 0.0:
                    reason = REJECT_LOT_STEP
            if reason >= 0:
                rj = rejects[n_rejects]
                rj[0], rj[1], rj[2], rj[3], rj[4] = t + 1, j, wanted[j], reason, strength[j]
                n_rejects += 1
                continue
            pend_side[j] = wanted[j]
            pend_qty[j] = q
            pend_atr[j] = atr[t, j]
            pend_prob[j] = strength[j]
            pend_order[j] = rank
            rank += 1
            n_busy += 1

    # -- the end of the data: what is still open closes at its last close --------------
    # (a pending exit keeps its reason: a breaker decided at the last close is still the
    # breaker's), and the last bar's equity is what is left after those fills' costs, so
    # the final equity is the capital plus the trades' PnL
    closed_any = False
    for j in range(N):
        if side[j] != 0.0:
            px = market_fill(last_close[j], side[j] < 0, p.slippage, tick[j])
            why = pend_exit_reason[j] if pend_exit[j] else EXIT_END
            cash, n_trades = _exit(
                j, T - 1, px, p.taker_fee, why, cash, n_trades, trades, side, qty,
                entry_px, stop, target, entry_t, signal_t, fees, paid,
            )  # fmt: skip
            closed_any = True
    if closed_any and T > 0:
        curve[T - 1, 0], curve[T - 1, 1], curve[T - 1, 2], curve[T - 1, 3] = cash, cash, 0, 0.0
    return trades[:n_trades], rejects[:n_rejects], curve, cash


# the kernel compiles in ``barriers``' rules and ``enums``' codes: a change to either
# must reach the cached machine code too
invalidate_on_change(simulate_nb, _barriers, _enums, _entry)
