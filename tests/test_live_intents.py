"""Orders as intents journaled before they are sent (``live.intents``), against the
replay's accounts with its order faults: every intent ends in the state the exchange
says, an order is never sent twice, and one whose fate is unknown is asked for."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from conftest import FAST_EXCHANGE

from asterai.config import ExchangeSettings
from asterai.exchange.client import AsterClient
from asterai.exchange.private import PrivateClient
from asterai.exchange.signing import V3Key
from asterai.live.intents import (
    CLIENT_ID_RE,
    SEND_WINDOW_MS,
    IllegalMove,
    Intent,
    Intents,
    Leg,
    State,
    client_id,
    send,
    settle,
)


def test_a_client_id_is_what_the_order_is_for_and_nothing_else():
    one = client_id("0xabc", 1234, "1000BONKUSDT", Leg.STOP)
    assert one == client_id("0xabc", 1234, "1000BONKUSDT", Leg.STOP)  # recomputed after a crash
    assert CLIENT_ID_RE.match(one) and len(one) <= 36
    others = {client_id("0xabd", 1234, "1000BONKUSDT", Leg.STOP),
              client_id("0xabc", 1235, "1000BONKUSDT", Leg.STOP),
              client_id("0xabc", 1234, "BTCUSDT", Leg.STOP),
              client_id("0xabc", 1234, "1000BONKUSDT", Leg.TARGET)}  # fmt: skip
    assert one not in others and len(others) == 4


def test_an_intent_moves_only_as_the_table_allows(tmp_path):
    journal = Intents(tmp_path / "live.sqlite")
    intent = Intent(client_id("0xabc", 1, "BTCUSDT", Leg.ENTRY), 1, "BTCUSDT", Leg.ENTRY,
                    "BUY", "MARKET", "0.002")  # fmt: skip
    journal.record(intent)
    with pytest.raises(IllegalMove, match="journaled already"):
        journal.record(intent)
    journal.move(intent.client_id, State.SENT)
    journal.move(intent.client_id, State.FILLED, order_id=7)
    with pytest.raises(IllegalMove, match="FILLED cannot become CANCELED"):
        journal.move(intent.client_id, State.CANCELED)
    journal.close()
    again = Intents(tmp_path / "live.sqlite")  # what was committed is there
    assert again.state(intent.client_id) is State.FILLED and again.unsettled() == []


@pytest.fixture
def exchange(recording):
    from asterai.exchange.replay import ReplayServer

    btc = recording.series("BTCUSDT", "1h")
    with ReplayServer(recording, clock_speed=0, play_from_ms=int(btc.open_time[-100]) + 1000,
                      accounts=1, balance="500") as server:  # fmt: skip
        yield server


def entry(t: int) -> Intent:
    return Intent(client_id("0xacct", t, "BTCUSDT", Leg.ENTRY), t, "BTCUSDT", Leg.ENTRY,
                  "BUY", "MARKET", "0.002")  # fmt: skip


def run(server, work):
    c = server.credentials[0]
    key = V3Key.of(c.user.address, c.api_wallet.private_key, signer=c.api_wallet.address)

    async def go():
        async with AsterClient(server.base_url, ExchangeSettings(**FAST_EXCHANGE)) as client:
            return await work(PrivateClient(client, key))

    return asyncio.run(go())


def test_sent_answered_lost_and_never_sent_intents_all_end_as_the_exchange_says(exchange, tmp_path):
    """An order applied with its answer lost is found; one refused before it was
    applied stays unknown while it might still arrive, then is never placed once its
    request is older than the exchange's freshness window; an intent journaled and
    never sent is never placed at once; one sent before a crash is found."""
    now = [1_000_000]
    journal = Intents(tmp_path / "live.sqlite", clock=lambda: now[0])

    async def work(api):
        out = {"answered": await send(journal, api, entry(1))}
        exchange.set_faults("lost=1")  # applied, the answer lost
        out["lost"] = await send(journal, api, entry(2))
        exchange.set_faults("5xx=1")  # refused before it was applied, no answer either
        out["refused"] = await send(journal, api, entry(3))
        exchange.set_faults(None)
        journal.record(entry(4))  # journaled, then the process died before the send
        journal.record(entry(5))  # sent, then the process died before the answer's commit
        journal.move(entry(5).client_id, State.SENT)
        await api.new_order(**entry(5).params())
        rounds = [await settle(journal, api)]
        now[0] += SEND_WINDOW_MS  # still within the window: asked again, kept
        rounds.append(await settle(journal, api))
        now[0] += 1
        rounds.append(await settle(journal, api))
        return out, rounds

    out, rounds = run(exchange, work)
    assert out == {"answered": State.FILLED, "lost": State.UNKNOWN, "refused": State.UNKNOWN}
    assert rounds[0] == {entry(2).client_id: State.FILLED, entry(3).client_id: State.UNKNOWN,
                         entry(4).client_id: State.NOT_PLACED, entry(5).client_id: State.FILLED}  # fmt: skip
    assert rounds[1] == {entry(3).client_id: State.UNKNOWN}
    assert rounds[2] == {entry(3).client_id: State.NOT_PLACED}
    final = {r["client_id"]: r["state"] for r in journal.rows()}
    assert final == {entry(1).client_id: "FILLED", entry(2).client_id: "FILLED",
                     entry(3).client_id: "NOT_PLACED", entry(4).client_id: "NOT_PLACED",
                     entry(5).client_id: "FILLED"}  # fmt: skip
    account = exchange.accounts.engine.accounts[exchange.credentials[0].user.address]
    assert len(account.orders) == 3  # the exchange took three, each once: settling only asks
    assert str(account.positions["BTCUSDT"].qty) == "0.006"


def test_the_journal_against_the_exchange_names_every_difference(exchange, tmp_path):
    """The bot's entry and its resting stop agree with the exchange. Then a position
    opened by hand (and a resting order of the hand's) is reported and left alone, and
    the bot's stop cancelled by hand makes its position unprotected: the trader must
    stop new entries until a person looks."""
    from asterai.live.reconcile import reconcile

    journal = Intents(tmp_path / "live.sqlite")
    prefix = client_id("0xacct", 0, "X", Leg.ENTRY).split("-")[0]
    stop = Intent(client_id("0xacct", 1, "BTCUSDT", Leg.STOP), 1, "BTCUSDT", Leg.STOP, "SELL",
                  "STOP_MARKET", stop_price="50000.0", close_position=True)  # fmt: skip

    async def work(api):
        await send(journal, api, entry(1))
        await send(journal, api, stop)
        first = await reconcile(journal, api, prefix)
        await api.new_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.05",
                            newClientOrderId="by-hand-1")  # fmt: skip
        await api.new_order(symbol="ETHUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                            quantity="0.05", price="1000.00", newClientOrderId="by-hand-2")  # fmt: skip
        await api.cancel("BTCUSDT", client_id=stop.client_id)
        second = await reconcile(journal, api, prefix)
        return first, second

    first, second = run(exchange, work)
    assert first.differences == () and not first.fail_closed
    assert first.believed == first.held == {"BTCUSDT": Decimal("0.002")}
    kinds = {(d.kind, d.symbol) for d in second.differences}
    assert kinds == {("foreign position", "ETHUSDT"), ("foreign order", "ETHUSDT"),
                     ("stale order", "BTCUSDT"), ("unprotected", "BTCUSDT")}  # fmt: skip
    assert second.fail_closed
    assert any("by-hand-2" in line for line in second.lines())


def test_a_position_is_protected_on_the_exchange_and_one_leg_filling_cancels_the_other(
    exchange, tmp_path
):
    """An entry, then at once its close-all stop and its reduce-only target, resting on
    the exchange. The clock plays until one fills; the other is then cancelled. A
    stop the price has already passed is refused (-2021): the position is closed at
    market at once."""
    from asterai.live.protect import Position, close_at_market, protect, settle_legs

    journal = Intents(tmp_path / "live.sqlite")
    btc = exchange.accounts.engine.instruments["BTCUSDT"]
    price = Decimal(repr(float(btc.open[btc.bar_at(exchange.now_ms)])))

    def position(t: int, stop: Decimal, target: Decimal) -> Position:
        return Position("0xacct", t, "BTCUSDT", +1, "0.002", str(stop.quantize(btc.tick)),
                        str(target.quantize(btc.tick)))  # fmt: skip

    async def work(api):
        pos = position(1, price * Decimal("0.99"), price * Decimal("1.01"))
        await send(journal, api, entry(1))
        placed = await protect(journal, api, pos)
        closed = None
        for _ in range(48):
            exchange.clock.advance(3_600_000)
            closed = await settle_legs(journal, api, pos)
            if closed:
                break
        legs = {leg: journal.state(pos.leg(leg)) for leg in (Leg.STOP, Leg.TARGET)}
        # a stop above the market for a long: refused, and the position closed at once
        late = position(2, price * Decimal("10"), price * Decimal("11"))
        await send(journal, api, entry(2))
        refused = await protect(journal, api, late)
        # a time limit: the resting legs cancelled, then closed at market
        timed = position(3, price * Decimal("0.5"), price * Decimal("2"))
        await send(journal, api, entry(3))
        await protect(journal, api, timed)
        timed_out = await close_at_market(journal, api, timed, t=20)
        timed_legs = {leg: journal.state(timed.leg(leg)) for leg in (Leg.STOP, Leg.TARGET)}
        risk = await api.positions("BTCUSDT")
        return placed, closed, legs, refused, (timed_out, timed_legs), risk

    placed, closed, legs, refused, timed, risk = run(exchange, work)
    assert placed == {Leg.STOP: State.NEW, Leg.TARGET: State.NEW}
    assert closed is State.FILLED
    assert sorted(legs.values()) == sorted([State.FILLED, State.CANCELED])
    assert refused == {Leg.STOP: State.REJECTED, Leg.EXIT: State.FILLED}
    assert risk[0]["positionAmt"] == "0"
    assert (
        "-2021"
        in journal.rows("client_id = ?", (client_id("0xacct", 2, "BTCUSDT", Leg.STOP),))[0][
            "detail"
        ]
    )
    _ = close_at_market  # the refused stop's path above is close_at_market's


def test_the_account_the_step_sees_is_the_exchanges(exchange, tmp_path):
    """The bot's protected position, read back from the exchange into the kernel's
    account (side, size, entry price, stop, target, entry bar), while a position opened
    by hand on another symbol is not the bot's: that symbol is flat to the step."""
    from asterai.backtest import kernel
    from asterai.live.account import held_positions, load_positions
    from asterai.live.protect import Position, protect

    journal = Intents(tmp_path / "live.sqlite")
    btc = exchange.accounts.engine.instruments["BTCUSDT"]
    price = Decimal(repr(float(btc.open[btc.bar_at(exchange.now_ms)])))
    pos = Position("0xacct", 1, "BTCUSDT", +1, "0.002", str((price * Decimal("0.9")).quantize(btc.tick)),
                   str((price * Decimal("1.1")).quantize(btc.tick)))  # fmt: skip

    async def work(api):
        await send(journal, api, entry(1))
        await protect(journal, api, pos)
        await api.new_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.05",
                            newClientOrderId="by-hand-1")  # fmt: skip
        return await api.positions()

    positions = run(exchange, work)
    held, foreign = held_positions(journal, positions)
    assert foreign == {"ETHUSDT"} and set(held) == {"BTCUSDT"}
    h = held["BTCUSDT"]
    assert (h.side, h.qty, h.stop, h.target, h.entry_t) == (
        1,
        Decimal("0.002"),
        Decimal(pos.stop),
        Decimal(pos.target),
        1,
    )
    symbols = ["BTCUSDT", "ETHUSDT"]
    state = kernel.new_state(len(symbols), 50.0)
    state.side[1] = -1.0  # whatever was there before: the exchange's word replaces it
    load_positions(state, symbols, held)
    assert list(state.side) == [1.0, 0.0] and state.qty[0] == 0.002
    assert state.entry_px[0] == float(h.entry_price) and state.stop[0] == float(pos.stop)


