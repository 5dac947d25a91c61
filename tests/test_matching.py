"""The stand-in exchange's matching engine (``exchange.replay.matching``) on the recorded
market: what each order type does bar by bar, what it costs, what the account and
its user-data events say, and what the exchange refuses, with the documented codes.
Expected prices are worked out here from the bars themselves."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import numpy as np
import pytest

from asterai.exchange.orders import IllegalTransition, OrderStatus, advance
from asterai.exchange.replay.accounts import Costs, instruments_of
from asterai.exchange.replay.errors import ApiError
from asterai.exchange.replay.matching import Engine

USER = "0x63DD5aCC6b1aa0f563956C0e534DD30B6dcF7C4e"
COSTS = Costs()


@pytest.fixture(scope="module")
def instruments(recording):
    return instruments_of(recording)


def at(instruments, symbol: str, i: int, seconds: int = 1) -> int:
    """``seconds`` into bar ``i`` of ``symbol``."""
    return int(instruments[symbol].open_time[i]) + seconds * 1000


def engine(instruments, now: int, balance: str = "1000") -> tuple[Engine, object]:
    eng = Engine(instruments, COSTS, now)
    return eng, eng.open_account(USER, Decimal(balance))


def d(x) -> Decimal:
    return Decimal(repr(float(x)))


def slipped(price: Decimal, tick: Decimal, buying: bool) -> Decimal:
    """The slippage against the trader, then the tick against him."""
    if buying:
        return (price * (1 + COSTS.slippage) / tick).to_integral_value(ROUND_CEILING) * tick
    return (price * (1 - COSTS.slippage) / tick).to_integral_value(ROUND_FLOOR) * tick


def test_a_market_order_fills_at_the_moments_open_with_slippage_and_the_taker_fee(instruments):
    btc = instruments["BTCUSDT"]
    now = at(instruments, "BTCUSDT", 100)
    eng, acc = engine(instruments, now)
    order = eng.new_order(acc, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                "quantity": "0.002", "newClientOrderId": "a1-entry"}, now)  # fmt: skip
    price = slipped(d(btc.open[100]), btc.tick, buying=True)
    assert order.status is OrderStatus.FILLED and order.avg_price == price
    fee = Decimal("0.002") * price * COSTS.taker_fee
    assert acc.wallet == Decimal(1000) - fee
    pos = acc.positions["BTCUSDT"]
    assert (pos.qty, pos.entry) == (Decimal("0.002"), price)
    kinds = [(e["e"], e.get("o", {}).get("X")) for e in acc.events]
    assert kinds == [("ORDER_TRADE_UPDATE", "NEW"), ("ORDER_TRADE_UPDATE", "FILLED"),
                     ("ACCOUNT_UPDATE", None)]  # fmt: skip
    trade = acc.events[1]["o"]
    assert (trade["x"], trade["c"], trade["L"], trade["n"], trade["m"]) == (
        "TRADE",
        "a1-entry",
        str(price),
        format(fee.normalize(), "f"),
        False,
    )
    assert acc.events[2]["a"]["P"][0]["pa"] == "0.002"
    assert [i["incomeType"] for i in acc.income] == ["COMMISSION"]
    assert acc.trades[0]["maker"] is False and acc.trades[0]["price"] == str(price)


def first_bar(b, rule, start: int = 50) -> int:
    return next(i for i in range(start, len(b.open) - 2) if rule(i))


def test_stop_before_target_in_one_bar_then_the_other_leg_expires(instruments):
    """Entered at a bar's open, with a close-all stop under it and a reduce-only limit
    target over it, both reached by the same bar: the stop goes first (the worse
    outcome), filled at the stop with the slippage; the target then has nothing to
    reduce and expires."""
    btc = instruments["BTCUSDT"]
    tick = btc.tick
    i = first_bar(btc, lambda i: btc.high[i] > btc.open[i] + 3 * float(tick)
                  and btc.low[i] < btc.open[i] - 3 * float(tick))  # fmt: skip
    now = at(instruments, "BTCUSDT", i)
    eng, acc = engine(instruments, now)
    eng.new_order(acc, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                        "quantity": "0.002"}, now)  # fmt: skip
    stop = (d(btc.low[i]) / tick).to_integral_value(ROUND_CEILING) * tick  # the low reaches it
    target = d(btc.high[i]) - tick  # the high trades a tick through it
    s = eng.new_order(acc, {"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET",
                            "stopPrice": str(stop), "closePosition": "true"}, now + 1000)  # fmt: skip
    t = eng.new_order(acc, {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT",
                            "timeInForce": "GTC", "quantity": "0.002", "price": str(target),
                            "reduceOnly": "true"}, now + 1000)  # fmt: skip
    assert s.status is OrderStatus.NEW and t.status is OrderStatus.NEW
    eng.advance(int(btc.close_time[i]))
    assert s.status is OrderStatus.FILLED and s.avg_price == slipped(stop, tick, buying=False)
    assert t.status is OrderStatus.EXPIRED
    assert acc.positions["BTCUSDT"].qty == 0
    realized = [Decimal(x["income"]) for x in acc.income if x["incomeType"] == "REALIZED_PNL"]
    entry = slipped(d(btc.open[i]), tick, buying=True)
    assert realized == [Decimal("0.002") * (s.avg_price - entry)]


def test_a_resting_limit_fills_only_when_traded_a_tick_through_as_a_maker(instruments):
    btc = instruments["BTCUSDT"]
    tick = btc.tick
    i = first_bar(btc, lambda i: btc.high[i] > btc.open[i] + 5 * float(tick))
    now = at(instruments, "BTCUSDT", i)
    eng = Engine(instruments, COSTS, now)
    filled = {}
    for name, price in (("touch", d(btc.high[i])), ("through", d(btc.high[i]) - tick)):
        acc = eng.open_account(f"0x{name}", Decimal(1000))
        eng.new_order(acc, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                            "quantity": "0.001"}, now)  # fmt: skip
        filled[name] = (
            acc,
            eng.new_order(
                acc,
                {
                    "symbol": "BTCUSDT",
                    "side": "SELL",
                    "type": "LIMIT",
                    "timeInForce": "GTX",
                    "quantity": "0.001",
                    "price": str(price),
                    "reduceOnly": "true",
                },
                now + 500,
            ),
        )
    eng.advance(int(btc.close_time[i]))
    assert filled["touch"][1].status is OrderStatus.NEW  # a bare touch: still resting
    acc, through = filled["through"]
    assert through.status is OrderStatus.FILLED and through.avg_price == d(btc.high[i]) - tick
    assert acc.trades[-1]["maker"] is True
    assert (
        Decimal(acc.trades[-1]["commission"])
        == through.avg_price * Decimal("0.001") * COSTS.maker_fee
    )


def test_a_stop_the_next_bar_opens_through_fills_at_that_open(instruments):
    btc = instruments["BTCUSDT"]
    tick = float(btc.tick)
    k = first_bar(btc, lambda k: btc.open[k] < btc.low[k - 1] - 2 * tick, start=2)
    now = at(instruments, "BTCUSDT", k - 1)
    eng, acc = engine(instruments, now)
    eng.new_order(acc, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                        "quantity": "0.001"}, now)  # fmt: skip
    stop = (d(btc.low[k - 1]) - btc.tick).quantize(btc.tick)  # under bar k-1, over k's open
    order = eng.new_order(acc, {"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET",
                                "stopPrice": str(stop), "quantity": "0.001",
                                "reduceOnly": "true"}, now + 1000)  # fmt: skip
    eng.advance(int(btc.close_time[k - 1]))
    assert order.status is OrderStatus.NEW  # bar k-1 never reached it
    eng.advance(int(btc.close_time[k]))
    assert order.status is OrderStatus.FILLED
    assert order.avg_price == slipped(d(btc.open[k]), btc.tick, buying=False) < stop


def test_what_the_exchange_refuses_and_the_codes_it_answers(instruments):
    btc = instruments["BTCUSDT"]
    now = at(instruments, "BTCUSDT", 200)
    eng, acc = engine(instruments, now, balance="20")
    base = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
    low = str((d(btc.open[200]) * Decimal("0.9")).quantize(btc.tick))

    def code(params: dict, t: int = now) -> int:
        with pytest.raises(ApiError) as err:
            eng.new_order(acc, params, t)
        return err.value.code

    assert code({**base, "quantity": "0.001", "price": low + "5"}) == -4014  # off the tick
    assert code({**base, "quantity": "0.0015", "price": low}) == -1111  # finer than the step
    assert code({**base, "quantity": "0.0015", "price": low}) == -1111
    assert code({**base, "quantity": "1e30", "price": low}) == -4005  # no 500 on huge numbers
    assert code({**base, "quantity": "0.001", "price": "1e40"}) == -4002
    assert code({**base, "quantity": "0.001", "price": "1000.0"}) == -4164  # notional < 5
    assert code({**base, "quantity": "0.05", "price": low}) == -2019  # 20 USDT at 20x
    assert code({**base, "price": low}) == -1102  # no quantity
    assert code({**base, "symbol": "NOSUCHUSDT", "quantity": "1", "price": "1"}) == -1121
    assert code({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001",
                 "timeInForce": "GTC"}) == -1106  # fmt: skip
    assert code({"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.001",
                 "reduceOnly": "true"}) == -2022  # nothing to reduce  # fmt: skip
    above = str((d(btc.open[200]) * Decimal("1.1")).quantize(btc.tick))
    assert code({**base, "timeInForce": "GTX", "quantity": "0.001", "price": above}) == -5022
    assert code({"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET",
                 "stopPrice": above, "closePosition": "true"}) == -2021  # fmt: skip
    assert code({"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET", "stopPrice": low,
                 "closePosition": "true", "quantity": "0.001"}) == -4137  # fmt: skip
    resting = eng.new_order(acc, {**base, "quantity": "0.001", "price": low,
                                  "newClientOrderId": "bot-1"}, now)  # fmt: skip
    assert code({**base, "quantity": "0.001", "price": low, "newClientOrderId": "bot-1"}) == -4116
    assert code({**base, "quantity": "0.001", "price": low, "newClientOrderId": "a b"}) == -4015
    assert acc.open_orders() == [resting]
    assert eng.find(acc, "BTCUSDT", None, "bot-1") is resting
    assert eng.cancel(acc, "BTCUSDT", now, client_id="bot-1").status is OrderStatus.CANCELED
    with pytest.raises(ApiError) as err:
        eng.cancel(acc, "BTCUSDT", now, client_id="bot-1")
    assert err.value.code == -2011
    with pytest.raises(ApiError) as err:
        eng.find(acc, "BTCUSDT", "999999", None)
    assert err.value.code == -2013
    # a market without trades (a bar without volume) fills nothing
    aapl = instruments["AAPLUSDT"]
    z = int(np.flatnonzero(aapl.volume == 0)[0])
    eng2, acc2 = engine(instruments, at(instruments, "AAPLUSDT", z))
    with pytest.raises(ApiError) as err:
        eng2.new_order(acc2, {"symbol": "AAPLUSDT", "side": "BUY", "type": "MARKET",
                              "quantity": str(aapl.min_qty * 100)}, at(instruments, "AAPLUSDT", z))  # fmt: skip
    assert err.value.code == -2020 and acc2.orders == {}


def test_order_states_move_only_as_the_table_allows():
    assert advance(OrderStatus.NEW, OrderStatus.FILLED) is OrderStatus.FILLED
    assert advance(OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED).is_open
    for final in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED):
        with pytest.raises(IllegalTransition, match=f"{final.value} cannot become"):
            advance(final, OrderStatus.FILLED)


def test_a_position_pays_funding_at_each_settlement(instruments):
    """A long held across two settlements pays ``qty x mark x rate`` at each (receives
    it when the rate is negative), the mark being the close of the bar that ends there;
    the stream says so with the balance only. The rates are chosen for the test (the
    recording has no funding history); the bars are real."""
    from dataclasses import replace

    eth = instruments["ETHUSDT"]
    i = 300
    times = np.array([eth.close_time[i + 1] + 1, eth.close_time[i + 9] + 1], dtype=np.int64)
    rates = np.array([0.0001, -0.00025])
    inst = {**instruments, "ETHUSDT": replace(eth, funding_time=times, funding_rate=rates)}
    now = int(eth.open_time[i]) + 1000
    eng, acc = engine(inst, now)
    eng.new_order(acc, {"symbol": "ETHUSDT", "side": "BUY", "type": "MARKET",
                        "quantity": "0.01"}, now)  # fmt: skip
    before = acc.wallet
    eng.advance(int(times[0]))
    first = -(Decimal("0.01") * d(eth.close[i + 1]) * Decimal("0.0001"))
    assert acc.wallet == before + first
    assert acc.events[-1]["a"]["m"] == "FUNDING_FEE" and acc.events[-1]["a"]["P"] == []
    eng.advance(int(times[1]) + 5_000_000)
    second = Decimal("0.01") * d(eth.close[i + 9]) * Decimal("0.00025")  # received
    assert acc.wallet == before + first + second
    funding = [Decimal(x["income"]) for x in acc.income if x["incomeType"] == "FUNDING_FEE"]
    assert funding == [first.quantize(Decimal("1e-8")), second.quantize(Decimal("1e-8"))]


def test_a_cross_account_below_its_maintenance_margin_is_liquidated(instruments):
    """An 18x long on ADAUSDT into a bar that fell over 6%: the equity at the bar's low
    is under 1% of the notional there, so every open order is cancelled (one resting on
    another symbol too) and the position closed at the low less the slippage, paying
    the taker and liquidation fees; a loss beyond the wallet is the insurance fund's."""
    ada = instruments["ADAUSDT"]
    k = next(i for i in range(len(ada.open)) if (ada.open[i] - ada.low[i]) / ada.open[i] > 0.06
             and ada.volume[i] > 0)  # fmt: skip
    now = at(instruments, "ADAUSDT", k)
    eng, acc = engine(instruments, now, balance="10")
    open_ = d(ada.open[k])
    qty = ((Decimal(180) / open_) / ada.step).to_integral_value(ROUND_FLOOR) * ada.step
    eng.new_order(acc, {"symbol": "ADAUSDT", "side": "BUY", "type": "MARKET",
                        "quantity": str(qty)}, now)  # fmt: skip
    sol = instruments["SOLUSDT"]  # a bid far under the market, on another symbol
    far = (d(sol.open[sol.bar_at(now)]) * Decimal("0.5")).quantize(sol.tick)
    some = (Decimal(6) / far / sol.step).to_integral_value(ROUND_CEILING) * sol.step
    resting = eng.new_order(acc, {"symbol": "SOLUSDT", "side": "BUY", "type": "LIMIT",
                                  "timeInForce": "GTC", "quantity": str(some),
                                  "price": str(far)}, now)  # fmt: skip
    entry = acc.positions["ADAUSDT"].entry
    eng.advance(int(ada.close_time[k]))
    assert acc.liquidations == 1 and acc.positions["ADAUSDT"].qty == 0
    assert resting.status is OrderStatus.CANCELED
    close = [o for o in acc.orders.values() if o.client_id.startswith("autoclose-")]
    fill = slipped(d(ada.low[k]), ada.tick, buying=False)
    assert len(close) == 1 and close[0].avg_price == fill
    loss = qty * (fill - entry)
    fees = qty * entry * COSTS.taker_fee + qty * fill * (COSTS.taker_fee + COSTS.liquidation_fee)
    left = Decimal(10) + loss - fees
    assert acc.wallet == max(left, Decimal(0))
    covered = [Decimal(x["income"]) for x in acc.income
               if x["incomeType"] == "INSURANCE_CLEAR" and x["symbol"] == ""]  # fmt: skip
    assert covered == ([-left.quantize(Decimal("1e-8"))] if left < 0 else [])


