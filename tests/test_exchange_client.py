"""The REST client's error mapping and retries, on an injected transport.

Faults that a real exchange produces on demand only in the replay server are
tested end to end in test_collector.py; here each status is pinned one by one.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from asterai.config import ExchangeSettings
from asterai.exchange.client import AsterClient, Tally, parse_klines, use_tally
from asterai.exchange.errors import (
    APIError,
    ExchangeError,
    InvalidInterval,
    InvalidSymbol,
    IPBanned,
    RetriesExhausted,
    Unreachable,
)
from asterai.exchange.limiter import RateLimit

FAST = ExchangeSettings(backoff_base_s=0.001, backoff_max_s=0.005, max_retries=3)


@pytest.fixture(autouse=True)
def nothing_answered_yet():
    """Each test starts in a process where the test exchange has never answered."""
    from asterai.exchange import client

    client._ANSWERED.clear()
    yield
    client._ANSWERED.clear()


def scripted(*replies: httpx.Response | Exception):
    """A transport answering with ``replies`` in order; records each request."""
    seen: list[httpx.Request] = []
    queue = list(replies)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    return httpx.MockTransport(handler), seen


def ok(data, used: int = 1) -> httpx.Response:
    return httpx.Response(200, json=data, headers={"X-MBX-USED-WEIGHT-1M": str(used)})


def run(coro_fn, transport, settings: ExchangeSettings = FAST):
    async def go():
        async with AsterClient("http://exchange.test", settings, transport=transport) as client:
            return await coro_fn(client), client

    return asyncio.run(go())


def test_server_time_is_the_exchange_clock() -> None:
    transport, seen = scripted(ok({"serverTime": 1760502565855}))
    now, _ = run(lambda c: c.server_time(), transport)
    assert now == 1760502565855
    assert seen[0].url.path == "/fapi/v1/time"


def test_429_waits_retry_after_then_succeeds_and_is_counted() -> None:
    transport, seen = scripted(
        httpx.Response(
            429, json={"code": -1003, "msg": "Too many requests"}, headers={"Retry-After": "0"}
        ),
        ok({"serverTime": 1}),
    )
    _, client = run(lambda c: c.server_time(), transport)
    assert len(seen) == 2
    assert client.stats.rate_limited == 1


def test_418_stops_at_once_and_nothing_more_is_sent() -> None:
    transport, seen = scripted(
        httpx.Response(
            418,
            json={"code": -1003, "msg": "Way too many requests; IP banned"},
            headers={"Retry-After": "120"},
        ),
        ok({}),
    )

    async def twice(client: AsterClient):
        with pytest.raises(IPBanned, match="banned") as first:
            await client.ping()
        with pytest.raises(IPBanned):
            await client.ping()
        return first.value

    err, client = run(twice, transport)
    assert len(seen) == 1, "a banned client must not send another request"
    assert err.retry_after == 120
    assert client.stats.banned == 1


def test_a_ban_ends_when_its_retry_after_has_passed() -> None:
    """A long-running process (the service, the paper trader) resumes after a ban: no
    request before the server's Retry-After has passed, then requests go again."""
    transport, seen = scripted(
        httpx.Response(418, json={"code": -1003, "msg": "banned"}, headers={"Retry-After": "1"}),
        ok({}),
    )

    async def after(client: AsterClient):
        with pytest.raises(IPBanned):
            await client.ping()
        with pytest.raises(IPBanned):
            await client.ping()  # still banned: nothing sent
        await asyncio.sleep(1.05)
        return await client.ping()

    _, client = run(after, transport)
    assert len(seen) == 2 and client.stats.banned == 1


def test_5xx_is_retried_with_backoff() -> None:
    transport, seen = scripted(
        httpx.Response(502, text="bad gateway"), httpx.Response(503, text=""), ok([])
    )
    tally = Tally()

    async def go(client: AsterClient):
        use_tally(tally)
        return (await client.request("ping")).data

    data, client = run(go, transport)
    assert data == [] and len(seen) == 3
    assert client.stats.retries == 2 and tally.retries == 2 and tally.requests == 3


