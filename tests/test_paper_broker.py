"""The simulated broker is the backtest's engine applied one closed bar at a time, and
the live risk controls (the kill switch, the daily loss limit's floor) act through it.

Real bars of seven recorded symbols, with signals made from their real closes
(``test_backtest_kernel.real_panel``)."""

from __future__ import annotations

import numpy as np
from test_backtest_kernel import real_panel

from asterai.backtest import kernel
from asterai.paper.broker import EXIT, Bar, Controls, SimulatedBroker


def bar_at(args, t: int) -> Bar:
    o, h, lo, c, v, tradeable, pl, ps, atr, funding = (a[t] for a in args)
    return Bar(t, t * 3_600_000, o, h, lo, c, v, tradeable, pl, ps, atr, funding)


def play(args, broker: SimulatedBroker, controls=lambda t: Controls(), upto=None):
    T = len(args[0]) if upto is None else upto
    return [broker.apply(bar_at(args, t), controls(t)) for t in range(T)]


def test_bar_by_bar_the_simulated_broker_is_the_backtest(real_data) -> None:
    args, tick, lot, min_notional, p = real_panel(real_data)
    T = len(args[0])
    want_trades, want_rejects, want_curve, _ = kernel.simulate_nb(*args, tick, lot, min_notional, p)
    broker = SimulatedBroker(p, tick, lot, min_notional)
    events = play(args, broker)
    trades = np.vstack([e.trades for e in events])
    rejects = np.vstack([e.rejects for e in events])
    curve = np.vstack([e.curve for e in events])
    # the backtest's last bar takes no signal and closes what is open (the end of its
    # data); paper trading's market goes on: every bar before it is the same to the bit
    before = want_trades[:, 4] < T - 1
    assert np.array_equal(trades[trades[:, 4] < T - 1], want_trades[before], equal_nan=True)
    assert np.array_equal(rejects[rejects[:, 0] < T - 1], want_rejects[want_rejects[:, 0] < T - 1])
    assert np.array_equal(curve[:-1], want_curve[:-1], equal_nan=True)
    # what each bar reports is what the account did: its entries are the trades' entries,
    # its funding their funding, its decided orders the next bar's fills and exits
    entered = sorted((int(j), e.t) for e in events for j in e.entries)
    held = [(int(r[0]), int(r[6])) for r in events[-1].positions]
    assert entered == sorted([(int(r[0]), int(r[3])) for r in trades] + held)
    paid = np.sum([e.funding for e in events], axis=0)
    open_paid = np.zeros_like(paid)
    for r in trades:
        open_paid[int(r[0])] += r[9]
    held = broker.state.side != 0
    open_paid[held] += broker.state.paid[held]
    np.testing.assert_allclose(paid, open_paid, rtol=0, atol=1e-12)
    for before_bar, after in zip(events[:-1], events[1:], strict=True):
        for j, kind, *_ in before_bar.orders:
            if kind == EXIT:
                closed = int(j) in after.trades[:, 0].astype(int)
                assert closed or np.isnan(args[0][after.t, int(j)]) or args[4][after.t, int(j)] <= 0


def test_the_kill_switch_flattens_at_the_open_cancels_entries_and_stops(real_data) -> None:
    args, tick, lot, min_notional, p = real_panel(real_data)
    broker = SimulatedBroker(p, tick, lot, min_notional)
    events = play(args, broker, upto=400)
    k = next(t for t in range(400, 600) if (broker.apply(bar_at(args, t), Controls()),
                                               (broker.state.side != 0).sum() >= 2)[1])  # fmt: skip
    open_before = set(np.flatnonzero(broker.state.side != 0))
    pending = set(np.flatnonzero(broker.state.pend_order >= 0))
    kill = broker.apply(bar_at(args, k + 1), Controls(kill=True))
    assert kill.killed == len(open_before)
    closed = {int(r[0]): r for r in kill.trades}
    assert set(closed) == open_before  # every position, at the bar's open
    for j, r in closed.items():
        assert r[11] == kernel.EXIT_KILL
        side = r[1]
        want = kernel.market_fill(args[0][k + 1, j], side < 0, p.slippage, tick[j])
        assert r[6] == want
    cancelled = {int(r[1]) for r in kill.rejects if r[3] == kernel.REJECT_KILLED}
    assert cancelled == pending
    assert len(kill.entries) == 0 and len(kill.positions) == 0
    # trading has stopped for good: every later signal is refused
    later = [broker.apply(bar_at(args, t), Controls()) for t in range(k + 2, len(args[0]))]
    assert all(len(e.entries) == 0 and len(e.trades) == 0 for e in later)
    assert any(len(e.rejects) for e in later)
    assert all(r[3] == kernel.REJECT_STOPPED for e in later for r in e.rejects)
    assert len(events) == 400 and not any(e.killed for e in events)


def test_a_close_below_the_days_floor_pauses_new_entries_not_exits(real_data) -> None:
    args, tick, lot, min_notional, p = real_panel(real_data)
    T = len(args[0])
    day = np.arange(T) // 24

    free = play(args, SimulatedBroker(p, tick, lot, min_notional))

    # a floor no close can stay above on every third day: those days open nothing new
    # after their first close; each new day lifts the pause, the other days have no floor
    def controls(t):
        if t and day[t] == day[t - 1]:
            return Controls()
        return Controls(new_floor=1e9 if day[t] % 3 == 1 else 0.0)

    events = play(args, SimulatedBroker(p, tick, lot, min_notional), controls)
    limited = [e for e in events if day[e.t] % 3 == 1]
    assert limited and all(len(e.entries) == 0 for e in limited if e.t % 24 >= 1), (
        "an entry opened after the floor was crossed"
    )
    assert any(r[3] == kernel.REJECT_PAUSED for e in limited for r in e.rejects)
    # exits go on while entries are paused
    assert any(len(e.trades) for e in limited)
    # and the days without a floor do open positions
    assert any(len(e.entries) for e in events if day[e.t] % 3 != 1)
    assert sum(len(e.entries) for e in events) < sum(len(e.entries) for e in free)