def test_every_bar_closing_at_a_moment_is_matched_before_any_account_is_liquidated(instruments):
    """A 19x long with a close-all stop just under its entry, in a bar that fell far:
    the stop fills first (the bar's own matching), even when another symbol whose bar
    closes at the same moment comes first in the engine's order; the account is not
    liquidated."""
    sym = next(s for s in sorted(instruments) if s > min(instruments))  # not the first
    inst = instruments[sym]
    k = next(i for i in range(len(inst.open)) if inst.volume[i] > 0
             and (inst.open[i] - inst.low[i]) / inst.open[i] > 0.06)  # fmt: skip
    now = at(instruments, sym, k)
    first = instruments[min(instruments)]
    assert int(inst.close_time[k]) in set(int(t) for t in first.close_time)  # same moment
    entry = slipped(d(inst.open[k]), inst.tick, buying=True)
    qty = ((Decimal(190) / entry) / inst.step).to_integral_value(ROUND_FLOOR) * inst.step
    eng, acc = engine(instruments, now, balance="10")
    eng.new_order(acc, {"symbol": sym, "side": "BUY", "type": "MARKET", "quantity": str(qty)}, now)
    stop = (entry * Decimal("0.995") / inst.tick).to_integral_value(ROUND_FLOOR) * inst.tick
    order = eng.new_order(acc, {"symbol": sym, "side": "SELL", "type": "STOP_MARKET",
                                "stopPrice": str(stop), "closePosition": "true"}, now + 1)  # fmt: skip
    eng.advance(int(inst.close_time[k]))
    assert order.status is OrderStatus.FILLED and acc.liquidations == 0
    assert acc.wallet > 0


