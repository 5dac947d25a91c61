"""Weight-aware request limiter.

The exchange counts request weight per IP in fixed windows (one minute on the
real exchange) and answers 429 past its limit. The limiter keeps its own ledger
of the weight it sent over a *rolling* window, which is never looser than the
server's fixed one: every fixed window lies inside some rolling window, so a
ledger that keeps each rolling window at or under the limit keeps the server's
windows there too. The rolling window is widened by a small margin to cover
the time a request spends in flight (the server counts it on arrival, the
ledger on departure): twice the recent worst round trip, at least 1% of the
window and at most 5% of it (5% until a round trip has been measured).

The server's own count (``X-MBX-USED-WEIGHT-1M``) corrects the ledger upwards:
when it reports more than the ledger holds, someone else shares the IP, and the
difference is booked as external weight.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asterai.exchange.weights import DEFAULT_WEIGHT_LIMIT

_UNIT_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}
_UNIT_LETTER = {"SECOND": "S", "MINUTE": "M", "HOUR": "H", "DAY": "D"}
_HEADER_RE = re.compile(r"^x-mbx-used-weight-(\d+)([smhd])$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The REQUEST_WEIGHT limit the exchange declares."""

    limit: int
    window_s: float
    header: str

    @classmethod
    def default(cls) -> RateLimit:
        return cls(DEFAULT_WEIGHT_LIMIT, 60.0, "X-MBX-USED-WEIGHT-1M")

    @classmethod
    def from_exchange_info(cls, info: dict[str, Any]) -> RateLimit:
        """Read the REQUEST_WEIGHT entry of ``exchangeInfo.rateLimits``."""
        for entry in info.get("rateLimits") or []:
            if entry.get("rateLimitType") != "REQUEST_WEIGHT":
                continue
            unit = str(entry.get("interval", "")).upper()
            num = int(entry.get("intervalNum", 1))
            if unit not in _UNIT_SECONDS or num < 1:
                raise ValueError(f"exchangeInfo declares an unknown rate-limit interval: {entry}")
            return cls(
                limit=int(entry["limit"]),
                window_s=float(num * _UNIT_SECONDS[unit]),
                header=f"X-MBX-USED-WEIGHT-{num}{_UNIT_LETTER[unit]}",
            )
        raise ValueError("exchangeInfo declares no REQUEST_WEIGHT rate limit")


def used_weight_from_headers(headers: Any, header: str) -> int | None:
    """The server's used-weight count from response headers, if present."""
    value = headers.get(header)
    if value is None:
        for name, val in headers.items():
            if _HEADER_RE.match(name):
                value = val
                break
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


@dataclass(slots=True)
class LimiterStats:
    weight_sent: int = 0
    requests: int = 0
    waits: int = 0
    waited_s: float = 0.0
    external_weight: int = 0
    max_server_used: int = 0


class WeightLimiter:
    """Never lets the weight sent in any rolling window exceed the budget."""

    def __init__(
        self,
        rate: RateLimit,
        *,
        safety: float = 1.0,
        margin_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.budget = max(1, int(rate.limit * safety))
        self._fixed_margin = margin_s
        self._latency_s: float | None = None
        self.margin_s = self._margin()
        self.span_s = rate.window_s + self.margin_s
        self._clock = clock
        self._sleep = sleep
        self._ledger: deque[tuple[float, int]] = deque()
        self._used = 0
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.stats = LimiterStats()

    def _margin(self) -> float:
        if self._fixed_margin is not None:
            return self._fixed_margin
        window = self.rate.window_s
        if self._latency_s is None:
            return 0.05 * window
        return min(0.05 * window, max(0.01 * window, 2 * self._latency_s))

    def note_latency(self, seconds: float) -> None:
        """Widen (or, slowly, narrow) the in-flight margin from a measured round trip."""
        previous = self._latency_s or 0.0
        self._latency_s = max(seconds, 0.98 * previous)
        self.margin_s = self._margin()
        self.span_s = self.rate.window_s + self.margin_s

    # -- ledger -------------------------------------------------------------
    def _expire(self, now: float) -> None:
        cutoff = now - self.span_s
        while self._ledger and self._ledger[0][0] <= cutoff:
            self._used -= self._ledger.popleft()[1]

    def used(self) -> int:
        """Weight booked in the current rolling window."""
        self._expire(self._clock())
        return self._used

    def _wait_for(self, weight: int, now: float) -> float:
        if now < self._paused_until:
            return self._paused_until - now
        excess = self._used + weight - self.budget
        if excess <= 0:
            return 0.0
        freed = 0
        for t, w in self._ledger:
            freed += w
            if freed >= excess:
                return max(t + self.span_s - now, 1e-4)
        return self.span_s

    async def acquire(self, weight: int) -> None:
        """Wait until ``weight`` fits in the window, then book it."""
        if weight > self.budget:
            raise ValueError(
                f"a request of weight {weight} can never fit a budget of {self.budget}"
            )
        async with self._lock:
            while True:
                now = self._clock()
                self._expire(now)
                wait = self._wait_for(weight, now)
                if wait <= 0:
                    self._ledger.append((now, weight))
                    self._used += weight
                    self.stats.weight_sent += weight
                    self.stats.requests += 1
                    return
                self.stats.waits += 1
                self.stats.waited_s += wait
                await self._sleep(wait)

    # -- corrections from the server ----------------------------------------
    def observe(self, server_used: int) -> None:
        """Book the part of the server's count that the ledger does not hold."""
        now = self._clock()
        self._expire(now)
        self.stats.max_server_used = max(self.stats.max_server_used, server_used)
        if server_used > self._used:
            extra = server_used - self._used
            self._ledger.append((now, extra))
            self._used += extra
            self.stats.external_weight += extra

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (after a 429's ``Retry-After``)."""
        self._paused_until = max(self._paused_until, self._clock() + max(seconds, 0.0))