def test_an_entry_whose_fill_is_learnt_late_is_protected_after_the_settle(exchange, tmp_path):
    """The entry's answer is lost: no stop can be placed then. The next settle learns it
    filled, and ``ensure_protected`` places its stop and target from the fill with the
    ATR journaled at the decision (the kernel's placement); a second pass places none."""
    from asterai.backtest.kernel import Params
    from asterai.barriers import place
    from asterai.live.execute import ensure_protected

    journal = Intents(tmp_path / "live.sqlite")
    p = Params(50.0, 0.01, 5, 0.00075, 0.0005, 0.0005, 0.5, 2.0, 1.0, 24, 5.0, 0.5)
    tick = float(exchange.accounts.engine.instruments["BTCUSDT"].tick)
    late = Intent(client_id("0xacct", 7, "BTCUSDT", Leg.ENTRY), 7, "BTCUSDT", Leg.ENTRY, "BUY",
                  "MARKET", "0.002", atr=500.0)  # fmt: skip

    async def work(api):
        exchange.set_faults("lost=1")
        try:
            assert await send(journal, api, late) is State.UNKNOWN
        finally:
            exchange.set_faults(None)
        await settle(journal, api)
        positions = await api.positions()
        first = await ensure_protected(journal, api, "0xacct", positions, {"BTCUSDT": tick}, p)
        second = await ensure_protected(journal, api, "0xacct", positions, {"BTCUSDT": tick}, p)
        return first, second

    first, second = run(exchange, work)
    assert (first, second) == (["BTCUSDT"], [])
    fill = float(journal.rows("client_id = ?", (late.client_id,))[0]["avg_price"])
    stop, target = place(fill, 1.0, 500.0, p.tp_atr, p.sl_atr, tick)
    legs = {r["leg"]: r for r in journal.rows("leg IN ('s', 't')")}
    assert legs["s"]["state"] == legs["t"]["state"] == "NEW"
    assert float(legs["s"]["stop_price"]) == stop and float(legs["t"]["price"]) == target