def test_a_market_order_at_the_recordings_moment_walks_its_order_book(recording, instruments):
    """At the recording's own time (a frozen replay) the recorded book is the market: a
    buy larger than the best ask takes level after level, each a trade at its price."""
    book = recording.orderbooks["BTCUSDT"]
    asks = [(Decimal(p), Decimal(q)) for p, q in book["asks"]]
    qty = asks[0][1] + asks[1][1] + Decimal("0.005")  # two levels and part of a third
    now = int(recording.now_ms)
    eng, acc = engine(instruments, now, balance="5000")
    order = eng.new_order(acc, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                "quantity": str(qty)}, now)  # fmt: skip
    fills = [(Decimal(t["price"]), Decimal(t["qty"])) for t in acc.trades]
    assert fills == [asks[0], asks[1], (asks[2][0], Decimal("0.005"))]
    assert order.avg_price == sum(p * q for p, q in fills) / qty
    states = [e["o"]["X"] for e in acc.events if e["e"] == "ORDER_TRADE_UPDATE"]
    assert states == ["NEW", "PARTIALLY_FILLED", "PARTIALLY_FILLED", "FILLED"]
    # an hour before, the book is not the market: the bar's open with the slippage
    later = now - 3_600_000
    eng2, acc2 = engine(instruments, later)
    o = eng2.new_order(acc2, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                              "quantity": "0.002"}, later)  # fmt: skip
    btc = instruments["BTCUSDT"]
    assert o.avg_price == slipped(d(btc.open[btc.bar_at(later)]), btc.tick, buying=True)