def test_persistent_temporary_failure_ends_in_a_clear_error() -> None:
    transport, seen = scripted(httpx.Response(500, text="oops"))
    with pytest.raises(RetriesExhausted, match="failed after 4 attempts.*HTTP 500"):
        run(lambda c: c.ping(), transport)
    assert len(seen) == 4  # one try plus max_retries=3


def test_unparseable_body_is_retried() -> None:
    transport, seen = scripted(httpx.Response(200, content=b'[[1760000000000, "1.0"'), ok([]))
    data, _ = run(lambda c: c.request("klines", {"symbol": "BTCUSDT", "interval": "1h"}), transport)
    assert len(seen) == 2


def test_dropped_connection_is_retried() -> None:
    transport, seen = scripted(httpx.RemoteProtocolError("peer closed connection"), ok({}))
    run(lambda c: c.ping(), transport)
    assert len(seen) == 2


def test_unreachable_base_url_names_the_url() -> None:
    transport, _ = scripted(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(Unreachable, match="cannot reach http://exchange.test"):
        run(lambda c: c.ping(), transport)


@pytest.mark.parametrize(
    ("code", "msg", "cls"),
    [
        (-1121, "Invalid symbol.", InvalidSymbol),
        (-1120, "Invalid interval.", InvalidInterval),
        (-1130, "Data sent for parameter 'limit' is not valid.", APIError),
    ],
)
def test_api_errors_carry_the_exchange_code_and_message_and_are_not_retried(code, msg, cls) -> None:
    transport, seen = scripted(httpx.Response(400, json={"code": code, "msg": msg}))
    with pytest.raises(cls) as info:
        run(lambda c: c.klines("NOPEUSDT", "1h"), transport)
    assert info.value.code == code and info.value.msg == msg and info.value.status == 400
    assert len(seen) == 1


def test_weight_limit_is_adopted_from_exchange_info() -> None:
    info = {
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "SECOND",
                "intervalNum": 5,
                "limit": 100,
            }
        ],
        "symbols": [],
    }
    transport, _ = scripted(ok(info))
    _, client = run(lambda c: c.load_exchange_info(), transport)
    assert client.rate_limit.limit == 100 and client.rate_limit.window_s == 5.0
    assert client.limiter.budget == 100


def test_klines_request_carries_the_weight_of_its_limit() -> None:
    transport, seen = scripted(ok([]))
    tally = Tally()

    async def go(client: AsterClient):
        use_tally(tally)
        await client.klines("BTCUSDT", "1h", start_ms=0, end_ms=10, limit=499)

    run(go, transport)
    assert dict(seen[0].url.params) == {
        "symbol": "BTCUSDT",
        "interval": "1h",
        "startTime": "0",
        "endTime": "10",
        "limit": "499",
    }
    assert tally.weight == 2


def test_parse_klines_keeps_nulls_missing() -> None:
    rows = json.loads(
        '[[1, "1.5", "2", "1", "1.75", "10", 3600000, "17.5", null, "4", null, null]]'
    )
    cols = parse_klines(rows)
    assert cols["open"][0] == 1.5 and cols["trades"][0] == -1
    assert (
        cols["taker_buy_base"][0] == 4.0
        and cols["taker_buy_quote"][0] != cols["taker_buy_quote"][0]
    )


def test_exchange_info_without_a_weight_limit_is_a_clear_error() -> None:
    transport, _ = scripted(ok({"rateLimits": [], "symbols": []}))
    with pytest.raises(ExchangeError, match="no usable REQUEST_WEIGHT rate limit"):
        run(lambda c: c.load_exchange_info(), transport)


def test_a_non_finite_retry_after_is_ignored() -> None:
    transport, seen = scripted(
        httpx.Response(
            429, json={"code": -1003, "msg": "slow down"}, headers={"Retry-After": "inf"}
        ),
        ok({"serverTime": 1}),
    )
    fast = ExchangeSettings(backoff_base_s=0.001, backoff_max_s=0.005, max_retries=3)

    async def go(client: AsterClient):
        client.set_rate_limit(RateLimit(10, 0.05, "X-MBX-USED-WEIGHT-1S"))
        return await client.server_time()

    now, _ = run(go, transport, fast)
    assert now == 1 and len(seen) == 2


