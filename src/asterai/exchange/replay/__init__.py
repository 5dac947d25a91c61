"""An Aster-compatible HTTP server (loopback) that replays a recorded folder.

It serves the public market-data endpoints of ``/fapi/v1`` with the real
exchange's paths, parameters, JSON shapes, request weights, used-weight
header, 429 and 418 rules, from real recorded data only (see
:mod:`asterai.exchange.replay.recording`). Its clock is frozen at the recording time,
so ``GET /fapi/v1/time`` says when the recording was taken and the last bar
of each series is served as the exchange's current, still-open bar.

Built on the standard library (``http.server``, HTTP/1.1 keep-alive with
``Content-Length``) so faults can be made on the raw socket: 5xx errors,
spurious 429 bursts, slow answers, truncated bodies and dropped connections,
drawn from a seeded ``random.Random`` (see :class:`FaultSpec`).

What the replay cannot know, it does not invent:

* Symbol facts: a symbol listed in the recording's own ``exchangeInfo.json``
  is served with that entry verbatim. Otherwise only ``PRICE_FILTER.tickSize``
  and ``LOT_SIZE.stepSize`` (gcd of every recorded price and base quantity,
  klines included) are declared; ``MIN_NOTIONAL``, ``status``,
  ``onboardDate`` and funding caps are left out.
* Kline fields that were not recorded (trades, taker-buy quote volume, the
  ignored field in the shared recording) are JSON ``null``.
* ``GET /fapi/v1/depth`` and ``GET /fapi/v1/trades`` for a known symbol
  without a recorded book or trades file answer HTTP 404 with
  ``{"code": -1000, "msg": "No order book recorded for SYMBOL in this replay."}``
  (or "No trades recorded ..."), rather than an empty, made-up answer.
* ``ticker/24hr`` is computed from the symbol's finest recorded klines (1h in
  the shared recording); ``count``, ``firstId`` and ``lastId`` are ``null``
  and ``lastQty`` is the recorded last trade's quantity or ``null``.

Rate limits follow the exchange: fixed windows aligned to wall-clock time,
weight per request from :func:`asterai.exchange.weights.endpoint_weight`,
HTTP 429 with ``Retry-After`` when a request would cross the limit (it is
then not counted), and an HTTP 418 ban for a client that sends more than
``ban_after`` further requests in the same window after a 429. Every response
carries ``X-MBX-USED-WEIGHT-1M`` (or ``-{n}S`` for a shortened window, as
declared in ``exchangeInfo.rateLimits``).
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from asterai.exchange.replay.recording import (
    FundingSeries,
    KlineSeries,
    Recording,
    format_number,
    load_recording,
)
from asterai.exchange.weights import (
    DEFAULT_ORDER_LIMIT,
    DEFAULT_WEIGHT_LIMIT,
    DEPTH_DEFAULT_LIMIT,
    DEPTH_LIMITS,
    FUNDING_DEFAULT_LIMIT,
    FUNDING_MAX_LIMIT,
    KLINES_DEFAULT_LIMIT,
    KLINES_MAX_LIMIT,
    TRADES_DEFAULT_LIMIT,
    TRADES_MAX_LIMIT,
    endpoint_weight,
)
from asterai.intervals import DAY_MS, EXCHANGE_INTERVALS, INTERVAL_MS

__all__ = ["FaultSpec", "ReplayServer", "ReplayStats", "serve"]

logger = logging.getLogger(__name__)

PREFIX = "/fapi/v1/"
_INT_RE = re.compile(r"^[0-9]{1,20}$")
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class FaultSpec:
    """Shares of requests that get each fault (each in [0, 1], summing to at most 1).

    ``error_5xx``: answered 500, 502 or 503 with an error body;
    ``burst_429``: answered a spurious 429 with ``Retry-After: 1`` (not counted
    toward a ban); ``slow``: answered normally after ``slow_seconds``;
    ``truncate``: full ``Content-Length`` sent, then half the body and the
    connection closed; ``drop``: connection closed without any response.
    """

    error_5xx: float = 0.0
    burst_429: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 1.0
    truncate: float = 0.0
    drop: float = 0.0

    KINDS: ClassVar[tuple[str, ...]] = ("5xx", "429", "slow", "truncate", "drop")
    _FIELDS: ClassVar[dict[str, str]] = {
        "5xx": "error_5xx",
        "429": "burst_429",
        "slow": "slow",
        "truncate": "truncate",
        "drop": "drop",
    }

    def __post_init__(self) -> None:
        for kind, name in self._FIELDS.items():
            share = getattr(self, name)
            if not (isinstance(share, (int, float)) and 0.0 <= share <= 1.0):
                raise ValueError(f"fault share for {kind!r} must be within 0..1, got {share!r}")
        if not (self.slow_seconds >= 0 and math.isfinite(self.slow_seconds)):
            raise ValueError(f"slow delay must be >= 0 seconds, got {self.slow_seconds!r}")
        if self.total > 1.0 + 1e-12:
            raise ValueError(f"fault shares add up to {self.total:g}; they must not exceed 1")

    @property
    def total(self) -> float:
        return sum(getattr(self, name) for name in self._FIELDS.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def share(self, kind: str) -> float:
        return float(getattr(self, self._FIELDS[kind]))

    @classmethod
    def parse(cls, text: str | None) -> FaultSpec:
        """Parse ``"5xx=0.1,429=0.05,slow=0.05:0.5,truncate=0.05,drop=0.05"``.

        ``slow=SHARE[:SECONDS]`` (1 s when the delay is left out). An empty
        string or ``"none"`` means no faults. Raises ``ValueError`` naming the
        offending item.
        """
        values: dict[str, float] = {}
        if text is None or text.strip().lower() in ("", "none", "off"):
            return cls()
        for raw in text.split(","):
            item = raw.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            if not sep or key not in cls._FIELDS:
                raise ValueError(
                    f"bad fault item {item!r}: expected KIND=SHARE with KIND one of "
                    f"{', '.join(cls.KINDS)} (slow=SHARE:SECONDS)"
                )
            if cls._FIELDS[key] in values:
                raise ValueError(f"bad fault item {item!r}: {key!r} given twice")
            share_text, colon, seconds_text = value.partition(":")
            if colon and key != "slow":
                raise ValueError(f"bad fault item {item!r}: only 'slow' takes ':SECONDS'")
            try:
                share = float(share_text)
                seconds = float(seconds_text) if colon else None
            except ValueError:
                raise ValueError(f"bad fault item {item!r}: not a number") from None
            if not (0.0 <= share <= 1.0):
                raise ValueError(f"bad fault item {item!r}: share must be within 0..1")
            if seconds is not None:
                if not (seconds >= 0 and math.isfinite(seconds)):
                    raise ValueError(f"bad fault item {item!r}: delay must be >= 0 seconds")
                values["slow_seconds"] = seconds
            values[cls._FIELDS[key]] = share
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(f"bad fault spec {text!r}: {exc}") from None

    def __str__(self) -> str:
        parts = []
        for kind in self.KINDS:
            share = self.share(kind)
            if share:
                extra = f":{self.slow_seconds:g}" if kind == "slow" else ""
                parts.append(f"{kind}={share:g}{extra}")
        return ",".join(parts) or "none"

    def draw(self, rng: random.Random) -> str | None:
        """One draw: the fault kind for a request, or ``None``."""
        if not self:
            return None
        r = rng.random()
        acc = 0.0
        for kind in self.KINDS:
            acc += self.share(kind)
            if r < acc:
                return kind
        return None


# --------------------------------------------------------------------------- stats


class ReplayStats:
    """Thread-safe counters of what the server did."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._weight = 0
        self._sent_429 = 0
        self._sent_418 = 0
        self._faults: Counter[str] = Counter()
        self._paths: Counter[str] = Counter()
        self._statuses: Counter[int] = Counter()

    def _request(self, path: str) -> None:
        with self._lock:
            self._requests += 1
            self._paths[path] += 1

    def _served(self, weight: int) -> None:
        with self._lock:
            self._weight += weight

    def _status(self, status: int) -> None:
        with self._lock:
            self._statuses[status] += 1
            if status == 429:
                self._sent_429 += 1
            elif status == 418:
                self._sent_418 += 1

    def _fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    @property
    def requests(self) -> int:
        """Requests received (every method, every outcome)."""
        with self._lock:
            return self._requests

    @property
    def weight(self) -> int:
        """Request weight counted against the limit (refused requests are not counted)."""
        with self._lock:
            return self._weight

    @property
    def sent_429(self) -> int:
        """429 responses sent (limit breaches and injected 429 faults)."""
        with self._lock:
            return self._sent_429

    @property
    def sent_418(self) -> int:
        with self._lock:
            return self._sent_418

    @property
    def faults(self) -> dict[str, int]:
        """Injected faults by kind (``5xx``, ``429``, ``slow``, ``truncate``, ``drop``)."""
        with self._lock:
            return dict(self._faults)

    @property
    def paths(self) -> dict[str, int]:
        with self._lock:
            return dict(self._paths)

    @property
    def statuses(self) -> dict[int, int]:
        with self._lock:
            return dict(self._statuses)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self._requests,
                "weight": self._weight,
                "sent_429": self._sent_429,
                "sent_418": self._sent_418,
                "faults": dict(self._faults),
                "paths": dict(self._paths),
                "statuses": dict(self._statuses),
            }