def test_a_margin_call_warns_before_a_liquidation(instruments):
    """A long on ADAUSDT into a bar that fell over 6%, sized so that at the bar's low
    the maintenance margin is about 90% of the equity: a MARGIN_CALL at the bar's close
    with the position at that low, and no liquidation."""
    ada = instruments["ADAUSDT"]
    k = next(i for i in range(len(ada.open)) if (ada.open[i] - ada.low[i]) / ada.open[i] > 0.06
             and ada.volume[i] > 0)  # fmt: skip
    now = at(instruments, "ADAUSDT", k)
    balance, low = Decimal(10), d(ada.low[k])
    entry = slipped(d(ada.open[k]), ada.tick, buying=True)
    rate, fee = COSTS.maintenance_margin, COSTS.taker_fee
    # equity at the low = maintenance / 0.9, solved for the quantity
    qty = balance / (entry * (1 + fee) - low * (1 - rate / Decimal("0.9")))
    qty = (qty / ada.step).to_integral_value(ROUND_FLOOR) * ada.step
    eng, acc = engine(instruments, now, balance=str(balance))
    eng.new_order(acc, {"symbol": "ADAUSDT", "side": "BUY", "type": "MARKET",
                        "quantity": str(qty)}, now)  # fmt: skip
    assert acc.positions["ADAUSDT"].entry == entry
    eng.advance(int(ada.close_time[k]))
    equity = balance - qty * entry * fee + qty * (low - entry)
    maint = qty * low * rate
    assert Decimal("0.8") * equity <= maint < equity  # the warning zone
    calls = [e for e in acc.events if e["e"] == "MARGIN_CALL"]
    assert len(calls) == 1 and acc.liquidations == 0
    assert calls[0]["E"] == int(ada.close_time[k])
    assert calls[0]["p"][0]["mp"] == str(low) and calls[0]["p"][0]["pa"] == str(qty)


