"""Weight-aware request limiter.

The exchange counts request weight per IP in fixed windows (one minute on the
real exchange, aligned to the clock) and answers 429 past its limit. The limiter
keeps its own ledger of the weight it sent over a *rolling* window, which is never
looser than the server's fixed one: every fixed window lies inside some rolling
window, so a ledger that keeps each rolling window at or under the limit keeps the
server's windows there too. The rolling window is widened by a margin for the
time a request spends in flight (the server counts it on arrival, the ledger on
departure): twice the recent worst round trip, at least 1% and at most 5% of the
window (5% until a round trip has been measured).

The server's own count (``X-MBX-USED-WEIGHT-1M``) reveals weight that others
sharing the IP have used. Each count is attributed to the clock-aligned window it
was observed in (counts observed within the margin of a window boundary are
ambiguous and skipped); what it holds beyond this client's own weight in that
window is external, and while that window lasts, external + own + the next
request must fit the budget as well.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asterai.exchange.errors import ExchangeError
from asterai.exchange.weights import DEFAULT_WEIGHT_LIMIT

#: A Retry-After longer than this many windows is clamped (a 429 never lasts longer).
MAX_PAUSE_WINDOWS = 5

_UNIT_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}
_UNIT_LETTER = {"SECOND": "S", "MINUTE": "M", "HOUR": "H", "DAY": "D"}
_HEADER_RE = re.compile(r"^x-mbx-used-weight-(\d+)([smhd])$", re.IGNORECASE)


class WeightBudgetError(ExchangeError):
    """A single request heavier than the whole declared budget: it can never be sent."""


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
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.budget = max(1, int(rate.limit * safety))
        self._fixed_margin = margin_s
        self._latency_s: float | None = None
        self.margin_s = self._margin()
        self.span_s = rate.window_s + self.margin_s
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._ledger: deque[tuple[float, float, int]] = deque()  # (clock, wall, weight)
        self._used = 0
        self._external: dict[int, int] = {}  # clock-aligned window index -> external weight
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
            self._used -= self._ledger.popleft()[2]

    def used(self) -> int:
        """Weight booked in the current rolling window."""
        self._expire(self._clock())
        return self._used

    def _window(self, wall: float) -> tuple[int, float]:
        """Index of the clock-aligned window holding ``wall`` and the seconds into it."""
        index = int(wall // self.rate.window_s)
        return index, wall - index * self.rate.window_s

    def _own_since(self, wall_from: float) -> int:
        return sum(w for _, sent, w in self._ledger if sent >= wall_from)

    def _wait_for(self, weight: int, now: float) -> float:
        if now < self._paused_until:
            return self._paused_until - now
        wall = self._wall()
        index, into = self._window(wall)
        external = self._external.get(index, 0)
        if external:
            own = self._own_since(index * self.rate.window_s - self.margin_s)
            if external + own + weight > self.budget:
                return self.rate.window_s - into + 1e-3
        excess = self._used + weight - self.budget
        if excess <= 0:
            return 0.0
        freed = 0
        for t, _, w in self._ledger:
            freed += w
            if freed >= excess:
                return max(t + self.span_s - now, 1e-4)
        return self.span_s

    async def acquire(self, weight: int) -> None:
        """Wait until ``weight`` fits in the window, then book it."""
        if weight > self.budget:
            raise WeightBudgetError(
                f"a request of weight {weight} can never fit the exchange's declared budget of "
                f"{self.budget} per {self.rate.window_s:g} s"
            )
        async with self._lock:
            while True:
                now = self._clock()
                self._expire(now)
                wait = self._wait_for(weight, now)
                if wait <= 0:
                    self._ledger.append((now, self._wall(), weight))
                    self._used += weight
                    self.stats.weight_sent += weight
                    self.stats.requests += 1
                    return
                self.stats.waits += 1
                self.stats.waited_s += wait
                await self._sleep(wait)

    # -- corrections from the server ----------------------------------------
    def observe(self, server_used: int) -> None:
        """Learn external weight from the server's count for the current window."""
        self._expire(self._clock())
        self.stats.max_server_used = max(self.stats.max_server_used, server_used)
        index, into = self._window(self._wall())
        if into < self.margin_s or self.rate.window_s - into < self.margin_s:
            return  # too close to a boundary to know which window the count belongs to
        own = self._own_since(index * self.rate.window_s - self.margin_s)
        external = server_used - own
        if external > self._external.get(index, 0):
            self.stats.external_weight += external - self._external.get(index, 0)
            self._external = {index: external}

    def adopt(self, other: WeightLimiter) -> None:
        """Carry the weight ``other`` booked (a limiter replaced by a new declared limit)."""
        self._ledger = deque(other._ledger)
        self._used = other._used
        self._expire(self._clock())
        self._paused_until = other._paused_until

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (after a 429's ``Retry-After``)."""
        seconds = min(max(seconds, 0.0), MAX_PAUSE_WINDOWS * self.rate.window_s)
        self._paused_until = max(self._paused_until, self._clock() + seconds)
