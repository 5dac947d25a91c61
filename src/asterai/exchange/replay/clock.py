"""The replay's running clock (:class:`PlayClock`): a recording played forward as if
live, paused, stepped or with one symbol's bars late."""

from __future__ import annotations

import threading
import time


class PlayClock:
    """The replay's clock when it plays a recording forward as if live.

    ``now_ms()`` is the exchange's time (``/fapi/v1/time``): ``start_ms`` plus the wall
    time since the start times ``speed`` (3600: an hour a second); ``speed`` 0 is a clock
    that moves only when told (``advance``, ``set``), for tests that step it bar by bar.
    ``data_ms()`` is what the market has published: the same time, except while the
    data is paused (``pause``: a stalled feed; the exchange's time goes on, no bar
    closes), and after ``resume`` it is the exchange's time again, every bar that
    closed meanwhile served at once. ``lag(symbol, ms)`` publishes one symbol's klines
    ``ms`` after the others' (an exchange whose bar for one market comes late).
    Thread-safe: the server's threads read it."""

    def __init__(self, start_ms: int, speed: float) -> None:
        if not speed >= 0:
            raise ValueError(f"clock speed must be >= 0, got {speed!r}")
        self.speed = float(speed)
        self._lock = threading.Lock()
        self._base = int(start_ms)
        self._t0 = time.monotonic()
        self._paused_at: int | None = None
        self._lags: dict[str, int] = {}
        #: notified whenever the clock is moved, resumed or a lag changes (the kline
        #: streams push what has closed at once, not at their next look)
        self._changed = threading.Condition()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_change(self, timeout: float) -> None:
        """Until the clock is moved (or ``timeout`` seconds: a running clock moves alone)."""
        with self._changed:
            self._changed.wait(timeout)

    def now_ms(self) -> int:
        with self._lock:
            return self._base + int((time.monotonic() - self._t0) * 1000 * self.speed)

    def data_ms(self) -> int:
        with self._lock:
            if self._paused_at is not None:
                return self._paused_at
        return self.now_ms()

    def advance(self, ms: int) -> int:
        """Move the exchange's time ``ms`` forward; the new time."""
        with self._lock:
            self._base += int(ms)
        self._notify()
        return self.now_ms()

    def set(self, ms: int) -> None:
        """The exchange's time is ``ms`` from now on (never backwards)."""
        with self._lock:
            now = self._base + int((time.monotonic() - self._t0) * 1000 * self.speed)
            if ms < now:
                raise ValueError(f"the clock does not go backwards ({ms} < {now})")
            self._base += int(ms) - now
        self._notify()

    def pause(self) -> None:
        """No bar closes until ``resume`` (the exchange's time goes on)."""
        now = self.now_ms()
        with self._lock:
            if self._paused_at is None:
                self._paused_at = now

    def resume(self) -> None:
        with self._lock:
            self._paused_at = None
        self._notify()

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused_at is not None

    def lag(self, symbol: str, ms: int) -> None:
        """``symbol``'s bars close ``ms`` later than the others' from now on (0: on time)."""
        if ms < 0:
            raise ValueError(f"a lag is not negative, got {ms!r}")
        with self._lock:
            if ms:
                self._lags[symbol] = int(ms)
            else:
                self._lags.pop(symbol, None)
        self._notify()

    def lag_of(self, symbol: str) -> int:
        with self._lock:
            return self._lags.get(symbol, 0)