def test_a_position_is_the_bots_only_when_the_journal_holds_exactly_it(exchange, tmp_path):
    """The bot's long closed by its exit; then a long opened by hand on the same symbol,
    on the side of the bot's old entry: not the bot's (no time limit may close it), and
    the symbol is not traded. Added to by hand, a bot position is disputed the same way."""
    from asterai.live.account import held_positions
    from asterai.live.protect import Position, close_at_market

    journal = Intents(tmp_path / "live.sqlite")
    pos = Position("0xacct", 1, "BTCUSDT", +1, "0.002", "", "")

    async def work(api):
        await send(journal, api, entry(1))
        await close_at_market(journal, api, pos, t=5)
        await api.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010",
                            newClientOrderId="by-hand-1")  # fmt: skip
        after_hand = await api.positions()
        await send(journal, api, entry(9))  # the bot buys again, on top of the hand's
        return after_hand, await api.positions()

    after_hand, on_top = run(exchange, work)
    held, foreign = held_positions(journal, after_hand)
    assert held == {} and foreign == {"BTCUSDT"}
    held, foreign = held_positions(journal, on_top)
    assert held == {} and foreign == {"BTCUSDT"}  # 0.012 held, 0.002 the bot's: disputed


def test_a_bar_redone_after_a_crash_sends_nothing_twice(exchange, tmp_path):
    """The same decisions sent again (the process died after sending them and the bar
    is redone): each intent is journaled already, so nothing goes out again."""
    from asterai.live.protect import Position, protect

    journal = Intents(tmp_path / "live.sqlite")
    pos = Position("0xacct", 1, "BTCUSDT", +1, "0.002", "50000.0", "200000.0")

    async def work(api):
        first = [await send(journal, api, entry(1)), await protect(journal, api, pos)]
        again = [await send(journal, api, entry(1)), await protect(journal, api, pos)]
        return first, again

    first, again = run(exchange, work)
    assert first == again
    account = exchange.accounts.engine.accounts[exchange.credentials[0].user.address]
    assert len(account.orders) == 3  # the entry, its stop, its target: once each