# --------------------------------------------------------------------------- weight limiter


@dataclass(frozen=True)
class _Decision:
    status: int  # 200 (admitted), 429 or 418
    used: int
    retry_after: int = 0
    banned_until_ms: int = 0


class _WeightLimiter:
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


# --------------------------------------------------------------------------- API errors


class _ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg

    def body(self) -> bytes:
        return _JSON({"code": self.code, "msg": self.msg}).encode()


def _mandatory(name: str) -> _ApiError:
    return _ApiError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def _bad_value(name: str) -> _ApiError:
    return _ApiError(400, -1130, f"Data sent for parameter '{name}' is not valid.")


def _page(times: np.ndarray, available: int, start: int | None, end: int | None, limit: int):
    """Slice bounds ``[lo, hi)`` of the exchange's start/end/limit semantics.

    ``available`` rows (a prefix of ``times``) may be served. No start/end: the
    latest ``limit``; start only: the first ``limit`` from start; end only:
    the last ``limit`` up to end; both: the first ``limit`` within
    ``[start, end]`` (all bounds inclusive).
    """
    if start is None and end is None:
        return max(0, available - limit), available
    if end is None:
        lo = int(np.searchsorted(times[:available], start, side="left"))
        return lo, min(available, lo + limit)
    hi = min(available, int(np.searchsorted(times[:available], end, side="right")))
    if start is None:
        return max(0, hi - limit), hi
    lo = int(np.searchsorted(times[:available], start, side="left"))
    return lo, max(lo, min(hi, lo + limit))


