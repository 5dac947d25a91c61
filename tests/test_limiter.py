"""The weight limiter never lets a rolling window exceed its budget."""

from __future__ import annotations

import asyncio

import pytest

from asterai.exchange.limiter import (
    RateLimit,
    WeightBudgetError,
    WeightLimiter,
    used_weight_from_headers,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def make(limit: int = 10, window: float = 1.0, **kw) -> tuple[WeightLimiter, FakeClock]:
    clock = FakeClock()
    rate = RateLimit(limit, window, "X-MBX-USED-WEIGHT-1S")
    return WeightLimiter(rate, clock=clock, wall=clock, sleep=clock.sleep, **kw), clock


def test_rate_limit_is_read_from_exchange_info() -> None:
    info = {
        "rateLimits": [
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 2400,
            },
        ]
    }
    assert RateLimit.from_exchange_info(info) == RateLimit(2400, 60.0, "X-MBX-USED-WEIGHT-1M")
    short = {
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "SECOND", "intervalNum": 2, "limit": 50}
        ]
    }
    assert RateLimit.from_exchange_info(short) == RateLimit(50, 2.0, "X-MBX-USED-WEIGHT-2S")
    with pytest.raises(ValueError, match="no REQUEST_WEIGHT"):
        RateLimit.from_exchange_info({"rateLimits": []})


def test_no_rolling_window_ever_exceeds_the_budget() -> None:
    limiter, clock = make(limit=10, window=1.0)
    sent: list[tuple[float, int]] = []

    async def go() -> None:
        for weight in [2, 5, 1, 2, 10, 3, 3, 3, 1, 2, 2, 5, 5, 1] * 5:
            await limiter.acquire(weight)
            sent.append((clock.now, weight))

    asyncio.run(go())
    for t, _ in sent:
        in_window = sum(w for s, w in sent if t - limiter.rate.window_s < s <= t)
        assert in_window <= 10


def test_uniform_requests_use_the_whole_budget() -> None:
    limiter, clock = make(limit=10, window=1.0)

    async def go() -> None:
        for _ in range(50):  # 100 weight: 10 full windows, the first one free
            await limiter.acquire(2)

    asyncio.run(go())
    assert clock.now - 1000.0 == pytest.approx(9 * limiter.span_s, abs=0.05)


def test_concurrent_acquires_respect_the_budget() -> None:
    limiter, clock = make(limit=20, window=1.0)
    stamps: list[tuple[float, int]] = []

    async def worker(weight: int) -> None:
        for _ in range(10):
            await limiter.acquire(weight)
            stamps.append((clock.now, weight))

    async def go() -> None:
        await asyncio.gather(*(worker(w) for w in (1, 2, 5, 10)))

    asyncio.run(go())
    for t, _ in stamps:
        assert sum(w for s, w in stamps if t - 1.0 < s <= t) <= 20


def test_server_count_above_our_own_is_external_weight_until_the_window_ends() -> None:
    limiter, clock = make(limit=10, window=1.0)
    clock.now = 1000.3  # 0.3 s into a clock-aligned window

    async def go() -> float:
        await limiter.acquire(2)
        limiter.observe(9)  # someone else on this IP used 7 in this window
        await limiter.acquire(2)  # 7 + 2 + 2 > 10: must wait for the next window
        return clock.now

    sent_at = asyncio.run(go())
    assert limiter.stats.external_weight == 7
    assert sent_at >= 1001.0


def test_other_clients_weight_is_seen_even_when_our_old_weight_is_still_in_the_ledger() -> None:
    """We sent 90 in one window; in the next, another client uses 50. The server's
    count (55 after our 5) is below our rolling ledger (95), yet 50 is external."""
    limiter, clock = make(limit=100, window=60.0, margin_s=0.5)
    clock.now = 60 * 1000 + 1.0

    async def go() -> list[float]:
        await limiter.acquire(90)
        clock.now = 60 * 1001 + 1.0  # next window
        await limiter.acquire(5)
        limiter.observe(55)
        sent = []
        for _ in range(10):
            await limiter.acquire(5)
            sent.append(clock.now)
        return sent

    sent = asyncio.run(go())
    assert limiter.stats.external_weight == 50
    in_window = [t for t in sent if t < 60 * 1002]
    assert 50 + 5 + 5 * len(in_window) <= 100, "the server's window would be crossed"
    assert len(in_window) == 9  # exactly the budget, not one request more


def test_a_server_count_within_our_own_weight_changes_nothing() -> None:
    limiter, clock = make(limit=10)
    clock.now = 1000.5

    async def go() -> None:
        await limiter.acquire(5)
        limiter.observe(3)

    asyncio.run(go())
    assert limiter.used() == 5 and limiter.stats.external_weight == 0


def test_a_count_seen_at_a_window_boundary_is_not_misattributed() -> None:
    limiter, clock = make(limit=10, margin_s=0.05)
    clock.now = 1000.99  # the count may belong to either window

    async def go() -> None:
        limiter.observe(9)

    asyncio.run(go())
    assert limiter.stats.external_weight == 0


def test_an_absurd_retry_after_is_clamped() -> None:
    limiter, clock = make(limit=100)

    async def go() -> None:
        limiter.pause(1e12)
        await limiter.acquire(1)

    start = clock.now
    asyncio.run(go())
    assert clock.now - start <= 5 * limiter.rate.window_s


def test_pause_blocks_every_request_until_it_ends() -> None:
    limiter, clock = make(limit=100)

    async def go() -> None:
        limiter.pause(3.0)
        await limiter.acquire(1)

    start = clock.now
    asyncio.run(go())
    assert clock.now - start >= 3.0


def test_a_request_heavier_than_the_budget_is_refused() -> None:
    limiter, _ = make(limit=5)
    with pytest.raises(WeightBudgetError, match="can never fit"):
        asyncio.run(limiter.acquire(10))


def test_used_weight_header_is_found_whatever_its_window() -> None:
    assert used_weight_from_headers({"X-MBX-USED-WEIGHT-1M": "17"}, "X-MBX-USED-WEIGHT-1M") == 17
    assert used_weight_from_headers({"x-mbx-used-weight-2s": "3"}, "X-MBX-USED-WEIGHT-1M") == 3
    assert used_weight_from_headers({}, "X-MBX-USED-WEIGHT-1M") is None
