"""The replay's request handling for the public market-data endpoints of ``/fapi/v1``.

:class:`Replay` answers a path and its parameters with a status and a JSON body,
independent of the socket layer (``http.py``): ``ping``, ``time``, ``exchangeInfo``,
``klines``, ``fundingRate``, ``fundingInfo``, ``premiumIndex``, ``ticker/24hr``,
``depth`` and ``trades``, each a method named in ``Replay.routes``. It also holds what
the socket layer asks of it: the faults to draw, the weight limiter, the counters and
the served time (frozen at the recording's, or a :class:`PlayClock`).
"""

from __future__ import annotations

import math
import random
import re
import threading
from decimal import Decimal
from typing import Any

import numpy as np

from asterai.exchange.replay.clock import PlayClock
from asterai.exchange.replay.errors import JSON, ApiError, bad_value, mandatory
from asterai.exchange.replay.faults import FaultSpec
from asterai.exchange.replay.limits import WeightLimiter
from asterai.exchange.replay.recording import (
    FundingSeries,
    KlineSeries,
    Recording,
    format_number,
)
from asterai.exchange.replay.stats import ReplayStats
from asterai.exchange.weights import (
    DEFAULT_ORDER_LIMIT,
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

PREFIX = "/fapi/v1/"
_INT_RE = re.compile(r"^[0-9]{1,20}$")


#: the market data is served under ``/fapi/v3`` too (ccxt reads it there)
V3_PREFIX = "/fapi/v3/"


#: Aster's spot exchange, which the replay does not serve: its exchangeInfo lists no
#: symbol (ccxt's ``load_markets`` reads it beside the futures')
SPOT_EXCHANGE_INFO = "/api/v3/exchangeInfo"


#: every asset's precision in the documented exchangeInfo (``baseAssetPrecision``,
#: ``quotePrecision``)
ASSET_PRECISION = 8


def _decimals(grid: str) -> int:
    """The decimal places of a tick or step (``"0.010"``: 2)."""
    exponent = Decimal(grid).normalize().as_tuple().exponent
    return max(0, -int(exponent))


def market_path(path: str, routes) -> str:
    """``path`` with a ``/fapi/v3`` market-data route read as its ``/fapi/v1`` one."""
    if path.startswith(V3_PREFIX) and path[len(V3_PREFIX) :] in routes:
        return PREFIX + path[len(V3_PREFIX) :]
    return path


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


class Replay:
    """Request handling, independent of the socket layer.

    Each endpoint is a method named in ``routes`` (its path under ``/fapi/v1/``) that
    takes the query's parameters and returns the JSON body or raises ``ApiError``."""

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
        self.limiter = WeightLimiter(window_seconds, weight_limit, ban_after, ban_seconds)
        self._rng = random.Random(0 if seed is None else seed)
        self._rng_lock = threading.Lock()
        #: the signed account endpoints (``account_api.AccountAPI``): a replay with
        #: accounts (``ReplayServer(accounts=...)``), None for market data alone
        self.accounts = None
        #: the user-data stream's faults, drawn from their own seeded generator
        self.event_faults = None
        self.event_rng = random.Random(1 if seed is None else seed + 1)
        self.event_lock = threading.Lock()
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

    def lost_as_drop(self) -> bool:
        """How a ``lost`` fault loses an applied request's answer: the connection
        dropped (True) or a 503 with -1007 (False), half and half."""
        with self._rng_lock:
            return self._rng.random() < 0.5

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
        if path == SPOT_EXCHANGE_INFO:
            body = {"timezone": "UTC", "serverTime": self.clock_ms(),
                    "rateLimits": [self.rate_limit], "exchangeFilters": [], "assets": [],
                    "symbols": []}  # fmt: skip
            return 200, JSON(body).encode()
        name = path[len(PREFIX) :] if path.startswith(PREFIX) else None
        route = self.routes.get(name) if name is not None else None
        if route is None:
            raise ApiError(
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
            raise ApiError(
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
            raise bad_value("limit")
        return limit

    def _symbol(self, params: dict[str, str], *, required: bool) -> str | None:
        symbol = params.get("symbol")
        if not symbol:
            if required:
                raise mandatory("symbol")
            return None
        if symbol not in self.rec.symbols:
            raise ApiError(400, -1121, "Invalid symbol.")
        return symbol

    @staticmethod
    def _range(params: dict[str, str]) -> tuple[int | None, int | None]:
        start = Replay._int(params, "startTime")
        end = Replay._int(params, "endTime")
        if start is not None and end is not None and start > end:
            raise ApiError(400, -1023, "Start time is greater than end time.")
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
        return JSON({"serverTime": self.clock_ms()}).encode()

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
            # the decimals of the derived tick and step (the documentation: "do not use
            # it as tickSize"), and the assets' precision, 8 throughout the documented
            # exchangeInfo: what ccxt's markets read besides the filters
            if info.tick_size:
                entry["pricePrecision"] = _decimals(info.tick_size)
            if info.step_size:
                entry["quantityPrecision"] = _decimals(info.step_size)
            entry["baseAssetPrecision"] = entry["quotePrecision"] = ASSET_PRECISION
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
        return JSON(body).encode()

    def _klines(self, params: dict[str, str]) -> bytes:
        symbol = self._symbol(params, required=True)
        interval = params.get("interval")
        if not interval:
            raise mandatory("interval")
        limit = self._int(params, "limit")
        start = self._int(params, "startTime")
        end = self._int(params, "endTime")
        if interval not in EXCHANGE_INTERVALS:
            raise ApiError(400, -1120, "Invalid interval.")
        if limit is None:
            limit = KLINES_DEFAULT_LIMIT
        elif not 1 <= limit <= KLINES_MAX_LIMIT:
            raise bad_value("limit")
        if start is not None and end is not None and start > end:
            raise ApiError(400, -1023, "Start time is greater than end time.")
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
        return JSON(rows).encode()

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
        return JSON(out).encode()

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
            return JSON(self._premium(symbol)).encode()
        return JSON([self._premium(s) for s in self.rec.symbols]).encode()

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
                    raise ApiError(
                        404, -1000, f"No klines recorded for {symbol} in the 24 h before now."
                    )
                return JSON(ticker).encode()

            return self.cached(("ticker", symbol), one)

        def every() -> bytes:
            rows = [t for t in (self._ticker(s) for s in self.rec.symbols) if t is not None]
            return JSON(rows).encode()

        return self.cached(("ticker", None), every)

    def _depth(self, params: dict[str, str]) -> bytes:
        symbol = self._symbol(params, required=True)
        limit = self._int(params, "limit")
        if limit is None:
            limit = DEPTH_DEFAULT_LIMIT
        elif limit not in DEPTH_LIMITS:
            raise bad_value("limit")
        book = self.rec.orderbooks.get(symbol)
        if book is None:
            raise ApiError(404, -1000, f"No order book recorded for {symbol} in this replay.")
        out = dict(book)
        out["bids"] = list(book.get("bids") or [])[:limit]
        out["asks"] = list(book.get("asks") or [])[:limit]
        return JSON(out).encode()

    def _trades(self, params: dict[str, str]) -> bytes:
        symbol = self._symbol(params, required=True)
        limit = self._limit(params, TRADES_DEFAULT_LIMIT, TRADES_MAX_LIMIT)
        trades = self.rec.trades.get(symbol)
        if trades is None:
            raise ApiError(404, -1000, f"No trades recorded for {symbol} in this replay.")
        return JSON(trades[-limit:]).encode()
