"""Kline intervals: the one place that knows their names and lengths.

Only fixed-length intervals aligned to the Unix epoch are supported (1m..1d);
calendar intervals (3d, 1w, 1M) are aligned differently by the exchange and are
refused with a clear error rather than handled approximately.
"""

from __future__ import annotations

from datetime import UTC, datetime

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

INTERVAL_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
}

#: Every interval name the exchange accepts (klines endpoint enum).
EXCHANGE_INTERVALS: tuple[str, ...] = (*INTERVAL_MS, "3d", "1w", "1M")


class IntervalError(ValueError):
    """An interval name that AsterAI cannot use."""


def interval_ms(interval: str) -> int:
    """Length of ``interval`` in milliseconds, or a clear error."""
    try:
        return INTERVAL_MS[interval]
    except KeyError:
        supported = ", ".join(INTERVAL_MS)
        if interval in EXCHANGE_INTERVALS:
            raise IntervalError(
                f"interval {interval!r} is calendar-aligned and not supported; use one of: {supported}"
            ) from None
        raise IntervalError(f"unknown interval {interval!r}; use one of: {supported}") from None


def ceil_time(ms: int, interval: str) -> int:
    """First bar open time at or after ``ms``."""
    step = interval_ms(interval)
    return -((-ms) // step) * step


def last_closed_open_time(now_ms: int, interval: str) -> int:
    """Open time of the newest bar that has closed at ``now_ms``.

    A bar opened at ``t`` closes at ``t + interval - 1`` ms; it is closed once
    ``now_ms >= t + interval``.
    """
    step = interval_ms(interval)
    return (now_ms // step) * step - step


def parse_intervals(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Parse ``"1h,4h"`` (or a sequence) into validated, de-duplicated names."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for raw in items:
        name = raw.strip()
        if not name:
            continue
        interval_ms(name)
        if name not in out:
            out.append(name)
    if not out:
        raise IntervalError("no interval given")
    return tuple(out)


def iso_ms(ms: int | None) -> str | None:
    """Epoch milliseconds as an ISO-8601 UTC string (``...Z``), or ``None``."""
    if ms is None:
        return None
    text = datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")
