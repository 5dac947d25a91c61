"""The strategy's decisions at a bar's close, on the account the exchange reports.

Live, the bar's fills are the exchange's (the entries at its open, the stops and
targets that rested on the exchange): the account is read back from it
(``live.account``), then the close is the kernel's own (``kernel.decide_nb``: the
equity, the circuit breaker, the signals and the orders for the next open). The one
rule the kernel applies inside a bar's fills that live trading applies at the close is
the time limit (``barriers.time_up``): a position held ``horizon`` bars is booked
closed at that bar's close as the backtest books it, and sent to market (it fills at
the next open).
"""

from __future__ import annotations

import numpy as np

from asterai.backtest import kernel
from asterai.backtest.enums import EXIT_TIME
from asterai.barriers import market_fill, time_up
from asterai.paper.broker import EXIT, Bar, decided_orders


def decide(state: kernel.State, bar: Bar, tick: np.ndarray, step: np.ndarray,
           p: kernel.Params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(orders for the next open (``broker.ORDER_FIELDS``), rejections, the close's
    equity, cash, open positions and notional) at the close of ``bar``; ``state``
    changes in place as the kernel changes it.

    A position whose time is up at this close is closed in ``state`` as the kernel
    closes it (at the close, less the slippage, the taker fee: ``kernel._exit``), before
    the close is decided, so that the decisions (a free slot, the cash sized from, a
    new entry on the same symbol) are the backtest's; its exit is among the orders (a
    market order at the next open: the exchange has no order at a close)."""
    n = len(bar.close)
    # the last close's orders were sent (or refused): nothing of them carries over, or
    # an entry would be decided twice
    state.pend_order[:] = -1
    state.pend_exit[:] = False
    state.counts[:] = 0
    trades = np.full((n + 1, len(kernel.TRADE_FIELDS)), np.nan)
    timed = []
    for j in range(n):
        if state.side[j] == 0.0 or not time_up(bar.t, int(state.entry_t[j]), p.horizon):
            continue
        if np.isnan(bar.close[j]) or not bar.volume[j] > 0.0:
            continue  # no trade in the bar: the kernel closes it at the next bar that has one
        side, qty = state.side[j], state.qty[j]
        px = market_fill(bar.close[j], side < 0, p.slippage, tick[j])
        kernel._exit(state, trades, j, bar.t, px, p.taker_fee, EXIT_TIME)
        timed.append((j, EXIT, -side, qty, np.nan, EXIT_TIME))
    state.counts[:] = 0
    rejects = np.full((2 * n + 1, len(kernel.REJECT_FIELDS)), np.nan)
    curve = np.full(len(kernel.EQUITY_FIELDS), np.nan)
    kernel.decide_nb(
        bar.t, False, bar.close, np.asarray(bar.tradeable, dtype=np.bool_), bar.p_long,
        bar.p_short, bar.atr, np.ascontiguousarray(tick, dtype=float),
        np.ascontiguousarray(step, dtype=float), p, state, rejects, curve,
    )  # fmt: skip
    orders = decided_orders(state)
    if timed:
        orders = np.vstack([orders, np.array(timed, dtype=float)])
    return orders, rejects[: state.counts[1]].copy(), curve