def test_a_requests_retries_are_bounded_in_time_too() -> None:
    # many retries allowed, a tenth of a second of backoff: the time budget ends it
    budget = ExchangeSettings(
        backoff_base_s=0.01, backoff_max_s=0.02, max_retries=100, retry_budget_s=0.1
    )
    transport, seen = scripted(httpx.Response(503, text="maintenance"))
    with pytest.raises(RetriesExhausted) as caught:
        run(lambda c: c.request("klines", {"symbol": "BTCUSDT", "interval": "1h"}), transport,
            budget)  # fmt: skip
    err = caught.value
    # no backoff is started that would end past the budget; the time measured also holds
    # the last attempt itself and the scheduler's lateness (a loaded machine: a few ms)
    assert err.waited_s <= 0.1 + 0.05 and 5 < err.attempts < 100 and len(seen) == err.attempts
    # the message names the endpoint, the attempts, the time and the last error
    text = str(err)
    assert "GET /fapi/v1/klines" in text and f"after {err.attempts} attempts" in text
    assert " s; the last error: HTTP 503" in text


def test_a_short_outage_is_waited_out() -> None:
    transport, seen = scripted(*[httpx.Response(502, text="")] * 8, ok({"serverTime": 7}))
    settings = ExchangeSettings(backoff_base_s=0.001, backoff_max_s=0.002, retry_budget_s=5.0)
    now, client = run(lambda c: c.server_time(), transport, settings)
    assert now == 7 and len(seen) == 9 and client.stats.retries == 8


def test_refused_before_any_answer_is_unreachable_within_a_few_tries() -> None:
    settings = ExchangeSettings(
        backoff_base_s=0.001, backoff_max_s=0.002, max_retries=30, connect_retries=2
    )
    transport, seen = scripted(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(Unreachable, match="cannot reach http://exchange.test"):
        run(lambda c: c.ping(), transport, settings)
    assert len(seen) == 3  # the first try and connect_retries=2


def test_refused_after_the_exchange_answered_is_an_outage_and_waited_out() -> None:
    settings = ExchangeSettings(
        backoff_base_s=0.001, backoff_max_s=0.002, max_retries=30, connect_retries=2
    )
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    transport, seen = scripted(ok({}), *[refused] * 6, ok({"serverTime": 9}))

    async def go(client: AsterClient):
        await client.ping()  # the exchange answered once: a refusal now is an outage
        return await client.server_time()

    now, _ = run(go, transport, settings)
    assert now == 9 and len(seen) == 8


def test_long_running_processes_on_one_ip_stay_under_its_limit_together(recording) -> None:
    """The exchange counts weight per IP. The service, the paper trader and live trading
    each take their share (``exchange.follower_share``), so three of them sending as fast
    as their limiters allow draw no 429 (and so no ban); three that each took the whole
    budget, as before, do."""
    from asterai.exchange.replay import ReplayServer

    async def three_processes(url: str, settings: ExchangeSettings) -> None:
        async def one() -> None:
            async with AsterClient(url, settings) as client:
                await client.load_exchange_info()  # adopts the declared 30 a second
                try:
                    for _ in range(25):
                        await client.klines("BTCUSDT", "1h", limit=5)
                except IPBanned:
                    pass  # the greedy ones may be banned too: the 429s were counted

        await asyncio.gather(one(), one(), one())

    shared = ExchangeSettings(backoff_base_s=0.05).following()
    assert shared.weight_safety == pytest.approx(0.33)
    with ReplayServer(recording, window_seconds=1, weight_limit=30) as server:
        asyncio.run(three_processes(server.base_url, shared))
        assert server.stats.sent_429 == 0 and server.stats.sent_418 == 0
    greedy = ExchangeSettings(backoff_base_s=0.05)
    with ReplayServer(recording, window_seconds=1, weight_limit=30) as server:
        asyncio.run(three_processes(server.base_url, greedy))
        assert server.stats.sent_429 > 0
