"""Async REST client for Aster's public futures market-data endpoints.

Every request goes through one path (``request``): the weight limiter, the
error mapping (one place, ``_classify``) and the bounded, jittered retry of
temporary failures. 429 pauses all requests for ``Retry-After``; 418 stops the
client for good, because an IP ban must never be made worse.

A request's retries are bounded in time as well as in number: capped exponential
backoff with jitter until ``retry_budget_s`` seconds have passed since its first
failure (the failed attempts and the waits included), or ``max_retries`` retries, so a
short outage is waited out and a long one fails with the endpoint, the attempts and the
last error. A transport failure (refused, unresolvable, timed out, TLS) before the
exchange has sent any HTTP answer in this process is retried only ``connect_retries``
times: that is an unreachable exchange (a wrong URL, no network), said within seconds;
once it has answered, the same failure is an outage and gets the budget.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from asterai import __version__
from asterai.config import ExchangeSettings
from asterai.exchange.errors import (
    ExchangeError,
    IPBanned,
    RateLimited,
    RetriesExhausted,
    TemporaryError,
    Unreachable,
    api_error,
)
from asterai.exchange.limiter import RateLimit, WeightLimiter, used_weight_from_headers
from asterai.exchange.weights import endpoint_weight

log = logging.getLogger(__name__)

API_PREFIX = "/fapi/v1/"
MAX_RATE_LIMITED_RETRIES = 10
#: Base URLs that have sent an HTTP answer (any status) in this process: a transport
#: failure there is an outage to wait out, not an unreachable exchange. Every stage
#: makes its own client; the pipeline's pre-check answers for all of them.
_ANSWERED: set[str] = set()


#: How long a 418 without a Retry-After header stops every request (an hour: Aster's
#: documented bans run from 2 minutes to 3 days, and a ban is never to be made worse).
BAN_WITHOUT_RETRY_AFTER_S = 3600.0


@dataclass(frozen=True, slots=True)
class Response:
    """A successful response: parsed JSON, the raw body and its SHA-256."""

    data: Any
    body: bytes
    sha256: str
    weight: int
    used_weight: int | None
    latency_s: float


@dataclass(slots=True)
class Tally:
    """Requests, weight and retries spent on one unit of work (a series, say).

    Set it with ``use_tally`` around the work; every request made in that task
    (and the tasks it starts) is counted in it as well as in the client's stats.
    """

    requests: int = 0
    weight: int = 0
    retries: int = 0
    rate_limited: int = 0


_TALLY: contextvars.ContextVar[Tally | None] = contextvars.ContextVar("asterai_tally", default=None)


def use_tally(tally: Tally) -> contextvars.Token:
    return _TALLY.set(tally)


@dataclass(slots=True)
class ClientStats:
    requests: int = 0
    responses: int = 0
    retries: int = 0
    rate_limited: int = 0
    banned: int = 0
    failures: int = 0
    weight: int = 0
    by_path: Counter = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    sends: list[tuple[float, int]] = field(default_factory=list)  # (monotonic s, weight)


class AsterClient:
    """``async with AsterClient(url) as client: rows = await client.klines(...)``."""

    def __init__(
        self,
        base_url: str,
        settings: ExchangeSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.settings = settings or ExchangeSettings()
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self.settings.timeout_s,
            transport=transport,
            headers={"User-Agent": f"asterai/{__version__}"},
            limits=httpx.Limits(max_connections=self.settings.concurrency * 2),
        )
        self._slots = asyncio.Semaphore(self.settings.concurrency)
        self._rng = rng or random.Random()
        self.rate_limit = RateLimit.default()
        self.limiter = WeightLimiter(self.rate_limit, safety=self.settings.weight_safety)
        self.stats = ClientStats()
        self._banned: IPBanned | None = None
        self._banned_until = 0.0  # time.monotonic() when the ban ends
        self.exchange_info: dict[str, Any] | None = None

    async def __aenter__(self) -> AsterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the one request path -----------------------------------------------
    async def request(
        self,
        endpoint: str,
        params: dict[str, Any] | None = None,
        *,
        retry_rate_limited: bool = True,
    ) -> Response:
        """GET ``/fapi/v1/{endpoint}`` with retries; raises a typed ``ExchangeError``.

        With ``retry_rate_limited=False`` a 429 is raised as ``RateLimited`` (after
        pausing the limiter) instead of being waited out, for callers that must stop
        at the first one, such as the rate-limit probe.
        """
        params = {k: v for k, v in (params or {}).items() if v is not None}
        path = API_PREFIX + endpoint
        weight = endpoint_weight(path, params)
        what = f"GET {path}" + (f" {params}" if params else "")
        attempt = 0
        limited = 0
        transport_failures = 0
        budget = self.settings.retry_budget_s
        first_failure: float | None = None  # the budget runs from the first failure

        def spent() -> float:
            return 0.0 if first_failure is None else time.monotonic() - first_failure

        while True:
            try:
                return await self._send(path, params, weight)
            except RateLimited as err:
                self.limiter.pause(err.retry_after)
                if not retry_rate_limited:
                    raise
                first_failure = first_failure or time.monotonic()
                limited += 1
                if limited > MAX_RATE_LIMITED_RETRIES or spent() + err.retry_after > budget:
                    self.stats.failures += 1
                    raise RetriesExhausted(what, attempt + limited, err, spent()) from err
                if (tally := _TALLY.get()) is not None:
                    tally.rate_limited += 1
                log.warning("%s: 429, pausing all requests for %.2f s", what, err.retry_after)
            except TemporaryError as err:
                first_failure = first_failure or time.monotonic()
                transport = isinstance(err.__cause__, httpx.TransportError)
                transport_failures += transport
                attempt += 1
                never_answered = self.base_url not in _ANSWERED
                if (
                    transport
                    and never_answered
                    and transport_failures > self.settings.connect_retries
                ):
                    self.stats.failures += 1
                    raise self._unreachable(err, attempt) from err
                delay = min(
                    self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempt - 1)
                )
                delay *= 0.5 + self._rng.random() / 2
                if attempt > self.settings.max_retries or spent() + delay > budget:
                    self.stats.failures += 1
                    if never_answered and transport_failures == attempt:
                        raise self._unreachable(err, attempt) from err
                    raise RetriesExhausted(what, attempt, err, spent()) from err
                self.stats.retries += 1
                if (tally := _TALLY.get()) is not None:
                    tally.retries += 1
                log.warning(
                    "%s: %s; retry %d/%d in %.2f s",
                    what,
                    err,
                    attempt,
                    self.settings.max_retries,
                    delay,
                )
                await asyncio.sleep(delay)

    def _unreachable(self, err: Exception, attempts: int) -> Unreachable:
        return Unreachable(
            f"cannot reach {self.base_url} ({err}; {attempts} attempts). Check the base URL "
            "(--base-url or ASTERAI_BASE_URL) and the network; AsterAI never falls back to "
            "other data."
        )

    def _still_banned(self) -> IPBanned | None:
        """The ban in force: no request is sent until it ends (the server's Retry-After,
        or ``BAN_WITHOUT_RETRY_AFTER_S`` when it gave none), never earlier; then requests
        go again (a long-running process resumes; a one-shot step has stopped on it)."""
        if self._banned is not None and time.monotonic() >= self._banned_until:
            self._banned = None
        return self._banned

    async def _send(self, path: str, params: dict[str, Any], weight: int) -> Response:
        return await self.send_once("GET", path, weight, params=params)

    async def send_once(self, method: str, path: str, weight: int,
                        prepare: Callable[[], dict[str, Any]] | None = None,
                        **kwargs: Any) -> Response:  # fmt: skip
        """One request (``kwargs``: httpx's ``params``, ``content``, ``headers``) through
        the limiter and the ban, its reply classified; no retry (the caller's: a signed
        order must never be sent twice blindly). ``prepare``: more of ``kwargs``, built
        once the limiter lets the request go (a signature whose timestamp or nonce must
        be fresh when it arrives, however long the wait)."""
        async with self._slots:
            if (banned := self._still_banned()) is not None:
                raise banned
            await self.limiter.acquire(weight)
            if (banned := self._still_banned()) is not None:
                raise banned
            if prepare is not None:
                kwargs = {**kwargs, **prepare()}
            self.stats.requests += 1
            self.stats.weight += weight
            self.stats.sends.append((time.monotonic(), weight))
            self.stats.by_path[path] += 1
            if (tally := _TALLY.get()) is not None:
                tally.requests += 1
                tally.weight += weight
            started = time.perf_counter()
            try:
                reply = await self._http.request(method, path, **kwargs)
                body = reply.content
            except httpx.TransportError as err:
                raise TemporaryError(f"{type(err).__name__}: {err or 'connection failed'}") from err
            latency = time.perf_counter() - started
            self.limiter.note_latency(latency)
        _ANSWERED.add(self.base_url)  # an HTTP answer, whatever its status
        return self._classify(path, reply, body, weight, latency)

    def _classify(
        self, path: str, reply: httpx.Response, body: bytes, weight: int, latency: float
    ) -> Response:
        """Map an HTTP reply to a ``Response`` or a typed error (the one place that does)."""
        used = used_weight_from_headers(reply.headers, self.rate_limit.header)
        if used is not None:
            self.limiter.observe(used)
        status = reply.status_code
        retry_after = _retry_after(reply.headers)
        if status == 418:
            self.stats.banned += 1
            self._banned = IPBanned(retry_after, _error_text(body) or "")
            self._banned_until = time.monotonic() + (
                retry_after if retry_after is not None else BAN_WITHOUT_RETRY_AFTER_S
            )
            raise self._banned
        if status == 429:
            self.stats.rate_limited += 1
            raise RateLimited(retry_after if retry_after is not None else self.rate_limit.window_s)
        if status >= 500:
            raise TemporaryError(f"HTTP {status} from {path}: {_error_text(body)[:200]}")
        if status >= 400:
            code, msg = _error_fields(body)
            raise api_error(status, code, msg or f"HTTP {status}", path)
        try:
            data = json.loads(body)
        except ValueError as err:
            raise TemporaryError(f"unparseable body from {path} ({len(body)} bytes)") from err
        self.stats.responses += 1
        self.stats.latencies_s.append(latency)
        return Response(data, body, hashlib.sha256(body).hexdigest(), weight, used, latency)

    # -- setup --------------------------------------------------------------
    async def load_exchange_info(self) -> dict[str, Any]:
        """Fetch exchangeInfo and adopt its declared REQUEST_WEIGHT limit."""
        info = (await self.request("exchangeInfo")).data
        if not isinstance(info, dict):
            raise ExchangeError(f"exchangeInfo from {self.base_url} is not a JSON object")
        try:
            rate = RateLimit.from_exchange_info(info)
        except (KeyError, TypeError, ValueError) as err:
            raise ExchangeError(
                f"exchangeInfo from {self.base_url} has no usable REQUEST_WEIGHT rate limit ({err}); "
                "AsterAI will not guess the exchange's limits"
            ) from err
        self.set_rate_limit(rate)
        self.exchange_info = info
        return info

    def set_rate_limit(self, rate: RateLimit) -> None:
        if rate != self.rate_limit:
            old = self.limiter
            self.rate_limit = rate
            self.limiter = WeightLimiter(rate, safety=self.settings.weight_safety)
            self.limiter.adopt(old)

    # -- endpoints ----------------------------------------------------------
    async def ping(self) -> Response:
        return await self.request("ping")

    async def server_time(self) -> int:
        """The exchange's clock in epoch ms: AsterAI's "now"."""
        data = (await self.request("time")).data
        try:
            return int(data["serverTime"])
        except (KeyError, TypeError, ValueError) as err:
            raise ExchangeError(f"/fapi/v1/time returned no serverTime: {data!r}") from err

    async def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> Response:
        return await self.request(
            "klines",
            {
                "symbol": symbol,
                "interval": interval,
                "startTime": start_ms,
                "endTime": end_ms,
                "limit": limit,
            },
        )

    async def first_kline(self, symbol: str, interval: str) -> tuple[int | None, Response]:
        """Open time of the first bar the exchange has (its listing), and the reply."""
        reply = await self.klines(symbol, interval, start_ms=0, limit=1)
        opens = parse_klines(reply.data)["open_time"]
        return (int(opens[0]) if len(opens) else None), reply

    async def funding_rate(
        self,
        symbol: str | None,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> Response:
        return await self.request(
            "fundingRate",
            {"symbol": symbol, "startTime": start_ms, "endTime": end_ms, "limit": limit},
        )

    async def funding_info(self) -> Response:
        return await self.request("fundingInfo")

    async def premium_index(self, symbol: str | None = None) -> Response:
        return await self.request("premiumIndex", {"symbol": symbol})

    async def ticker_24hr(self, symbol: str | None = None) -> Response:
        return await self.request("ticker/24hr", {"symbol": symbol})

    async def depth(self, symbol: str, limit: int | None = None) -> Response:
        return await self.request("depth", {"symbol": symbol, "limit": limit})

    async def trades(self, symbol: str, limit: int | None = None) -> Response:
        return await self.request("trades", {"symbol": symbol, "limit": limit})


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("Retry-After")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _error_fields(body: bytes) -> tuple[int | None, str]:
    try:
        data = json.loads(body)
    except ValueError:
        return None, body[:200].decode("utf-8", "replace")
    if isinstance(data, dict):
        code = data.get("code")
        return (
            int(code) if isinstance(code, int | str) and str(code).lstrip("-").isdigit() else None,
            str(data.get("msg", "")),
        )
    return None, str(data)[:200]


def _error_text(body: bytes) -> str:
    code, msg = _error_fields(body)
    return f"{code}: {msg}" if code is not None else msg


# -- response parsing (the exchange's formats, in one place) -----------------

KLINE_FIELDS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base",
    "taker_buy_quote",
)


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def parse_klines(rows: Any) -> dict[str, np.ndarray]:
    """Kline rows (the API's arrays) to column arrays; nulls become NaN / -1 for trades."""
    if not isinstance(rows, list):
        raise ExchangeError(f"klines response is not a list: {str(rows)[:120]}")
    n = len(rows)
    out = {
        "open_time": np.empty(n, np.int64),
        "close_time": np.empty(n, np.int64),
        "trades": np.full(n, -1, np.int64),
    }
    for name in (
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "taker_buy_base",
        "taker_buy_quote",
    ):
        out[name] = np.empty(n, np.float64)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) < 11:
            raise ExchangeError(f"kline row {i} has an unexpected shape: {str(row)[:120]}")
        try:
            out["open_time"][i] = int(row[0])
            out["open"][i] = float(row[1])
            out["high"][i] = float(row[2])
            out["low"][i] = float(row[3])
            out["close"][i] = float(row[4])
            out["volume"][i] = float(row[5])
            out["close_time"][i] = int(row[6])
            out["quote_volume"][i] = float(row[7])
            if row[8] is not None:
                out["trades"][i] = int(row[8])
            out["taker_buy_base"][i] = _num(row[9])
            out["taker_buy_quote"][i] = _num(row[10])
        except (TypeError, ValueError) as err:
            raise ExchangeError(f"kline row {i} has a non-numeric field: {str(row)[:120]}") from err
    return out


def parse_funding(rows: Any) -> dict[str, np.ndarray]:
    """fundingRate rows to column arrays (``mark_price`` NaN where absent)."""
    if not isinstance(rows, list):
        raise ExchangeError(f"fundingRate response is not a list: {str(rows)[:120]}")
    n = len(rows)
    times = np.empty(n, np.int64)
    rates = np.empty(n, np.float64)
    marks = np.full(n, np.nan)
    for i, row in enumerate(rows):
        try:
            times[i] = int(row["fundingTime"])
            rates[i] = float(row["fundingRate"])
            if row.get("markPrice") not in (None, ""):
                marks[i] = float(row["markPrice"])
        except (KeyError, TypeError, ValueError) as err:
            raise ExchangeError(
                f"funding row {i} has an unexpected shape: {str(row)[:120]}"
            ) from err
    return {"funding_time": times, "funding_rate": rates, "mark_price": marks}