def test_a_limit_outside_a_declared_price_band_is_refused(instruments):
    """Where a symbol declares the PERCENT_PRICE filter (the multipliers here chosen for
    the test: the recording declares none), a limit price beyond the band around the
    price of the moment is refused with the documented codes."""
    from dataclasses import replace

    btc = replace(instruments["BTCUSDT"], price_up=Decimal("1.05"), price_down=Decimal("0.95"))
    now = at(instruments, "BTCUSDT", 300)
    eng, acc = engine({**instruments, "BTCUSDT": btc}, now)
    mark = d(btc.open[300])
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
             "quantity": "0.001"}  # fmt: skip
    for price, code in ((mark * Decimal("1.06"), -4016), (mark * Decimal("0.94"), -4024)):
        with pytest.raises(ApiError) as err:
            eng.new_order(acc, {**order, "price": str(price.quantize(btc.tick))}, now)
        assert err.value.code == code
    inside = eng.new_order(
        acc, {**order, "price": str((mark * Decimal("0.97")).quantize(btc.tick))}, now
    )
    assert inside.status is OrderStatus.NEW


def test_a_reduce_only_stop_larger_than_what_is_left_closes_what_is_left(instruments):
    """A reduce-only stop for the whole position, after another order closed part of
    it: when the stop triggers it closes what is left and the rest of it expires."""
    btc = instruments["BTCUSDT"]
    i = first_bar(btc, lambda i: btc.low[i] < btc.open[i] - 5 * float(btc.tick))
    now = at(instruments, "BTCUSDT", i)
    eng, acc = engine(instruments, now)
    eng.new_order(acc, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                        "quantity": "0.004"}, now)  # fmt: skip
    stop = (d(btc.low[i]) / btc.tick).to_integral_value(ROUND_CEILING) * btc.tick
    order = eng.new_order(acc, {"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET",
                                "stopPrice": str(stop), "quantity": "0.004",
                                "reduceOnly": "true"}, now + 1)  # fmt: skip
    eng.new_order(acc, {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET",
                        "quantity": "0.001", "reduceOnly": "true"}, now + 2)  # fmt: skip
    eng.advance(int(btc.close_time[i]))
    assert order.executed == Decimal("0.003") and order.status is OrderStatus.EXPIRED
    assert acc.positions["BTCUSDT"].qty == 0
    states = [e["o"]["X"] for e in acc.events
              if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["i"] == order.order_id]  # fmt: skip
    assert states == ["NEW", "PARTIALLY_FILLED", "EXPIRED"]


def test_the_liquidation_price_is_where_the_equity_meets_the_maintenance_margin(instruments):
    now = at(instruments, "BTCUSDT", 200)
    eng, acc = engine(instruments, now, balance="100")
    eng.new_order(acc, {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET",
                        "quantity": "0.01"}, now)  # fmt: skip
    pos = acc.positions["BTCUSDT"]
    p = eng.liquidation_price(acc, "BTCUSDT", now)
    assert p > pos.entry  # a short dies above its entry
    equity = acc.wallet + pos.qty * (p - pos.entry)
    assert abs(equity - eng.maintenance(pos.qty, p)) < Decimal("1e-9")
