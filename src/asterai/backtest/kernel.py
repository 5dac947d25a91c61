"""The simulation kernel: one pass over the bars of every symbol, a portfolio at a time.

Pure numpy arrays in and out, ``@njit`` (vectorbt's ``portfolio/nb.py`` habit); the
frame-facing wrapper is ``engine.py``. Arrays are ``(T, N)``: T bars on one time grid,
N symbols; NaN marks a bar a symbol does not have. Where stops and targets sit and when
a bar reaches them is ``asterai.barriers``, the labels' own definition.

One engine: every rule below lives in ``step_nb``, one bar of every symbol applied to
an account (``State``) carried in place. ``simulate_nb`` is the backtest's loop over it;
paper trading calls the same function once per closed bar, so the two cannot disagree
on a fill, a fee or a stop (``tests/test_backtest_kernel.py`` drives it bar by bar from
Python, the account rebuilt half-way, and gets the backtest to the bit).

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
   position whose opposite side signals exits at the next open. While a live risk
   control pauses entries (``State.account``: paper trading's daily loss limit sets an
   equity floor, crossed at a close), new signals are rejected; exits still happen. The
   kill switch (``kill_nb``, between two bars) exits everything at the next open and
   cancels the entries decided for it. An order meets no trade
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
    EXIT_KILL,
    EXIT_LIQUIDATION,
    EXIT_SIGNAL,
    EXIT_STOP,
    EXIT_TARGET,
    EXIT_TIME,
    REJECT_KILLED,
    REJECT_LEVERAGE,
    REJECT_LOT_STEP,
    REJECT_MARKET_CLOSED,
    REJECT_MAX_POSITIONS,
    REJECT_MIN_NOTIONAL,
    REJECT_NO_EDGE,
    REJECT_NO_NEXT_BAR,
    REJECT_PAUSED,
    REJECT_STOPPED,
)
from asterai.barriers import market_fill, place, stop_touched, target_filled, time_up
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
    allow_short: bool = True  # strategy.sides (asterai.entry.entry_side)
    fixed_quantity: float = 0.0  # > 0: every order this size (for cross-checks), not risk-sized
    kelly_fraction: float = 0.0  # > 0: risk this share of the Kelly bet, capped by ``risk``
    # liquidation when the worst-case equity falls to this share of the open notional
    # (0: only when it reaches zero); its fill pays this fee rate on top of the taker fee
    maintenance_margin: float = 0.0
    liquidation_fee: float = 0.0
    allow_long: bool = True


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


#: the account's slots (``State.account``)
ACCOUNT_SLOTS = 6


class State(NamedTuple):
    """The account between two bars: what ``step_nb`` reads and changes in place (per
    symbol unless said). The backtest carries one through its loop; paper trading keeps
    one across the live bars (``new_state``)."""

    side: np.ndarray  # +1 long, -1 short, 0 flat
    qty: np.ndarray
    entry_px: np.ndarray
    stop: np.ndarray
    target: np.ndarray
    entry_t: np.ndarray  # int64
    signal_t: np.ndarray  # int64
    fees: np.ndarray
    paid: np.ndarray  # funding paid
    pend_side: np.ndarray  # entries decided at the last close
    pend_qty: np.ndarray
    pend_atr: np.ndarray
    pend_prob: np.ndarray
    pend_order: np.ndarray  # int64 strength rank, -1: no entry pending
    pend_exit: np.ndarray  # bool
    pend_exit_reason: np.ndarray  # int64
    last_close: np.ndarray
    wanted: np.ndarray  # scratch of the signal pass
    strength: np.ndarray  # scratch of the signal pass
    no_order: np.ndarray  # int64 zeros: the order when nothing is ranked
    # float64 [cash, peak, stopped (0/1), entries pending, entries paused (0/1), the
    # equity below which entries pause (0: none)]: the last two are live risk controls
    # (paper trading's daily loss limit sets the floor each day; the backtest leaves both 0)
    account: np.ndarray
    counts: np.ndarray  # int64 [trades recorded, rejections recorded]


@njit(cache=True)
def new_state(n: int, capital: float) -> State:
    """A flat account of ``capital`` over ``n`` symbols."""
    account = np.zeros(ACCOUNT_SLOTS)
    account[0] = capital
    account[1] = capital
    return State(
        np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n),
        np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n), np.zeros(n),
        np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.full(n, -1, np.int64),
        np.zeros(n, np.bool_), np.zeros(n, np.int64), np.full(n, np.nan), np.zeros(n),
        np.full(n, -1.0), np.zeros(n, np.int64), account, np.zeros(2, np.int64),
    )  # fmt: skip


@njit(cache=True)
def _exit(s: State, trades: np.ndarray, j, t, px, fee_rate, reason) -> None:
    """Close position ``j`` at ``px``: book the PnL and the fee, record the trade."""
    fee = s.qty[j] * px * fee_rate
    gross = s.side[j] * s.qty[j] * (px - s.entry_px[j])
    s.fees[j] += fee
    r = trades[s.counts[0]]
    r[0], r[1], r[2], r[3], r[4] = j, s.side[j], s.signal_t[j], s.entry_t[j], t
    r[5], r[6], r[7], r[8], r[9] = s.entry_px[j], px, s.qty[j], s.fees[j], s.paid[j]
    r[10], r[11], r[12], r[13] = gross - s.fees[j] - s.paid[j], reason, s.stop[j], s.target[j]
    s.side[j] = 0.0
    s.account[0] = s.account[0] + gross - fee  # (cash + gross) - fee, as it always was
    s.counts[0] += 1


@njit(cache=True)
def _reject(s: State, rejects: np.ndarray, t, j, side, reason, probability) -> None:
    rj = rejects[s.counts[1]]
    rj[0], rj[1], rj[2], rj[3], rj[4] = t, j, side, reason, probability
    s.counts[1] += 1


# inlined into ``simulate_nb``'s loop (no call, no reference counting of the account's
# arrays per bar); called from Python it compiles on its own as any other function
@njit(cache=True, inline="always")
def step_nb(
    t: int,
    last: bool,
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
    ends: np.ndarray,
    tick: np.ndarray,
    step: np.ndarray,
    min_notional: np.ndarray,
    p: Params,
    s: State,
    trades: np.ndarray,
    rejects: np.ndarray,
    curve: np.ndarray,
) -> None:
    """One bar ``t`` of every symbol (the module's rules 1 to 6, in order): the bar's
    arrays are (N,), ``ends`` marks the symbols whose data ends at this bar (before the
    last), ``last`` the last bar (no new signals). ``s`` changes in place; the bar's
    trades and rejections are appended to ``trades`` / ``rejects`` (rows from
    ``s.counts``), its equity, cash, open positions and notional written to ``curve``
    (4,). The backtest (``simulate_nb``) and paper trading call this one function."""
    N = len(open_)
    side, qty, entry_px, stop, target = s.side, s.qty, s.entry_px, s.stop, s.target
    entry_t, last_close = s.entry_t, s.last_close
    pend_exit, pend_exit_reason, pend_order = s.pend_exit, s.pend_exit_reason, s.pend_order
    stopped = s.account[2] != 0.0
    rank = int(s.account[3])

    # -- 1. fills at the open: exits on an opposite signal, then entries -----------
    for j in range(N):
        if not pend_exit[j]:
            continue
        if side[j] == 0.0:
            pend_exit[j] = False
        elif not np.isnan(open_[j]) and volume[j] > 0.0:  # else: its next bar
            px = market_fill(open_[j], side[j] < 0, p.slippage, tick[j])
            _exit(s, trades, j, t, px, p.taker_fee, pend_exit_reason[j])
            pend_exit[j] = False
    # (the sorts only on bars that need them: most bars have no order and no signal)
    if rank > 0:
        ranked = np.argsort(np.where(pend_order >= 0, pend_order, 1 << 30))
    else:
        ranked = s.no_order
    for k in range(N if rank > 0 else 0):
        j = ranked[k]
        if pend_order[j] < 0:
            break
        w = s.pend_side[j]
        reason = -1
        px = 0.0
        if np.isnan(open_[j]):
            reason = REJECT_NO_NEXT_BAR
        elif not volume[j] > 0.0:
            reason = REJECT_MARKET_CLOSED
        else:
            px = market_fill(open_[j], w > 0, p.slippage, tick[j])
            notional = s.pend_qty[j] * px
            if notional < min_notional[j]:
                reason = REJECT_MIN_NOTIONAL
            else:
                equity = s.account[0]
                open_notional = 0.0
                for i in range(N):
                    if side[i] != 0.0:
                        mark = open_[i] if not np.isnan(open_[i]) else last_close[i]
                        equity += side[i] * qty[i] * (mark - entry_px[i])
                        open_notional += qty[i] * mark
                if open_notional + notional > p.max_leverage * equity:
                    reason = REJECT_LEVERAGE
        if reason >= 0:
            _reject(s, rejects, t, j, w, reason, s.pend_prob[j])
        else:
            side[j] = w
            qty[j] = s.pend_qty[j]
            entry_px[j] = px
            # on the tick, each rounded away from the entry (the labels' placement)
            stop[j], target[j] = place(px, w, s.pend_atr[j], p.tp_atr, p.sl_atr, tick[j])
            entry_t[j] = t
            s.signal_t[j] = t - 1
            s.fees[j] = qty[j] * px * p.taker_fee
            s.paid[j] = 0.0
            s.account[0] -= s.fees[j]
        pend_order[j] = -1
    rank = 0

    # -- 2. liquidation at the maintenance margin, at the bar's worst prices ---------
    worst = s.account[0]
    worst_notional = 0.0
    any_open = False
    for j in range(N):
        if side[j] != 0.0:
            any_open = True
            px = _worst(side[j], low[j], high[j], last_close[j])
            worst += side[j] * qty[j] * (px - entry_px[j])
            worst_notional += qty[j] * px
    if any_open and worst <= p.maintenance_margin * worst_notional:
        for j in range(N):
            if side[j] != 0.0:
                px = _worst(side[j], low[j], high[j], last_close[j])
                px = market_fill(px, side[j] < 0, p.slippage, tick[j])
                _exit(s, trades, j, t, px, p.taker_fee + p.liquidation_fee, EXIT_LIQUIDATION)
        stopped = True

    # -- 3. exits against the bar's range ------------------------------------------
    for j in range(N):
        if side[j] == 0.0 or np.isnan(open_[j]) or not volume[j] > 0.0:
            continue  # no trade in the bar: no order can fill in it
        w = side[j]
        reason = -1
        px = 0.0
        fee_rate = p.taker_fee
        gapped = (w > 0 and open_[j] <= stop[j]) or (w < 0 and open_[j] >= stop[j])
        if entry_t[j] < t and gapped:
            reason = EXIT_GAP
            px = market_fill(open_[j], w < 0, p.slippage, tick[j])
        elif stop_touched(w, low[j], high[j], stop[j]):
            reason = EXIT_STOP  # also when the target is reached too: the worse one
            px = market_fill(stop[j], w < 0, p.slippage, tick[j])
        elif target_filled(w, low[j], high[j], target[j], tick[j]):
            reason = EXIT_TARGET
            # a resting limit order the bar traded through: the maker, filled at its
            # own price (never better, even when the bar opens beyond it), no
            # slippage, the maker fee
            px = target[j]
            fee_rate = p.maker_fee
        elif time_up(t, entry_t[j], p.horizon):
            reason = EXIT_TIME
            px = market_fill(close[j], w < 0, p.slippage, tick[j])
        if reason >= 0:
            _exit(s, trades, j, t, px, fee_rate, reason)

    # a symbol whose data ends here (delisted, or the end of its history) is closed at
    # its last close: a position cannot outlive its market
    for j in range(N):
        if side[j] != 0.0 and ends[j]:
            px = market_fill(close[j], side[j] < 0, p.slippage, tick[j])
            # (an exit already decided keeps its reason: the market ends under it)
            why = pend_exit_reason[j] if pend_exit[j] else EXIT_END
            pend_exit[j] = False
            _exit(s, trades, j, t, px, p.taker_fee, why)

    # -- 4. funding -------------------------------------------------------------------
    for j in range(N):
        if side[j] != 0.0 and funding[j] != 0.0:
            mark = close[j] if not np.isnan(close[j]) else last_close[j]
            amount = side[j] * qty[j] * mark * funding[j]
            s.account[0] -= amount
            s.paid[j] += amount

    if stopped:
        s.account[2] = 1.0
    decide_nb(t, last, close, tradeable, p_long, p_short, atr, tick, step, p, s, rejects, curve)


@njit(cache=True, inline="always")
def decide_nb(
    t: int,
    last: bool,
    close: np.ndarray,
    tradeable: np.ndarray,
    p_long: np.ndarray,
    p_short: np.ndarray,
    atr: np.ndarray,
    tick: np.ndarray,
    step: np.ndarray,
    p: Params,
    s: State,
    rejects: np.ndarray,
    curve: np.ndarray,
) -> None:
    """The close of bar ``t`` (the module's rules 5 and 6) on the account as it stands
    after the bar's fills: the equity and the circuit breaker, then the signals and the
    orders for the next open. ``step_nb`` runs it after the fills it simulates; live
    trading runs it alone, on the account the exchange reports (its fills are the
    exchange's), so that the decisions are this one function's either way."""
    N = len(close)
    side, qty, entry_px = s.side, s.qty, s.entry_px
    last_close = s.last_close
    pend_exit, pend_exit_reason, pend_order = s.pend_exit, s.pend_exit_reason, s.pend_order
    stopped = s.account[2] != 0.0
    rank = 0

    # -- 5. equity at the close; the circuit breaker --------------------------------
    for j in range(N):
        if not np.isnan(close[j]):
            last_close[j] = close[j]
    equity = s.account[0]
    notional = 0.0
    n_open = 0
    for j in range(N):
        if side[j] != 0.0:
            equity += side[j] * qty[j] * (last_close[j] - entry_px[j])
            notional += qty[j] * last_close[j]
            n_open += 1
    s.account[1] = max(s.account[1], equity)
    if not stopped and equity < s.account[1] * (1.0 - p.max_drawdown):
        # decided at this close, so filled at the next open (rule 3), like any signal
        for j in range(N):
            if side[j] != 0.0:
                pend_exit[j] = True
                pend_exit_reason[j] = EXIT_BREAKER
        stopped = True
    if s.account[5] > 0.0 and equity < s.account[5]:
        s.account[4] = 1.0  # a live control's floor: no new entry until it is lifted
    paused = s.account[4] != 0.0
    curve[0], curve[1], curve[2], curve[3] = equity, s.account[0], n_open, notional
    s.account[2] = 1.0 if stopped else 0.0

    # -- 6. signals at the close, for the next open -------------------------------------
    if last:
        s.account[3] = 0.0
        return
    wanted, strength = s.wanted, s.strength
    n_busy = n_open
    wanted[:] = 0.0
    strength[:] = -1.0
    n_candidates = 0
    for j in range(N):
        if not tradeable[j] or np.isnan(close[j]):
            continue
        pl, ps = p_long[j], p_short[j]
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
        w = entry_side(pl, ps, p.threshold, p.allow_long, p.allow_short)
        if w == 0 or np.isnan(atr[j]) or atr[j] <= 0.0:
            continue
        wanted[j] = float(w)
        strength[j] = max(pl, ps)
        n_candidates += 1
    order = np.argsort(-strength) if n_candidates > 0 else s.no_order
    for k in range(N if n_candidates > 0 else 0):
        j = order[k]
        if strength[j] < 0.0:
            break
        reason = -1
        q = 0.0
        if stopped:
            reason = REJECT_STOPPED
        elif paused:
            reason = REJECT_PAUSED
        elif n_busy >= p.max_positions:
            reason = REJECT_MAX_POSITIONS
        else:
            # what a stop costs per unit: the distance, the slippage on both fills,
            # both taker fees and a tick of rounding, so the loss at the stop stays
            # within the risk budget
            per_unit = (
                p.sl_atr * atr[j] + close[j] * (2.0 * p.taker_fee + 2.0 * p.slippage) + tick[j]
            )
            risk = p.risk
            if p.kelly_fraction > 0.0:
                # Kelly for a bet that wins at the target or loses at the stop with
                # the model's calibrated probability, f = p - (1 - p) / b, the odds b
                # after costs: the win pays a taker entry, a maker exit and slippage,
                # the loss is ``per_unit`` (costs included); no win after costs, no bet
                win = (
                    p.tp_atr * atr[j]
                    - close[j] * (p.taker_fee + p.maker_fee + p.slippage)
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
            _reject(s, rejects, t + 1, j, wanted[j], reason, strength[j])
            continue
        s.pend_side[j] = wanted[j]
        s.pend_qty[j] = q
        s.pend_atr[j] = atr[j]
        s.pend_prob[j] = strength[j]
        pend_order[j] = rank
        rank += 1
        n_busy += 1
    s.account[3] = float(rank)



@njit(cache=True)
def kill_nb(t: int, s: State, rejects: np.ndarray) -> int:
    """The kill switch, between two bars: every open position exits at bar ``t``'s open
    (``EXIT_KILL``, filled by ``step_nb`` as any decided exit), the entries decided for
    that open are cancelled (rejected, ``REJECT_KILLED``) and trading stops. Returns the
    number of positions to close."""
    n = 0
    for j in range(len(s.side)):
        if s.side[j] != 0.0:
            s.pend_exit[j] = True
            s.pend_exit_reason[j] = EXIT_KILL
            n += 1
        if s.pend_order[j] >= 0:
            _reject(s, rejects, t, j, s.pend_side[j], REJECT_KILLED, s.pend_prob[j])
            s.pend_order[j] = -1
    s.account[2] = 1.0
    s.account[3] = 0.0
    return n


@njit(cache=True)
def close_all_nb(
    t: int, p: Params, tick: np.ndarray, s: State, trades: np.ndarray, curve: np.ndarray
) -> bool:
    """The end of the data: what is still open closes at its last close (a pending exit
    keeps its reason: a breaker decided at the last close is still the breaker's), and
    the bar's equity (``curve``, (4,)) is what is left after those fills' costs, so the
    final equity is the capital plus the trades' PnL. True if anything was closed."""
    closed_any = False
    for j in range(len(s.side)):
        if s.side[j] != 0.0:
            px = market_fill(s.last_close[j], s.side[j] < 0, p.slippage, tick[j])
            why = s.pend_exit_reason[j] if s.pend_exit[j] else EXIT_END
            _exit(s, trades, j, t, px, p.taker_fee, why)
            closed_any = True
    if closed_any:
        cash = s.account[0]
        curve[0], curve[1], curve[2], curve[3] = cash, cash, 0, 0.0
    return closed_any


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
    """The whole history: ``step_nb`` at every bar from a flat account of
    ``p.capital``, then ``close_all_nb`` at the last. Returns the trades, the
    rejections, the per-bar curve (T x ``EQUITY_FIELDS``) and the final cash."""
    T, N = open_.shape
    cap = T * min(N, p.max_positions) + N + 1
    trades = np.full((cap, len(TRADE_FIELDS)), np.nan)
    rejects = np.full((T * N + 1, len(REJECT_FIELDS)), np.nan)
    curve = np.full((T, len(EQUITY_FIELDS)), np.nan)
    last_bar = np.full(N, -1, np.int64)  # each symbol's last bar: where its data ends
    for j in range(N):
        for t in range(T - 1, -1, -1):
            if not np.isnan(close[t, j]):
                last_bar[j] = t
                break
    s = new_state(N, p.capital)
    ends = np.zeros(N, np.bool_)
    for t in range(T):
        for j in range(N):
            ends[j] = t == last_bar[j] and t < T - 1
        step_nb(
            t, t == T - 1, open_[t], high[t], low[t], close[t], volume[t], tradeable[t],
            p_long[t], p_short[t], atr[t], funding[t], ends, tick, step, min_notional, p, s,
            trades, rejects, curve[t],
        )  # fmt: skip
    if T > 0:
        close_all_nb(T - 1, p, tick, s, trades, curve[T - 1])
    return trades[: s.counts[0]], rejects[: s.counts[1]], curve, s.account[0]


# the kernel compiles in ``barriers``' rules and ``enums``' codes: a change to either
# must reach the cached machine code too
for _kernel in (simulate_nb, step_nb, close_all_nb, kill_nb, new_state, _exit, _reject):
    invalidate_on_change(_kernel, _barriers, _enums, _entry)
