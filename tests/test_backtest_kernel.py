"""Golden cases of the kernel on real bars, each worked out by hand from the bar's own
prices: a gap through a stop, a bar that touches both barriers, a stop only just
touched, a target only touched or traded through, liquidation at the maintenance
margin, funding on a short, the drawdown circuit breaker, Kelly sizing, and exits that
wait through a closed market or meet the end of one.

The bars are the recording's; what the tests choose are the strategy's inputs (the
signals, the ATR that places the stops, a funding rate, the parameters), so that each
case lands on a real event of the market."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import numpy as np
import pandas as pd
import pytest

from asterai.backtest import kernel
from asterai.backtest.enums import EXIT_REASONS, REJECT_REASONS

FEE, MAKER, SLIP = 0.00075, 0.0005, 0.0005


def bars(real_data, symbol: str) -> pd.DataFrame:
    return pd.read_parquet(real_data / "klines" / f"{symbol}_1h.parquet").iloc[:-1]


def params(**kw) -> kernel.Params:
    base = dict(
        capital=50.0, risk=0.01, max_positions=5, taker_fee=FEE, maker_fee=MAKER,
        slippage=SLIP, threshold=0.5, tp_atr=3.0, sl_atr=2.0, horizon=24,
        max_leverage=5.0, max_drawdown=0.5,
    )  # fmt: skip
    base.update(kw)
    return kernel.Params(**base)


def run(b: pd.DataFrame, p_long, p_short, atr, p: kernel.Params, funding=None, tick=0.0):
    """One symbol through the kernel; the lot step off (and the tick unless given) so the
    arithmetic is exact."""
    col = lambda k: b[k].to_numpy(dtype=float)[:, None]  # noqa: E731
    T = len(b)
    trades, rejects, curve, cash = kernel.simulate_nb(
        col("open"), col("high"), col("low"), col("close"), col("volume"),
        np.ones((T, 1), bool), p_long[:, None], p_short[:, None], atr[:, None],
        np.zeros((T, 1)) if funding is None else funding[:, None],
        np.full(1, tick), np.zeros(1), np.zeros(1), p,
    )  # fmt: skip
    return (
        pd.DataFrame(trades, columns=kernel.TRADE_FIELDS),
        pd.DataFrame(rejects, columns=kernel.REJECT_FIELDS),
        curve,
        cash,
    )


def signal_at(T: int, t: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """One signal at bar ``t``'s close (so a fill at ``t+1``'s open); nothing elsewhere."""
    pl, ps = np.zeros(T), np.zeros(T)
    (pl if side > 0 else ps)[t] = 0.9
    return pl, ps


def test_a_gap_through_the_stop_fills_at_the_open_not_at_the_stop(real_data) -> None:
    b = bars(real_data, "AAVEUSDT")
    # AAVEUSDT opened the 2025-09-17 04:00 bar below the previous bar's low: a real gap
    g = b.index.get_loc(pd.Timestamp("2025-09-17 04:00"))
    o, lo = b["open"].to_numpy(), b["low"].to_numpy()
    assert o[g] < lo[g - 1] and (b["volume"].iloc[g - 2 : g + 1] > 0).all()
    # long entered at the previous bar's open plus the full slippage
    entry = o[g - 1] * (1 + SLIP)
    stop = (lo[g - 1] + o[g]) / 2  # below everything the entry bar traded, above the gap
    atr = np.full(len(b), (entry - stop) / 2.0)
    pl, ps = signal_at(len(b), g - 2, +1)
    trades, _, _, _ = run(b, pl, ps, atr, params())
    t = trades.iloc[0]
    assert (t["entry_t"], t["exit_t"]) == (g - 1, g)
    assert EXIT_REASONS[int(t["exit_reason"])] == "gap through stop"
    assert t["stop"] == pytest.approx(stop)
    # filled at the gapped open less the full slippage, not at the better stop price
    assert t["exit_price"] == pytest.approx(o[g] * (1 - SLIP))
    assert t["exit_price"] < t["stop"]
    q = t["quantity"]
    assert t["pnl"] == pytest.approx(
        q * (t["exit_price"] - entry) - q * FEE * (entry + t["exit_price"])
    )


def test_a_bar_that_touches_both_barriers_is_a_stop(real_data) -> None:
    b = bars(real_data, "BTCUSDT")
    # the 2025-10-10 21:00 bar (the crash) traded from 101,500 to far above its open
    t0 = b.index.get_loc(pd.Timestamp("2025-10-10 21:00"))
    o, h, lo = (b[k].to_numpy() for k in ("open", "high", "low"))
    entry = o[t0] * (1 + SLIP)
    # one ATR of 1: the stop just above the low, the target just below the high
    p = params(sl_atr=(entry - lo[t0]) * 0.9, tp_atr=(h[t0] - entry) * 0.9, risk=0.001)
    pl, ps = signal_at(len(b), t0 - 1, +1)
    trades, _, _, _ = run(b, pl, ps, np.ones(len(b)), p)
    t = trades.iloc[0]
    assert t["entry_t"] == t["exit_t"] == t0
    assert lo[t0] <= t["stop"] and t["target"] <= h[t0]  # both were touched
    assert EXIT_REASONS[int(t["exit_reason"])] == "stop"  # and the worse one is assumed
    assert t["exit_price"] == pytest.approx(t["stop"] * (1 - SLIP))


def test_a_target_is_a_maker_fill_at_its_own_price(real_data) -> None:
    b = bars(real_data, "BTCUSDT")
    t0 = b.index.get_loc(pd.Timestamp("2025-10-01 12:00"))
    o, h, lo = (b[k].to_numpy() for k in ("open", "high", "low"))
    entry = o[t0] * (1 + SLIP)
    # the target inside the entry bar's range, the stop far below anything it traded
    p = params(tp_atr=(h[t0] - entry) / 2, sl_atr=(entry - lo[t0]) * 5, risk=0.001)
    pl, ps = signal_at(len(b), t0 - 1, +1)
    trades, _, _, _ = run(b, pl, ps, np.ones(len(b)), p)
    t = trades.iloc[0]
    assert EXIT_REASONS[int(t["exit_reason"])] == "target"
    assert t["exit_price"] == pytest.approx(entry + (h[t0] - entry) / 2)
    q = t["quantity"]
    assert t["fees"] == pytest.approx(q * entry * FEE + q * t["exit_price"] * MAKER)


def test_a_short_receives_positive_funding_and_a_long_pays_it(real_data) -> None:
    b = bars(real_data, "ETHUSDT")
    T = len(b)
    t0 = b.index.get_loc(pd.Timestamp("2025-09-20 00:00"))
    rate = 0.0001  # a rate chosen for the test (the recording has no funding history)
    funding = np.zeros(T)
    funding[t0 + 2 : t0 + 10 : 8] = rate  # one funding time while the position is open
    funding[t0 + 4] = -rate / 2  # and a negative one
    c = b["close"].to_numpy()
    far = params(tp_atr=1e6, sl_atr=1e6, horizon=8)  # only the time limit closes it
    for side in (-1, +1):
        pl, ps = signal_at(T, t0, side)
        trades, _, curve, cash = run(b, pl, ps, np.ones(T), far, funding)
        t = trades.iloc[0]
        assert EXIT_REASONS[int(t["exit_reason"])] == "time limit"
        q = t["quantity"]
        paid = side * q * (c[t0 + 2] * rate - c[t0 + 4] * rate / 2)
        assert t["funding"] == pytest.approx(paid)  # positive: paid; negative: received
        assert (t["funding"] < 0) == (side < 0)
        gross = side * q * (t["exit_price"] - t["entry_price"])
        assert t["pnl"] == pytest.approx(gross - t["fees"] - paid)
        assert cash == pytest.approx(50.0 + t["pnl"])
        # the cash falls by what was paid at the funding bar itself
        i = t0 + 2
        assert curve[i, 1] - curve[i - 1, 1] == pytest.approx(-side * q * c[i] * rate)


def test_the_circuit_breaker_closes_everything_at_the_next_open_and_stops(real_data) -> None:
    b = bars(real_data, "BTCUSDT")
    T = len(b)
    # long 0.0019 BTC (about 230 USDT, under the 5x leverage limit) from 2025-10-10 12:00
    # into the crash
    t0 = b.index.get_loc(pd.Timestamp("2025-10-10 12:00"))
    pl = np.zeros(T)
    pl[t0:] = 0.9  # it keeps asking to trade: after the breaker every ask is refused
    p = params(max_drawdown=0.02, tp_atr=1e6, sl_atr=1e6, horizon=10**6, fixed_quantity=0.0019)
    trades, rejects, curve, _ = run(b, pl, np.zeros(T), np.full(T, 100.0), p)
    t = trades.iloc[0]
    assert EXIT_REASONS[int(t["exit_reason"])] == "drawdown circuit breaker"
    peak = np.maximum.accumulate(np.concatenate([[50.0], curve[:, 0]]))[1:]
    breach = int(np.flatnonzero(curve[:, 0] < peak * (1 - 0.02))[0])
    # decided at the breaching bar's close, filled at the next bar's open
    assert t["exit_t"] == breach + 1
    assert t["exit_price"] == pytest.approx(b["open"].to_numpy()[breach + 1] * (1 - SLIP))
    assert len(trades) == 1  # and nothing after it
    reasons = {REJECT_REASONS[int(r)] for r in rejects["reason"]}
    assert reasons == {"trading stopped by the circuit breaker"}
    assert (rejects["t"] > breach).all()
    assert (curve[breach + 1 :, 2] == 0).all()


def test_kelly_sizing_risks_a_share_of_the_kelly_bet_capped_by_the_risk_limit(real_data) -> None:
    b = bars(real_data, "SOLUSDT")
    T = len(b)
    c = b["close"].to_numpy()
    t0 = 100
    atr = np.full(T, c[t0] * 0.01)
    per_unit = 2.0 * atr[t0] + c[t0] * (2 * FEE + 2 * SLIP)

    def quantity(prob: float, **kw):
        pl = np.zeros(T)
        pl[t0] = prob
        trades, rejects, _, _ = run(b, pl, np.zeros(T), atr, params(**kw))
        return (trades["quantity"].iloc[0] if len(trades) else None), rejects

    # win 3 ATRs less a taker entry, a maker exit and slippage, or lose per_unit (2 ATRs
    # and every cost): the odds after costs, b = win / per_unit
    win = 3.0 * atr[t0] - c[t0] * (FEE + MAKER + SLIP)
    kelly = 0.6 - 0.4 * per_unit / win
    assert 0.2 < kelly < 1 / 3  # costs take some edge off the 0.333 of the raw odds
    q, _ = quantity(0.6, kelly_fraction=0.02)  # 0.0067 of equity: under the 1% cap
    assert q == pytest.approx(0.02 * kelly * 50.0 / per_unit)
    q, _ = quantity(0.6, kelly_fraction=0.5)  # 0.167: the 1% risk limit binds
    assert q == pytest.approx(0.01 * 50.0 / per_unit)
    q, _ = quantity(0.6)  # off: plain 1% risk
    assert q == pytest.approx(0.01 * 50.0 / per_unit)
    # win 1 ATR or lose 2 (b under 0.5 after costs): break-even is above p = 2/3, so a
    # signal at p = 0.5 clears the threshold but has no edge: no order
    q, rejects = quantity(0.5, kelly_fraction=0.5, tp_atr=1.0, sl_atr=2.0)
    assert q is None
    assert [REJECT_REASONS[int(r)] for r in rejects["reason"]] == [
        "no edge at the labels' odds (Kelly sizing)"
    ]


def test_the_end_of_the_data_closes_what_is_open_and_keeps_a_breakers_reason(real_data) -> None:
    b = bars(real_data, "BTCUSDT")
    T = len(b)
    t0 = b.index.get_loc(pd.Timestamp("2025-10-10 12:00"))
    p = params(max_drawdown=0.02, tp_atr=1e6, sl_atr=1e6, horizon=10**6, fixed_quantity=0.0019)
    pl = np.zeros(T)
    pl[t0] = 0.9
    _, _, curve, _ = run(b, pl, np.zeros(T), np.full(T, 100.0), p)
    peak = np.maximum.accumulate(np.concatenate([[50.0], curve[:, 0]]))[1:]
    breach = int(np.flatnonzero(curve[:, 0] < peak * (1 - 0.02))[0])
    # the data ends at the bar where the breaker is decided: no next open to fill at, so
    # the position closes at the last close, and the trade says it was the breaker
    cut = b.iloc[: breach + 1]
    trades, _, curve, cash = run(cut, pl[: breach + 1], np.zeros(breach + 1),
                                 np.full(breach + 1, 100.0), p)  # fmt: skip
    assert len(trades) == 1
    assert EXIT_REASONS[int(trades["exit_reason"].iloc[0])] == "drawdown circuit breaker"
    # the last bar's equity is after that fill's slippage and fee: capital + the PnL
    assert curve[-1, 0] == pytest.approx(50.0 + trades["pnl"].sum(), abs=1e-12)
    assert curve[-1, 0] == pytest.approx(cash) and curve[-1, 2] == 0
    # and a position simply open when the data ends: closed there, its costs counted
    trades, _, curve, cash = run(b.iloc[: t0 + 5], pl[: t0 + 5], np.zeros(t0 + 5),
                                 np.full(t0 + 5, 100.0), params(tp_atr=1e6, sl_atr=1e6,
                                 horizon=10**6, fixed_quantity=0.0019))  # fmt: skip
    assert EXIT_REASONS[int(trades["exit_reason"].iloc[0])] == "end of data"
    assert curve[-1, 0] == pytest.approx(50.0 + trades["pnl"].sum(), abs=1e-12)
    assert trades["fees"].iloc[0] > 0.0019 * trades["entry_price"].iloc[0] * FEE


def test_annualisation_follows_the_base_interval(tmp_path) -> None:
    from asterai.backtest.engine import annualisation
    from asterai.config import load_settings

    assert annualisation(load_settings(tmp_path)) == (8760, 24)
    assert annualisation(load_settings(tmp_path, features={"base_interval": "4h"})) == (2190, 6)


def test_kelly_counts_costs_a_coin_flip_at_even_odds_has_no_edge(real_data) -> None:
    b = bars(real_data, "SOLUSDT")
    T = len(b)
    atr = np.full(T, b["close"].to_numpy()[100] * 0.01)
    pl = np.zeros(T)
    pl[100] = 0.52  # wins 2 ATRs or loses 2: an edge before costs, none after them
    trades, rejects, _, _ = run(b, pl, np.zeros(T), atr, params(tp_atr=2.0, kelly_fraction=0.5))
    assert trades.empty
    assert [REJECT_REASONS[int(r)] for r in rejects["reason"]] == [
        "no edge at the labels' odds (Kelly sizing)"
    ]


def on_tick(price: float, tick: str, rounding) -> float:
    """``price`` onto the tick in decimal arithmetic (independent of the kernel's own)."""
    return float(Decimal(repr(float(price))).quantize(Decimal(tick), rounding=rounding))


BTC_TICK = 0.1  # BTCUSDT's price tick (its recorded prices sit on it)


def test_a_stop_the_low_only_just_touches_pays_the_full_slippage(real_data) -> None:
    b = bars(real_data, "BTCUSDT")
    t0 = b.index.get_loc(pd.Timestamp("2025-10-01 12:00"))
    o, lo = b["open"].to_numpy(), b["low"].to_numpy()
    entry = on_tick(o[t0] * (1 + SLIP), "0.1", ROUND_CEILING)  # a buy: up, against us
    # the stop exactly at the entry bar's low: the low touches it and goes no further
    atr = np.full(len(b), (entry - lo[t0]) / 2.0 - 1e-9)
    pl, ps = signal_at(len(b), t0 - 1, +1)
    trades, _, _, _ = run(b, pl, ps, atr, params(tp_atr=1e6, risk=0.001), tick=BTC_TICK)
    t = trades.iloc[0]
    assert t["entry_price"] == entry
    assert t["stop"] == lo[t0]
    assert (t["exit_t"], EXIT_REASONS[int(t["exit_reason"])]) == (t0, "stop")
    # our own sell would have printed below the low: stop x (1 - slippage), then the
    # tick against us; never clipped back to the bar's low
    assert t["exit_price"] == on_tick(lo[t0] * (1 - SLIP), "0.1", ROUND_FLOOR)
    assert t["exit_price"] < lo[t0]


def test_a_target_fills_only_when_the_bar_trades_a_tick_through_it(real_data) -> None:
    b = bars(real_data, "BTCUSDT")
    t0 = b.index.get_loc(pd.Timestamp("2025-10-01 12:00"))
    o, h = b["open"].to_numpy(), b["high"].to_numpy()
    entry = on_tick(o[t0] * (1 + SLIP), "0.1", ROUND_CEILING)
    pl, ps = signal_at(len(b), t0 - 1, +1)

    def trade_with_target_at(price: float) -> pd.Series:
        p = params(tp_atr=price - entry - 1e-9, sl_atr=1e6, risk=0.001)  # one ATR of 1
        trades, _, _, _ = run(b, pl, ps, np.ones(len(b)), p, tick=BTC_TICK)
        return trades.iloc[0]

    # the target at the bar's high: a bare touch, our resting sell may not have traded
    touched = trade_with_target_at(h[t0])
    assert touched["target"] == h[t0]
    assert not (touched["exit_t"] == t0 and EXIT_REASONS[int(touched["exit_reason"])] == "target")
    # a tick below the high: the bar traded through it, a maker fill at its own price
    through = trade_with_target_at(round(h[t0] - BTC_TICK, 1))
    assert (through["exit_t"], EXIT_REASONS[int(through["exit_reason"])]) == (t0, "target")
    assert through["exit_price"] == round(h[t0] - BTC_TICK, 1)
    q = through["quantity"]
    assert through["fees"] == pytest.approx(q * entry * FEE + q * through["exit_price"] * MAKER)


def test_a_shorts_target_fills_only_when_the_bar_trades_a_tick_below_it(real_data) -> None:
    b = bars(real_data, "BTCUSDT")
    t0 = b.index.get_loc(pd.Timestamp("2025-10-01 12:00"))
    o, lo = b["open"].to_numpy(), b["low"].to_numpy()
    entry = on_tick(o[t0] * (1 - SLIP), "0.1", ROUND_FLOOR)  # a sell: down, against us
    pl, ps = signal_at(len(b), t0 - 1, -1)

    def trade_with_target_at(price: float) -> pd.Series:
        p = params(tp_atr=entry - price - 1e-9, sl_atr=1e6, risk=0.001)
        trades, _, _, _ = run(b, pl, ps, np.ones(len(b)), p, tick=BTC_TICK)
        return trades.iloc[0]

    touched = trade_with_target_at(lo[t0])  # the bar's low: a bare touch
    assert touched["target"] == lo[t0]
    assert not (touched["exit_t"] == t0 and EXIT_REASONS[int(touched["exit_reason"])] == "target")
    through = trade_with_target_at(round(lo[t0] + BTC_TICK, 1))  # a tick above the low
    assert (through["exit_t"], EXIT_REASONS[int(through["exit_reason"])]) == (t0, "target")
    assert through["exit_price"] == round(lo[t0] + BTC_TICK, 1)


def test_the_labels_fill_a_target_by_the_same_rule(real_data) -> None:
    from asterai.features.labels import triple_barrier_nb

    b = bars(real_data, "BTCUSDT")
    t0 = b.index.get_loc(pd.Timestamp("2025-10-01 12:00"))
    o, h, lo = (b[k].to_numpy() for k in ("open", "high", "low"))
    times = (b.index.astype("int64") // 1_000_000).to_numpy()
    atr = np.ones(len(b))

    def label(target: float) -> float:
        tp = target - o[t0] - 1e-9  # from the label's entry, the unslipped open
        out, _ = triple_barrier_nb(o, h, lo, atr, times, 3_600_000, 1, tp, 1e6, 1, BTC_TICK)
        return out[t0 - 1]

    assert label(h[t0]) == 0.0  # touched only: not reached
    assert label(round(h[t0] - BTC_TICK, 1)) == 1.0  # a tick through: reached

    def label_short(target: float) -> float:
        tp = o[t0] - target - 1e-9
        out, _ = triple_barrier_nb(o, h, lo, atr, times, 3_600_000, 1, tp, 1e6, -1, BTC_TICK)
        return out[t0 - 1]

    assert label_short(lo[t0]) == 0.0
    assert label_short(round(lo[t0] + BTC_TICK, 1)) == 1.0


def test_liquidation_at_the_maintenance_margin_before_equity_reaches_zero(real_data) -> None:
    b = bars(real_data, "BTCUSDT")
    T = len(b)
    # long about 8.7x into the 2025-10-10 21:00 bar, whose low (101,500) costs it nearly
    # all of its equity, but not quite all of it
    t0 = b.index.get_loc(pd.Timestamp("2025-10-10 21:00"))
    o, lo = b["open"].to_numpy(), b["low"].to_numpy()
    q = 0.0038
    pl, ps = signal_at(T, t0 - 1, +1)
    far = dict(tp_atr=1e6, sl_atr=1e6, horizon=10**6, fixed_quantity=q, max_leverage=100.0)
    liq = dict(maintenance_margin=0.01, liquidation_fee=0.01)
    entry = o[t0] * (1 + SLIP)
    worst = 50.0 - q * entry * FEE + q * (lo[t0] - entry)
    assert 0.0 < worst <= 0.01 * q * lo[t0]  # above zero, below the maintenance margin
    trades, _, curve, _ = run(b, pl, ps, np.ones(T), params(**far, **liq))
    t = trades.iloc[0]
    assert (t["exit_t"], EXIT_REASONS[int(t["exit_reason"])]) == (t0, "liquidation")
    assert t["exit_price"] == pytest.approx(lo[t0] * (1 - SLIP))  # the low, less slippage
    # the taker fee on both fills and the liquidation fee on the closing notional
    assert t["fees"] == pytest.approx(q * entry * FEE + q * t["exit_price"] * (FEE + 0.01))
    assert len(trades) == 1 and (curve[t0:, 2] == 0).all()  # and trading stops
    # liquidated only at zero equity (no maintenance margin), it would have survived
    survived, _, _, _ = run(b, pl, ps, np.ones(T), params(**far))
    assert EXIT_REASONS[int(survived["exit_reason"].iloc[0])] != "liquidation"


def aapl_closed_market(real_data) -> tuple[pd.DataFrame, int]:
    """AAPLUSDT around 2025-09-16 14:00: trades at t, none at t+1 and t+2 (the stock
    market's night), then trading again."""
    b = bars(real_data, "AAPLUSDT")
    t = b.index.get_loc(pd.Timestamp("2025-09-16 14:00"))
    v = b["volume"].to_numpy()
    assert v[t - 1] > 0 and v[t] > 0 and v[t + 1] == 0 and v[t + 2] == 0
    return b, t


def test_an_exit_waits_through_a_market_without_trades(real_data) -> None:
    b, t = aapl_closed_market(real_data)
    T = len(b)
    pl, ps = signal_at(T, t - 2, +1)  # long from t-1's open
    ps[t] = 0.9  # the opposite signal at t's close: exit at the next open that trades
    far = params(tp_atr=1e6, sl_atr=1e6, horizon=10**6, fixed_quantity=0.05)
    trades, _, _, _ = run(b, pl, ps, np.ones(T), far)
    fill = t + 1 + int(np.flatnonzero(b["volume"].to_numpy()[t + 1 :] > 0)[0])
    assert fill > t + 2
    tr = trades.iloc[0]
    assert EXIT_REASONS[int(tr["exit_reason"])] == "opposite signal"
    assert tr["exit_t"] == fill
    assert tr["exit_price"] == pytest.approx(b["open"].to_numpy()[fill] * (1 - SLIP))


def test_a_market_that_ends_under_a_pending_exit_closes_there_with_its_reason(real_data):
    b, t = aapl_closed_market(real_data)
    btc = bars(real_data, "BTCUSDT")
    grid = btc.index
    # AAPLUSDT's data ends at t+2 (no trade since t); BTCUSDT's goes on
    a = b.iloc[: t + 3].reindex(grid)
    T = len(grid)
    k = grid.get_loc(b.index[t])
    stack = lambda c: np.column_stack([a[c].to_numpy(float), btc[c].to_numpy(float)])  # noqa: E731
    pl, ps = np.zeros((T, 2)), np.zeros((T, 2))
    pl[k - 2, 0] = 0.9
    ps[k, 0] = 0.9
    far = params(tp_atr=1e6, sl_atr=1e6, horizon=10**6, fixed_quantity=0.05)
    trades, _, _, _ = kernel.simulate_nb(
        stack("open"), stack("high"), stack("low"), stack("close"), stack("volume"),
        np.ones((T, 2), bool), pl, ps, np.ones((T, 2)), np.zeros((T, 2)), np.zeros(2),
        np.zeros(2), np.zeros(2), far,
    )  # fmt: skip
    tr = pd.DataFrame(trades, columns=kernel.TRADE_FIELDS).iloc[0]
    assert tr["exit_t"] == k + 2  # its last bar
    assert EXIT_REASONS[int(tr["exit_reason"])] == "opposite signal"  # kept, not "end of data"
    assert tr["exit_price"] == pytest.approx(a["close"].to_numpy()[k + 2] * (1 - SLIP))


def real_panel(real_data):
    """Seven real symbols' 1h bars on one grid, with signals made from the real closes
    (the distance from the 24-bar mean, in ATRs), funding every 8 hours, and parameters
    that put stops, targets, time limits, the lot step and the positions limit to work:
    (the step's per-bar arrays, tick, lot, min notional, params)."""
    import talib

    symbols = ["BTCUSDT", "ETHUSDT", "AAVEUSDT", "SOLUSDT", "ADAUSDT", "UNIUSDT", "2ZUSDT"]
    frames = [bars(real_data, s) for s in symbols]
    grid = frames[0].index
    for f in frames[1:]:
        grid = grid.union(f.index)
    cols = {k: np.column_stack([f[k].reindex(grid).to_numpy(dtype=float) for f in frames])
            for k in ("open", "high", "low", "close", "volume")}  # fmt: skip
    T, N = cols["close"].shape
    atr = np.column_stack([talib.ATR(cols["high"][:, j], cols["low"][:, j], cols["close"][:, j])
                           for j in range(N)])  # fmt: skip
    mean = pd.DataFrame(cols["close"]).rolling(24).mean().to_numpy()
    z = np.clip((cols["close"] - mean) / atr, -3.0, 3.0) / 6.0
    p_long, p_short = 0.5 + z, 0.5 - z
    funding = np.zeros((T, N))
    funding[grid.hour % 8 == 0] = 0.0001
    tradeable = np.isfinite(cols["close"])
    p = params(threshold=0.7, max_positions=3, horizon=12, max_drawdown=0.3)
    args = (cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"],
            tradeable, p_long, p_short, atr, funding)  # fmt: skip
    return args, np.full(N, 1e-4), np.full(N, 1e-3), np.full(N, 5.0), p


def test_one_bar_at_a_time_from_a_carried_state_is_the_backtest(real_data) -> None:
    """One engine: ``step_nb`` called bar by bar from Python (as paper trading calls it),
    with the account copied out and rebuilt half-way (a restart from a journal), gives
    the backtest's trades, rejections and equity to the bit, on real bars of several
    symbols with stops, targets, time limits, funding, the lot step and the positions
    limit all at work."""
    args, tick, lot, min_notional, p = real_panel(real_data)
    T, N = args[0].shape
    want_trades, want_rejects, want_curve, want_cash = kernel.simulate_nb(
        *args, tick, lot, min_notional, p
    )
    assert len(want_trades) > 30 and len(want_rejects) > 5
    assert {kernel.EXIT_STOP, kernel.EXIT_TARGET, kernel.EXIT_TIME} <= set(want_trades[:, 11])

    trades = np.full((len(want_trades) + N + 1, len(kernel.TRADE_FIELDS)), np.nan)
    rejects = np.full((len(want_rejects) + 1, len(kernel.REJECT_FIELDS)), np.nan)
    curve = np.full((T, len(kernel.EQUITY_FIELDS)), np.nan)
    last_bar = np.array([np.flatnonzero(np.isfinite(args[3][:, j]))[-1] for j in range(N)])
    s = kernel.new_state(N, p.capital)
    for t in range(T):
        if t == T // 2:  # a restart: the account rebuilt from copies of its arrays
            s = kernel.State(*[np.array(a, copy=True) for a in s])
        ends = (last_bar == t) & (t < T - 1)
        kernel.step_nb(t, t == T - 1, *(a[t] for a in args), ends, tick, lot, min_notional,
                       p, s, trades, rejects, curve[t])  # fmt: skip
    kernel.close_all_nb(T - 1, p, tick, s, trades, curve[T - 1])
    assert np.array_equal(trades[: s.counts[0]], want_trades, equal_nan=True)
    assert np.array_equal(rejects[: s.counts[1]], want_rejects, equal_nan=True)
    assert np.array_equal(curve, want_curve, equal_nan=True)
    assert s.account[0] == want_cash
