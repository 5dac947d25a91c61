"""The broker interface, and the simulated broker that fills with the backtest's engine.

The strategy's rules (sizing, fills, fees, slippage, filters, funding, stops, targets,
time limits, liquidation, the circuit breaker) live once, in
``backtest.kernel.step_nb``. ``SimulatedBroker.apply`` hands it one closed bar of every
symbol and the account it carries (``kernel.State``), and reads back what the bar did:
the fills at its open, the trades closed, the rejected orders, the funding paid, the
orders decided at its close for the next open, the open positions and the equity. A
live broker (signed orders, later) implements the same two methods, ``apply`` and
``state``, by sending the orders the step decided and reporting the exchange's fills,
without touching the strategy.

Live risk controls reach the step through ``Controls``: the kill switch
(``kernel.kill_nb``: everything exits at this bar's open, the entries decided for it
are cancelled, trading stops) and the daily loss limit (an equity floor: a close below
it pauses new entries; a new day lifts the pause and sets a new floor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from asterai.backtest import kernel

#: what ``BarEvents.orders`` holds per decided order
ORDER_FIELDS = ("symbol", "kind", "side", "quantity", "probability", "reason")
#: ``BarEvents.positions`` per open position
POSITION_FIELDS = ("symbol", "side", "quantity", "entry_price", "stop", "target", "entry_t")
ENTRY, EXIT = 0, 1


@dataclass(frozen=True, slots=True)
class Bar:
    """One closed base bar of every symbol (N,), NaN where a symbol has none, at bar
    number ``t`` (bars since the account's first, on the base interval's grid)."""

    t: int
    open_ms: int
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    tradeable: np.ndarray  # bool
    p_long: np.ndarray  # NaN: no signal acted on (no bar, or a bar seen too late)
    p_short: np.ndarray
    atr: np.ndarray
    funding: np.ndarray  # the rates of the funding events in (open, open + interval]


@dataclass(frozen=True, slots=True)
class Controls:
    """The live risk controls in force before a bar's step."""

    kill: bool = False  # the kill switch: flatten at this bar's open and stop
    # a new day's equity floor (0: none): lifts a pause and sets the floor a close must
    # stay above for new entries; None keeps the floor and the pause (the kernel latches
    # the pause in the account when a close falls below the floor)
    new_floor: float | None = None


@dataclass(frozen=True, slots=True)
class BarEvents:
    t: int
    trades: np.ndarray  # (k, kernel.TRADE_FIELDS): positions closed in this bar
    rejects: np.ndarray  # (k, kernel.REJECT_FIELDS)
    entries: np.ndarray  # symbols whose position opened at this bar's open
    funding: np.ndarray  # (N,) funding paid in this bar (negative: received)
    orders: np.ndarray  # (k, ORDER_FIELDS): decided at the close, for the next open
    positions: np.ndarray  # (k, POSITION_FIELDS): open after the bar
    curve: np.ndarray  # (kernel.EQUITY_FIELDS): equity, cash, open positions, notional
    killed: int  # positions the kill switch sent to the next fill (0 without it)


class Broker(Protocol):
    def apply(self, bar: Bar, controls: Controls) -> BarEvents: ...

    @property
    def state(self) -> kernel.State: ...


class SimulatedBroker:
    """Fills with the backtest's engine: ``kernel.step_nb`` on each bar, the account
    carried across bars exactly as the backtest's loop carries it."""

    def __init__(
        self,
        p: kernel.Params,
        tick: np.ndarray,
        step: np.ndarray,
        min_notional: np.ndarray,
        state: kernel.State | None = None,
    ) -> None:
        self.p = p
        self.tick = np.ascontiguousarray(tick, dtype=float)
        self.step = np.ascontiguousarray(step, dtype=float)
        self.min_notional = np.ascontiguousarray(min_notional, dtype=float)
        n = len(self.tick)
        self._state = kernel.new_state(n, p.capital) if state is None else state
        # one bar's records: at most a close per symbol, and a rejection per symbol at the
        # open and another at the close
        self._trades = np.full((n + 1, len(kernel.TRADE_FIELDS)), np.nan)
        self._rejects = np.full((2 * n + 1, len(kernel.REJECT_FIELDS)), np.nan)
        self._ends = np.zeros(n, dtype=np.bool_)  # a live market's data does not end

    @property
    def state(self) -> kernel.State:
        return self._state

    def apply(self, bar: Bar, controls: Controls) -> BarEvents:
        s = self._state
        s.counts[:] = 0
        killed = 0
        if controls.kill:
            killed = kernel.kill_nb(bar.t, s, self._rejects)
        if controls.new_floor is not None:
            s.account[4] = 0.0
            s.account[5] = controls.new_floor
        was_open = s.side != 0.0
        paid_before = s.paid.copy()
        curve = np.full(len(kernel.EQUITY_FIELDS), np.nan)
        kernel.step_nb(
            bar.t, False, bar.open, bar.high, bar.low, bar.close, bar.volume,
            np.asarray(bar.tradeable, dtype=np.bool_), bar.p_long, bar.p_short, bar.atr,
            bar.funding, self._ends, self.tick, self.step, self.min_notional, self.p, s,
            self._trades, self._rejects, curve,
        )  # fmt: skip
        is_open = s.side != 0.0
        trades = self._trades[: s.counts[0]].copy()
        # opened at this open: still open, or already closed in this bar (a stop)
        entries = np.union1d(
            np.flatnonzero(is_open & (s.entry_t == bar.t)),
            trades[trades[:, 3] == bar.t, 0].astype(np.int64),
        )
        carried = is_open & was_open & (s.entry_t < bar.t)
        funding = np.where(is_open, s.paid - np.where(carried, paid_before, 0.0), 0.0)
        orders = decided_orders(s)
        held = np.flatnonzero(is_open)
        positions = np.column_stack(
            [held, s.side[held], s.qty[held], s.entry_px[held], s.stop[held], s.target[held],
             s.entry_t[held]]
        ).astype(float) if len(held) else np.zeros((0, len(POSITION_FIELDS)))  # fmt: skip
        return BarEvents(
            bar.t,
            trades,
            self._rejects[: s.counts[1]].copy(),
            entries,
            funding,
            orders,
            positions,
            curve,
            killed,
        )


def decided_orders(s: kernel.State) -> np.ndarray:
    """The orders decided at the last close for the next open (``ORDER_FIELDS``):
    entries in the order of their strength, then exits of open positions."""
    is_open = s.side != 0.0
    orders = [
        (j, ENTRY, s.pend_side[j], s.pend_qty[j], s.pend_prob[j], -1)
        for j in np.flatnonzero(s.pend_order >= 0)
    ] + [
        (j, EXIT, -s.side[j], s.qty[j], np.nan, s.pend_exit_reason[j])
        for j in np.flatnonzero(s.pend_exit & is_open)
    ]
    return np.array(orders, dtype=float).reshape(-1, len(ORDER_FIELDS))