# --------------------------------------------------------------------------- the clock


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


# --------------------------------------------------------------------------- the application


class _Replay:
    """Request handling, independent of the socket layer."""

    def __init__(
        self,
        recording: Recording,
        window_seconds: float,
        weight_limit: int,
        faults: FaultSpec,
        seed: int | None,
        ban_after: int,
        ban_seconds: float,
        clock_speed: float | None = None,
        play_from_ms: int | None = None,
    ) -> None:
        self.rec = recording
        self.recorded_ms = int(recording.now_ms)  # the recording's time: its data ends there
        # a running clock: from the recording's time (following past its end), or from
        # ``play_from_ms`` (the recording played forward as if live)
        self.play: PlayClock | None = None
        if clock_speed is not None or play_from_ms is not None:
            start = self.recorded_ms if play_from_ms is None else int(play_from_ms)
            self.play = PlayClock(start, 1.0 if clock_speed is None else clock_speed)
        self.window_seconds = window_seconds
        self.weight_limit = weight_limit
        self.faults = faults
        self.stats = ReplayStats()
        self.limiter = _WeightLimiter(window_seconds, weight_limit, ban_after, ban_seconds)
        self._rng = random.Random(0 if seed is None else seed)
        self._rng_lock = threading.Lock()
        if window_seconds == 60:
            self.rate_limit = {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight_limit,
            }
            self.weight_header = "X-MBX-USED-WEIGHT-1M"
            self._per = "minute"
        else:
            n = int(window_seconds)
            self.rate_limit = {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "SECOND",
                "intervalNum": n,
                "limit": weight_limit,
            }
            self.weight_header = f"X-MBX-USED-WEIGHT-{n}S"
            self._per = f"{n} seconds"
        self.routes = {
            "ping": self._ping,
            "time": self._time,
            "exchangeInfo": self._exchange_info,
            "klines": self._klines,
            "fundingRate": self._funding_rate,
            "fundingInfo": self._funding_info,
            "premiumIndex": self._premium_index,
            "ticker/24hr": self._ticker_24hr,
            "depth": self._depth,
            "trades": self._trades,
        }
        self._cache: dict[Any, bytes] = {}
        self._cache_lock = threading.Lock()
        self._funding_all = self._merge_funding()

    # ------------------------------------------------------------ helpers

    def draw_fault(self) -> tuple[str | None, int]:
        """Fault kind for one request (and a 5xx status when that is the kind)."""
        if not self.faults:
            return None, 0
        with self._rng_lock:
            kind = self.faults.draw(self._rng)
            status = self._rng.choice((500, 502, 503)) if kind == "5xx" else 0
        return kind, status

    def weight_of(self, path: str, params: dict[str, str]) -> int:
        try:
            return endpoint_weight(path, params)
        except (TypeError, ValueError):
            # An unparsable limit: charge what the endpoint costs by default.
            return endpoint_weight(path, {k: v for k, v in params.items() if k != "limit"})

    def too_many_msg(self) -> str:
        return (
            f"Too many requests; current limit is {self.weight_limit} requests per {self._per}. "
            "Please use the websocket for live updates to avoid polling the API."
        )

    def cached(self, key: Any, build) -> bytes:
        if self.play is not None and key != "exchangeInfo":
            return build()  # the answer changes as the clock runs
        body = self._cache.get(key)
        if body is None:
            body = build()
            with self._cache_lock:
                self._cache[key] = body
        return body

    def handle(self, path: str, params: dict[str, str]) -> tuple[int, bytes]:
        name = path[len(PREFIX) :] if path.startswith(PREFIX) else None
        route = self.routes.get(name) if name is not None else None
        if route is None:
            raise _ApiError(
                404,
                -1020,
                f"This operation is not supported: GET {path} (the replay serves "
                + ", ".join(PREFIX + r for r in self.routes)
                + ").",
            )
        return 200, route(params)

    @staticmethod
    def _int(params: dict[str, str], name: str) -> int | None:
        raw = params.get(name)
        if raw is None:
            return None
        if not _INT_RE.match(raw):
            raise _ApiError(
                400,
                -1100,
                f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
            )
        return int(raw)

    def _limit(self, params: dict[str, str], default: int, maximum: int) -> int:
        limit = self._int(params, "limit")
        if limit is None:
            return default
        if not 1 <= limit <= maximum:
            raise _bad_value("limit")
        return limit

    def _symbol(self, params: dict[str, str], *, required: bool) -> str | None:
        symbol = params.get("symbol")
        if not symbol:
            if required:
                raise _mandatory("symbol")
            return None
        if symbol not in self.rec.symbols:
            raise _ApiError(400, -1121, "Invalid symbol.")
        return symbol

    @staticmethod
    def _range(params: dict[str, str]) -> tuple[int | None, int | None]:
        start = _Replay._int(params, "startTime")
        end = _Replay._int(params, "endTime")
        if start is not None and end is not None and start > end:
            raise _ApiError(400, -1023, "Start time is greater than end time.")
        return start, end

    # ------------------------------------------------------------ endpoints

    def _ping(self, params: dict[str, str]) -> bytes:
        return b"{}"

    @property
    def now(self) -> int:
        """What the served data stands at: the recording's time, or with a running clock
        the published time (``PlayClock.data_ms``), never past the recording's end."""
        if self.play is None:
            return self.recorded_ms
        return min(self.play.data_ms(), self.recorded_ms)

    def clock_ms(self) -> int:
        """The served clock (``/fapi/v1/time``): the recording's time, or the running
        clock's."""
        if self.play is None:
            return self.recorded_ms
        return self.play.now_ms()

    def _time(self, params: dict[str, str]) -> bytes:
        return _JSON({"serverTime": self.clock_ms()}).encode()

    def _exchange_info(self, params: dict[str, str]) -> bytes:
        return self.cached("exchangeInfo", self._build_exchange_info)

    def _build_exchange_info(self) -> bytes:
        symbols = []
        for info in self.rec.symbols.values():
            if info.listed is not None:
                symbols.append(dict(info.listed))
                continue
            entry: dict[str, Any] = {
                "symbol": info.symbol,
                "pair": info.symbol,
                "contractType": "PERPETUAL",
            }
            if info.base_asset:
                entry["baseAsset"] = info.base_asset
                entry["quoteAsset"] = info.quote_asset
                entry["marginAsset"] = info.quote_asset
            filters = []
            if info.tick_size:
                filters.append(
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": "0",
                        "maxPrice": "0",
                        "tickSize": info.tick_size,
                    }
                )
            if info.step_size:
                for kind in ("LOT_SIZE", "MARKET_LOT_SIZE"):
                    filters.append(
                        {
                            "filterType": kind,
                            "minQty": info.step_size,
                            "maxQty": "0",
                            "stepSize": info.step_size,
                        }
                    )
            entry["filters"] = filters
            symbols.append(entry)
        body = {
            "timezone": "UTC",
            "serverTime": self.clock_ms(),
            "rateLimits": [
                self.rate_limit,
                {
                    "rateLimitType": "ORDERS",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": DEFAULT_ORDER_LIMIT,
                },
            ],
            "exchangeFilters": [],
            "assets": [],
            "symbols": symbols,
        }
        return _JSON(body).encode()

    def _klines(self, params: dict[str, str]) -> bytes:
        symbol = self._symbol(params, required=True)
        interval = params.get("interval")
        if not interval:
            raise _mandatory("interval")
        limit = self._int(params, "limit")
        start = self._int(params, "startTime")
        end = self._int(params, "endTime")
        if interval not in EXCHANGE_INTERVALS:
            raise _ApiError(400, -1120, "Invalid interval.")
        if limit is None:
            limit = KLINES_DEFAULT_LIMIT
        elif not 1 <= limit <= KLINES_MAX_LIMIT:
            raise _bad_value("limit")
        if start is not None and end is not None and start > end:
            raise _ApiError(400, -1023, "Start time is greater than end time.")
        series = self.rec.series(symbol, interval)
        if series is None or len(series) == 0:
            return b"[]"
        available = self.served_count(symbol, series)
        lo, hi = _page(series.open_time, available, start, end, limit)
        if hi <= lo:
            return b"[]"
        rows = series.encoded_rows()
        return ("[" + ",".join(rows[lo:hi]) + "]").encode()

    def served_count(self, symbol: str, series: KlineSeries, at: int | None = None) -> int:
        """How many of ``series``' bars are served now (its first ones); ``at``: at that
        earlier published time instead."""
        now = self.now if at is None else at
        if self.play is None:
            return series.count_at_or_before(now)
        # a running clock serves the bars closed by its time, and no open bar: the
        # recording holds only each bar's final values, so an open bar's would be its
        # future; the bar still open when the recording was taken never closes
        published = now - self.play.lag_of(symbol)
        return int(np.searchsorted(series.close_time, published, side="left"))

    def _merge_funding(self) -> tuple[np.ndarray, list[tuple[FundingSeries, int]]]:
        items = [
            (int(f.funding_time[i]), f.symbol, f, i)
            for f in self.rec.funding.values()
            for i in range(len(f))
            if int(f.funding_time[i]) <= self.recorded_ms
        ]
        items.sort(key=lambda x: (x[0], x[1]))
        times = np.array([x[0] for x in items], dtype=np.int64)
        return times, [(x[2], x[3]) for x in items]

    def _funding_rate(self, params: dict[str, str]) -> bytes:
        symbol = self._symbol(params, required=False)
        start, end = self._range(params)
        limit = self._limit(params, FUNDING_DEFAULT_LIMIT, FUNDING_MAX_LIMIT)
        if symbol is not None:
            series = self.rec.funding.get(symbol)
            if series is None or len(series) == 0:
                return b"[]"
            available = int(np.searchsorted(series.funding_time, self.now, side="right"))
            lo, hi = _page(series.funding_time, available, start, end, limit)
            rows = [series.row(i) for i in range(lo, hi)]
        else:
            times, refs = self._funding_all
            available = int(np.searchsorted(times, self.now, side="right"))
            lo, hi = _page(times, available, start, end, limit)
            rows = [f.row(i) for f, i in refs[lo:hi]]
        return _JSON(rows).encode()

    def _last_funding(self, series: FundingSeries) -> int:
        """Index of the newest funding event at or before now (-1: none)."""
        return int(np.searchsorted(series.funding_time, self.now, side="right")) - 1

    def _funding_info(self, params: dict[str, str]) -> bytes:
        symbol = self._symbol(params, required=False)
        out = []
        for name, series in self.rec.funding.items():
            if symbol is not None and name != symbol:
                continue
            hours = series.interval_hours()
            if hours is None:
                continue
            out.append({"symbol": name, "fundingIntervalHours": hours})
        return _JSON(out).encode()

    def _premium(self, symbol: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"symbol": symbol}
        series = self.rec.funding.get(symbol)
        if series is not None:
            last = self._last_funding(series)
            if last >= 0:
                if series.mark_price is not None:
                    marks = series.mark_price[: last + 1]
                    known = np.flatnonzero(~np.isnan(marks))
                    if known.size:
                        entry["markPrice"] = format_number(float(marks[known[-1]]))
                entry["lastFundingRate"] = format_number(float(series.funding_rate[last]))
                hours = series.interval_hours()
                if hours is not None:
                    step = round(hours * 3_600_000)
                    nxt = int(series.funding_time[last]) + step
                    if step > 0 and nxt <= self.now:
                        nxt += ((self.now - nxt) // step + 1) * step
                    entry["nextFundingTime"] = nxt
        entry["time"] = self.now
        return entry

    def _premium_index(self, params: dict[str, str]) -> bytes:
        symbol = self._symbol(params, required=False)
        if symbol is not None:
            return _JSON(self._premium(symbol)).encode()
        return _JSON([self._premium(s) for s in self.rec.symbols]).encode()

    def _ticker_series(self, symbol: str) -> KlineSeries | None:
        for interval in self.rec.intervals(symbol):
            if INTERVAL_MS.get(interval, DAY_MS + 1) <= DAY_MS:
                return self.rec.series(symbol, interval)
        return None

    def _ticker(self, symbol: str) -> dict[str, Any] | None:
        series = self._ticker_series(symbol)
        if series is None or len(series) == 0:
            return None
        hi = series.count_at_or_before(self.now)
        lo = int(np.searchsorted(series.open_time[:hi], self.now - DAY_MS, side="right"))
        if hi <= lo:
            return None

        def dec(x: float) -> Decimal:
            return Decimal(format_number(float(x)))

        def plain(d: Decimal) -> str:
            s = format(d.normalize(), "f")
            return "0" if s in ("-0", "") else s

        open_price = dec(series.open[lo])
        last_price = dec(series.close[hi - 1])
        vol = series.volume[lo:hi]
        qvol = series.quote_volume[lo:hi]
        volume = sum((dec(v) for v in vol if not math.isnan(v)), Decimal(0))
        quote_volume = sum((dec(v) for v in qvol if not math.isnan(v)), Decimal(0))
        change = last_price - open_price
        if open_price != 0:
            pct = (change / open_price * 100).quantize(Decimal("0.001"))
        else:
            pct = Decimal("0.000")
        if volume > 0:
            wavg = format_number(float(quote_volume) / float(volume))
        else:
            wavg = plain(last_price)
        trades = self.rec.trades.get(symbol)
        last_qty = str(trades[-1]["qty"]) if trades and "qty" in trades[-1] else None
        return {
            "symbol": symbol,
            "priceChange": plain(change),
            "priceChangePercent": f"{pct:.3f}",
            "weightedAvgPrice": wavg,
            "prevClosePrice": format_number(float(series.close[lo - 1])) if lo > 0 else None,
            "lastPrice": plain(last_price),
            "lastQty": last_qty,
            "openPrice": plain(open_price),
            "highPrice": format_number(float(np.nanmax(series.high[lo:hi]))),
            "lowPrice": format_number(float(np.nanmin(series.low[lo:hi]))),
            "volume": plain(volume),
            "quoteVolume": plain(quote_volume),
            "openTime": int(series.open_time[lo]),
            "closeTime": min(self.now, int(series.close_time[hi - 1])),
            "firstId": None,
            "lastId": None,
            "count": None,
        }

    def _ticker_24hr(self, params: dict[str, str]) -> bytes:
        symbol = self._symbol(params, required=False)
        if symbol is not None:

            def one() -> bytes:
                ticker = self._ticker(symbol)
                if ticker is None:
                    raise _ApiError(
                        404, -1000, f"No klines recorded for {symbol} in the 24 h before now."
                    )
                return _JSON(ticker).encode()

            return self.cached(("ticker", symbol), one)

        def every() -> bytes:
            rows = [t for t in (self._ticker(s) for s in self.rec.symbols) if t is not None]
            return _JSON(rows).encode()

        return self.cached(("ticker", None), every)

    def _depth(self, params: dict[str, str]) -> bytes:
        symbol = self._symbol(params, required=True)
        limit = self._int(params, "limit")
        if limit is None:
            limit = DEPTH_DEFAULT_LIMIT
        elif limit not in DEPTH_LIMITS:
            raise _bad_value("limit")
        book = self.rec.orderbooks.get(symbol)
        if book is None:
            raise _ApiError(404, -1000, f"No order book recorded for {symbol} in this replay.")
        out = dict(book)
        out["bids"] = list(book.get("bids") or [])[:limit]
        out["asks"] = list(book.get("asks") or [])[:limit]
        return _JSON(out).encode()

    def _trades(self, params: dict[str, str]) -> bytes:
        symbol = self._symbol(params, required=True)
        limit = self._limit(params, TRADES_DEFAULT_LIMIT, TRADES_MAX_LIMIT)
        trades = self.rec.trades.get(symbol)
        if trades is None:
            raise _ApiError(404, -1000, f"No trades recorded for {symbol} in this replay.")
        return _JSON(trades[-limit:]).encode()


# --------------------------------------------------------------------------- HTTP layer


_5XX_BODIES = {
    500: {"code": -1000, "msg": "An unknown error occured while processing the request."},
    502: {
        "code": -1001,
        "msg": "Internal error; unable to process your request. Please try again.",
    },
    503: {
        "code": -1007,
        "msg": "Timeout waiting for response from backend server. "
        "Send status unknown; execution status unknown.",
    },
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AsterAI-replay/1"
    sys_version = ""
    timeout = 30  # idle keep-alive connections are closed after this many seconds
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm
    # and the client's delayed ACK add ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True

    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    # ------------------------------------------------------------ sending

    def _send(
        self,
        status: int,
        body: bytes,
        *,
        extra: dict[str, str] | None = None,
        truncate: bool = False,
        head: bool = False,
    ) -> None:
        app = self.server.app
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header(app.weight_header, str(app.limiter.used()))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        app.stats._status(status)
        if head:
            return
        if truncate:
            self.wfile.write(body[: len(body) // 2])
            self._kill()
        else:
            self.wfile.write(body)

    def _kill(self) -> None:
        """Close the connection at once (no more bytes, no keep-alive)."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ------------------------------------------------------------ methods

    def do_GET(self) -> None:
        app = self.server.app
        split = urlsplit(self.path)
        path = split.path
        pairs = parse_qsl(split.query, keep_blank_values=True)
        params: dict[str, str] = {}
        duplicated = False
        for key, value in pairs:
            if key in params:
                duplicated = True
            else:
                params[key] = value
        name = path[len(PREFIX) :] if path.startswith(PREFIX) else None
        app.stats._request(path if name in app.routes else "<other>")

        fault, fault_status = app.draw_fault()
        if fault is not None:
            app.stats._fault(fault)
        if fault == "drop":
            logger.debug("fault: dropping GET %s", self.path)
            self._kill()
            return
        if fault == "5xx":
            logger.debug("fault: %d for GET %s", fault_status, self.path)
            self._send(fault_status, _JSON(_5XX_BODIES[fault_status]).encode())
            return
        if fault == "429":
            logger.debug("fault: spurious 429 for GET %s", self.path)
            body = {"code": -1003, "msg": app.too_many_msg()}
            self._send(429, _JSON(body).encode(), extra={"Retry-After": "1"})
            return

        weight = app.weight_of(path, params)
        decision = app.limiter.admit(weight)
        if decision.status == 418:
            msg = (
                f"Way too many requests; IP banned until {decision.banned_until_ms}. "
                "Please use the websocket for live updates to avoid bans."
            )
            logger.debug("418 for GET %s (banned)", self.path)
            self._send(
                418,
                _JSON({"code": -1003, "msg": msg}).encode(),
                extra={"Retry-After": str(decision.retry_after)},
            )
            return
        if decision.status == 429:
            logger.debug("429 for GET %s (weight %d, used %d)", self.path, weight, decision.used)
            body = {"code": -1003, "msg": app.too_many_msg()}
            self._send(429, _JSON(body).encode(), extra={"Retry-After": str(decision.retry_after)})
            return
        app.stats._served(weight)

        try:
            if duplicated:
                raise _ApiError(400, -1101, "Duplicate values for a parameter detected.")
            status, body = app.handle(path, params)
        except _ApiError as err:
            status, body = err.status, err.body()
        except Exception:  # a bug here must not kill the connection thread silently
            logger.exception("replay failed on GET %s", self.path)
            status, body = 500, _JSON(_5XX_BODIES[500]).encode()
        if fault == "slow":
            logger.debug("fault: delaying GET %s by %g s", self.path, app.faults.slow_seconds)
            time.sleep(app.faults.slow_seconds)
        if fault == "truncate":
            logger.debug("fault: truncating GET %s", self.path)
        self._send(status, body, truncate=fault == "truncate")

    def _not_allowed(self) -> None:
        app = self.server.app
        app.stats._request("<non-GET>")
        length = self.headers.get("Content-Length")
        try:
            size = int(length) if length else 0
        except ValueError:
            size = -1
        if 0 < size <= 1 << 20:
            self.rfile.read(size)
        elif size != 0 or self.headers.get("Transfer-Encoding"):
            self.close_connection = True
        body = {
            "code": -1020,
            "msg": f"This operation is not supported: {self.command} (GET only).",
        }
        self._send(405, _JSON(body).encode(), extra={"Allow": "GET"}, head=self.command == "HEAD")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _not_allowed


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: _Replay) -> None:
        self.app = app
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(conn)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # called by socketserver inside its except block
        logger.debug(
            "connection from %s ended with an error: %r", client_address, sys.exc_info()[1]
        )


class ReplayServer:
    """Serve ``recording`` over HTTP on ``host:port`` (port 0: any free port).

    ``window_seconds``/``weight_limit``: the REQUEST_WEIGHT rule enforced and
    declared (60 s and 2400 like the real exchange; a shortened window must be
    a whole number of seconds). ``faults``: see :class:`FaultSpec`; drawn from
    ``random.Random(seed)`` (seed 0 when ``None``) so runs are reproducible.
    ``ban_after``: further requests tolerated in a window after a 429 before a
    418 ban of ``ban_seconds`` (default: two windows). ``clock_speed``: a running
    clock (``/fapi/v1/time`` advances from the recording's time at that many times
    wall time) for following the market past the recording's end, where no new bar
    comes: what the signal service sees when the exchange sends nothing new. The bar
    still open at the recording's time is then never served.

    ``play_from_ms``: play the recording forward as if live from that time: the clock
    starts there and runs at ``clock_speed`` (default 1; 0: it moves only when told,
    ``clock.advance``), bars close on it and the klines and funding endpoints serve only
    what has closed (never an open bar: the recording holds each bar's final values
    only). ``clock.pause()`` stalls the feed (the time goes on, no bar closes) until
    ``clock.resume()``; ``set_faults("drop=1")`` drops every connection.

    ``streams``: also serve the exchange's websocket kline streams (a played-forward
    clock only) at ``ws_url``, each bar pushed when it closes
    (``replay.streams``); ``drop_streams()`` closes their connections.
    """

    def __init__(
        self,
        recording: Recording,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        window_seconds: float = 60.0,
        weight_limit: int = DEFAULT_WEIGHT_LIMIT,
        faults: FaultSpec | str | None = None,
        seed: int | None = None,
        ban_after: int = 3,
        ban_seconds: float | None = None,
        clock_speed: float | None = None,
        play_from_ms: int | None = None,
        streams: bool = False,
    ) -> None:
        if streams and play_from_ms is None and clock_speed is None:
            raise ValueError("kline streams need a running clock (clock_speed or play_from_ms)")
        if clock_speed is not None and not (
            clock_speed > 0 or (clock_speed == 0 and play_from_ms is not None)
        ):
            raise ValueError(
                f"clock_speed must be > 0 (0 only with play_from_ms), got {clock_speed!r}"
            )
        if play_from_ms is not None and not play_from_ms <= recording.now_ms:
            raise ValueError(
                f"play_from_ms {play_from_ms} lies after the recording's end ({recording.now_ms})"
            )
        if not (isinstance(window_seconds, (int, float)) and window_seconds > 0):
            raise ValueError(f"window_seconds must be > 0, got {window_seconds!r}")
        if window_seconds != 60 and (window_seconds < 1 or window_seconds != int(window_seconds)):
            raise ValueError(
                f"a shortened rate window must be a whole number of seconds >= 1 "
                f"(it is declared as SECOND x intervalNum), got {window_seconds!r}"
            )
        if int(weight_limit) != weight_limit or weight_limit < 1:
            raise ValueError(f"weight_limit must be a positive integer, got {weight_limit!r}")
        if ban_after < 0:
            raise ValueError(f"ban_after must be >= 0, got {ban_after!r}")
        if isinstance(faults, str):
            faults = FaultSpec.parse(faults)
        self.recording = recording
        self.host = host
        self.port = port
        self.window_seconds = float(window_seconds)
        self.weight_limit = int(weight_limit)
        self.faults = faults or FaultSpec()
        self.seed = seed
        self._app = _Replay(
            recording,
            self.window_seconds,
            self.weight_limit,
            self.faults,
            seed,
            ban_after,
            float(ban_seconds) if ban_seconds is not None else 2 * self.window_seconds,
            clock_speed,
            play_from_ms,
        )
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.streams = streams
        self._ws = None

    @property
    def stats(self) -> ReplayStats:
        return self._app.stats

    @property
    def now_ms(self) -> int:
        """What the served data stands at (with a running clock: what has closed)."""
        return self._app.now

    @property
    def clock(self) -> PlayClock:
        """The running clock (``clock_speed`` or ``play_from_ms``)."""
        if self._app.play is None:
            raise RuntimeError("this replay's clock is frozen: start it with clock_speed")
        return self._app.play

    @property
    def ws_url(self) -> str:
        """The kline streams' base URL (``ws://host:port``; started with ``streams``)."""
        if self._ws is None:
            raise RuntimeError("this replay serves no streams: start it with streams=True")
        return self._ws.url

    def drop_streams(self) -> int:
        """Close every kline stream connection (the exchange dropping them); how many."""
        return self._ws.drop() if self._ws is not None else 0

    @property
    def stream_connections(self) -> int:
        return self._ws.connections if self._ws is not None else 0

    def set_faults(self, faults: FaultSpec | str | None) -> None:
        """Switch the faults while serving (``"drop=1"``: every connection dropped, an
        exchange that stops answering)."""
        if isinstance(faults, str):
            faults = FaultSpec.parse(faults)
        self.faults = faults or FaultSpec()
        self._app.faults = self.faults

    @property
    def weight_header(self) -> str:
        """Name of the used-weight response header, e.g. ``X-MBX-USED-WEIGHT-1M``."""
        return self._app.weight_header

    @property
    def rate_limit(self) -> dict[str, Any]:
        """The REQUEST_WEIGHT entry declared in ``exchangeInfo.rateLimits``."""
        return dict(self._app.rate_limit)

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the replay server is not started; call start() first")
        host, port = self._httpd.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer((self.host, self.port), self._app)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"asterai-replay:{self.port}",
            daemon=True,
        )
        self._thread.start()
        if self.streams:
            from asterai.exchange.replay.streams import StreamServer

            self._ws = StreamServer(self._app, self.host).start()
        logger.info(
            "replay of %s (%s layout, clock %d) serving at %s",
            self.recording.folder,
            self.recording.layout,
            self._app.now,
            self.base_url,
        )
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        if self._ws is not None:
            self._ws.stop()
            self._ws = None
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None
        logger.info("replay server stopped: %s", self.stats.snapshot())

    def wait(self) -> None:
        """Block until the server stops (``KeyboardInterrupt`` passes through)."""
        thread = self._thread
        while thread is not None and thread.is_alive():
            thread.join(0.5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    folder: Path | str,
    host: str = "127.0.0.1",
    port: int = 0,
    window_seconds: float = 60.0,
    weight_limit: int = DEFAULT_WEIGHT_LIMIT,
    faults: FaultSpec | str | None = None,
    now_ms: int | None = None,
    *,
    seed: int | None = None,
    play_from_ms: int | None = None,
    speed: float | None = None,
) -> None:
    """Load ``folder`` and serve it until Ctrl-C (for the ``asterai replay`` command).
    ``play_from_ms``/``speed``: play it forward as if live (see ``ReplayServer``), with
    the kline streams.

    Prints the base URL on stdout; raises ``RecordingError``/``ValueError`` for
    a bad folder, fault spec or window before anything is served.
    """
    recording = load_recording(folder, now_ms)
    server = ReplayServer(
        recording,
        host=host,
        port=port,
        window_seconds=window_seconds,
        weight_limit=weight_limit,
        faults=faults,
        seed=seed,
        clock_speed=speed if speed is not None or play_from_ms is None else 1.0,
        play_from_ms=play_from_ms,
        streams=play_from_ms is not None,
    )
    server.start()
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(recording.now_ms / 1000))
    if play_from_ms is not None:
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(play_from_ms / 1000))
        print(
            f"playing forward from {start} UTC at {server.clock.speed:g}x "
            f"(the recording ends at {when} UTC)",
            flush=True,
        )
    print(
        f"AsterAI replay of {recording.folder} ({recording.layout} layout, "
        f"{len(recording.symbols)} symbols, clock {recording.now_ms} = {when} UTC, "
        f"weight limit {server.weight_limit} per {server.window_seconds:g} s, "
        f"faults: {server.faults})",
        flush=True,
    )
    print(f"serving at {server.base_url}  (Ctrl-C stops)", flush=True)
    if server.streams:
        print(f"kline streams at {server.ws_url}  (--ws-url {server.ws_url})", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        snap = server.stats.snapshot()
        print(
            f"stopped after {snap['requests']} requests, weight {snap['weight']}, "
            f"{snap['sent_429']} x 429, {snap['sent_418']} x 418, faults {snap['faults']}",
            flush=True,
        )
