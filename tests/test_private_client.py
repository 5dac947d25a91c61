"""Signed requests from the client's side (``exchange.private``) against the replay's
accounts over loopback: reads and cancels retried through the faults, a new order sent
once, and its unknown outcome settled by asking for it by client id."""

from __future__ import annotations

import asyncio

import pytest
from conftest import FAST_EXCHANGE

from asterai.config import ExchangeSettings
from asterai.exchange.client import AsterClient
from asterai.exchange.errors import APIError
from asterai.exchange.private import OutcomeUnknown, PrivateClient
from asterai.exchange.signing import V1Key, V3Key


@pytest.fixture
def exchange(recording):
    from asterai.exchange.replay import ReplayServer

    btc = recording.series("BTCUSDT", "1h")
    with ReplayServer(recording, clock_speed=0, play_from_ms=int(btc.open_time[-100]) + 1000,
                      accounts=1, balance="500", seed=5) as server:  # fmt: skip
        yield server


def keys(server) -> dict[str, V3Key | V1Key]:
    c = server.credentials[0]
    return {"v3": V3Key.of(c.user.address, c.api_wallet.private_key, signer=c.api_wallet.address),
            "v1": V1Key(c.api_key, c.api_secret)}  # fmt: skip


def run(server, scheme: str, work):
    async def go():
        async with AsterClient(server.base_url, ExchangeSettings(**FAST_EXCHANGE)) as client:
            return await work(PrivateClient(client, keys(server)[scheme]))

    return asyncio.run(go())


@pytest.mark.parametrize("scheme", ["v3", "v1"])
def test_an_order_placed_queried_and_the_account_read_with_either_signature(exchange, scheme):
    async def work(api: PrivateClient):
        placed = await api.new_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                     quantity="0.002", newClientOrderId="p-1",
                                     newOrderRespType="RESULT")  # fmt: skip
        found = await api.order("BTCUSDT", client_id="p-1")
        risk = await api.positions("BTCUSDT")
        balance = await api.balance()
        return placed, found, risk, balance

    placed, found, risk, balance = run(exchange, scheme, work)
    assert placed["status"] == found["status"] == "FILLED"
    assert risk[0]["positionAmt"] == "0.002" and float(balance[0]["balance"]) < 500


def test_reads_and_cancels_go_through_the_faults(exchange):
    """With a quarter of the requests faulted (5xx, dropped, truncated), reads and a
    cancel are retried until they answer."""

    async def work(api: PrivateClient):
        low = "50000.0"
        await api.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                            quantity="0.002", price=low, newClientOrderId="rest-1")  # fmt: skip
        exchange.set_faults("5xx=0.1,drop=0.1,truncate=0.05")
        try:
            reads = [await api.open_orders("BTCUSDT") for _ in range(10)]
            cancelled = await api.cancel("BTCUSDT", client_id="rest-1")
        finally:
            exchange.set_faults(None)
        return reads, cancelled

    reads, cancelled = run(exchange, "v3", work)
    assert all(len(r) == 1 for r in reads) and cancelled["status"] == "CANCELED"
    assert exchange.stats.snapshot()["faults"]  # the faults happened


@pytest.mark.parametrize(("fault", "placed"), [("lost=1", True), ("5xx=1", False)])
def test_a_new_order_whose_fate_is_unknown_is_asked_for_never_resent(exchange, fault, placed):
    """Sent once: a lost answer (applied) and a 5xx (refused before it was applied)
    both leave the client not knowing; ``OutcomeUnknown``, and the order asked for by
    its client id says which."""

    async def work(api: PrivateClient):
        exchange.set_faults(fault)
        try:
            with pytest.raises(OutcomeUnknown):
                await api.new_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                    quantity="0.002", newClientOrderId="u-1")  # fmt: skip
        finally:
            exchange.set_faults(None)
        try:
            return (await api.order("BTCUSDT", client_id="u-1"))["status"]
        except APIError as err:
            return err.code

    assert run(exchange, "v3", work) == ("FILLED" if placed else -2013)
    assert exchange.stats.snapshot()["paths"]["/fapi/v3/order"] == 2  # sent once, asked once


def test_a_refusal_is_an_api_error_with_its_code(exchange):
    async def work(api: PrivateClient):
        with pytest.raises(APIError) as err:
            await api.new_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002",
                                reduceOnly=True)  # fmt: skip
        return err.value.code

    assert run(exchange, "v1", work) == -2022


def test_an_answer_that_may_mean_the_order_exists_is_unknown_not_a_refusal(exchange):
    """-4116: the client id is already an open order's. The order sent may be that one
    (a resend of a lost request), so its fate is unknown until asked, never 'refused'."""

    async def work(api: PrivateClient):
        order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                 "quantity": "0.002", "price": "50000.0", "newClientOrderId": "dup-1"}  # fmt: skip
        await api.new_order(**order)
        with pytest.raises(OutcomeUnknown, match="-4116"):
            await api.new_order(**order)
        return (await api.order("BTCUSDT", client_id="dup-1"))["status"]

    assert run(exchange, "v3", work) == "NEW"


def test_a_request_held_by_the_rate_limiter_is_signed_when_it_leaves(exchange):
    """A request that waits for the weight budget longer than the signature's window
    (here a 1-second recvWindow and a 1.5-second wait) is still fresh on arrival: it is
    signed once the limiter lets it go, not before it waits (a restart that finds the
    IP's minute spent by its predecessor waited with stale signatures: -1021)."""
    c = exchange.credentials[0]

    async def go():
        async with AsterClient(exchange.base_url, ExchangeSettings(**FAST_EXCHANGE)) as client:
            api = PrivateClient(client, V1Key(c.api_key, c.api_secret), recv_window_ms=1000)
            client.limiter.pause(1.5)
            return await api.balance()

    assert run_async(go())[0]["asset"] == "USDT"


def run_async(coro):
    return asyncio.run(coro)


def test_the_order_pacer_spreads_a_burst_under_both_order_count_limits():
    """1,500 orders asked at once leave at most 90% of each limit in any window (270 in
    10 s, 1,080 a minute), none later than the windows require."""
    import numpy as np

    from asterai.exchange.private import OrderPacer

    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        await asyncio.sleep(0)

    pacer = OrderPacer(clock=lambda: now[0], sleep=sleep)

    async def burst() -> list[float]:
        out = []
        for _ in range(1500):
            pacer.done(await pacer.acquire())  # answered at once
            out.append(now[0])
        return out

    sent = asyncio.run(burst())
    times = np.asarray(sent)
    for window, limit in ((10.0, 270), (60.0, 1080)):
        # the orders in [t, t + window) from each order's time t
        inside = np.searchsorted(times, times + window, side="left") - np.arange(len(times))
        assert inside.max() <= limit, (window, inside.max())
    assert sent[269] == 0.0 and sent[270] == 10.0  # the first window full, then the next
    assert sent[1079] < 60.0 and sent[1080] >= 60.0  # the minute's limit binds there

    async def in_flight() -> float:
        """An order not answered yet counts in every window until it is."""
        slow = OrderPacer(clock=lambda: now[0], sleep=sleep)
        cells = [await slow.acquire() for _ in range(270)]
        now[0] += 30.0  # still unanswered
        waiting = asyncio.ensure_future(slow.acquire())
        await asyncio.sleep(0)
        assert not waiting.done()
        for c in cells:
            slow.done(c)
        waiting.cancel()
        return now[0]

    asyncio.run(in_flight())
