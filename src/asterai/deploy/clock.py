"""The exchange's clock as the follower keeps it between answers, and the one wait
the follower's loops use (``first_of``)."""

from __future__ import annotations

import asyncio
import time


async def first_of(events: list[asyncio.Event | None], timeout_s: float) -> bool:
    """Wait until one of ``events`` (None: left out) is set or ``timeout_s`` passes;
    whether one was set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events if e is not None]
    try:
        done, _ = await asyncio.wait(waits, timeout=max(timeout_s, 0.0),
                                     return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    finally:
        for w in waits:
            w.cancel()
    return bool(done)


class Clock:
    """The exchange's clock: its last answer plus the local time elapsed since, times
    ``rate`` (1 in the service; a test's accelerated replay runs faster)."""

    def __init__(self, rate: float = 1.0) -> None:
        self.rate = rate
        # one tuple, replaced whole: the trader's worker thread reads it while the
        # streams' pushes sync it on the event loop
        self._at: tuple[int, float] | None = None

    def sync(self, server_ms: int) -> None:
        self._at = (int(server_ms), time.monotonic())

    def now_ms(self) -> int | None:
        at = self._at
        if at is None:
            return None
        return at[0] + int((time.monotonic() - at[1]) * 1000 * self.rate)
