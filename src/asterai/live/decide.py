"""The strategy's decisions at a bar's close, on the account the exchange reports.

Live, the bar's fills are the exchange's (the entries at its open, the stops and
targets that rested on the exchange): the account is read back from it
(``live.account``), then the close is the kernel's own (``kernel.decide_nb``: the
equity, the circuit breaker, the signals and the orders for the next open). The one
rule the kernel applies inside a bar's fills that live trading applies at the close is
the time limit (``barriers.time_up``): a position held ``horizon`` bars is sent to
market when that bar closes (the backtest fills it at the close itself).
"""

from __future__ import annotations

import numpy as np

from asterai.backtest import kernel
from asterai.backtest.enums import EXIT_TIME
from asterai.barriers import time_up
from asterai.paper.broker import Bar, decided_orders


def decide(state: kernel.State, bar: Bar, tick: np.ndarray, step: np.ndarray,
           p: kernel.Params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(orders for the next open (``broker.ORDER_FIELDS``), rejections, the close's
    equity, cash, open positions and notional) at the close of ``bar``; ``state``
    changes in place as the kernel changes it."""
    n = len(bar.close)
    # the last close's orders were sent (or refused): nothing of them carries over, or
    # an entry would be decided twice
    state.pend_order[:] = -1
    state.pend_exit[:] = False
    for j in range(n):
        if state.side[j] != 0.0 and time_up(bar.t, int(state.entry_t[j]), p.horizon):
            if not state.pend_exit[j]:
                state.pend_exit[j] = True
                state.pend_exit_reason[j] = EXIT_TIME
    state.counts[:] = 0
    rejects = np.full((2 * n + 1, len(kernel.REJECT_FIELDS)), np.nan)
    curve = np.full(len(kernel.EQUITY_FIELDS), np.nan)
    kernel.decide_nb(
        bar.t, False, bar.close, np.asarray(bar.tradeable, dtype=np.bool_), bar.p_long,
        bar.p_short, bar.atr, np.ascontiguousarray(tick, dtype=float),
        np.ascontiguousarray(step, dtype=float), p, state, rejects, curve,
    )  # fmt: skip
    return decided_orders(state), rejects[: state.counts[1]].copy(), curve
