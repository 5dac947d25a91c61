"""The exchange's per-IP request-weight rule, enforced by the replay.

Fixed windows aligned to wall-clock time; a request that would cross the limit is
answered 429 with ``Retry-After`` and not counted; a client that sends more than
``ban_after`` further requests in the same window after a 429 is banned (418) for
``ban_seconds``. The weight of each request comes from
:func:`asterai.exchange.weights.endpoint_weight` (see ``market.py``).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class _Decision:
    status: int  # 200 (admitted), 429 or 418
    used: int
    retry_after: int = 0
    banned_until_ms: int = 0


class WeightLimiter:
    """The exchange's per-IP request-weight rule (one IP: loopback)."""

    def __init__(self, window_seconds: float, limit: int, ban_after: int, ban_seconds: float):
        self.window = float(window_seconds)
        self.limit = int(limit)
        self.ban_after = int(ban_after)
        self.ban_seconds = float(ban_seconds)
        self._lock = threading.Lock()
        self._window_id: int | None = None
        self._used = 0
        self._after_429: int | None = None  # further requests since a 429 in this window
        self._banned_until = 0.0

    def _roll(self, now: float) -> None:
        wid = math.floor(now / self.window)
        if wid != self._window_id:
            self._window_id = wid
            self._used = 0
            self._after_429 = None

    def used(self) -> int:
        with self._lock:
            self._roll(time.time())
            return self._used

    def admit(self, weight: int) -> _Decision:
        with self._lock:
            now = time.time()
            self._roll(now)
            if now < self._banned_until:
                return self._ban_decision(now)
            if self._after_429 is not None:
                self._after_429 += 1
                if self._after_429 > self.ban_after:
                    self._banned_until = now + self.ban_seconds
                    self._after_429 = None
                    return self._ban_decision(now)
            if self._used + weight > self.limit:
                if self._after_429 is None:
                    self._after_429 = 0
                window_end = (self._window_id + 1) * self.window
                retry = max(1, math.ceil(window_end - now))
                return _Decision(429, self._used, retry)
            self._used += weight
            return _Decision(200, self._used)

    def _ban_decision(self, now: float) -> _Decision:
        retry = max(1, math.ceil(self._banned_until - now))
        return _Decision(418, self._used, retry, int(self._banned_until * 1000))
