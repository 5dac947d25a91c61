"""Asset discovery: which perpetuals the exchange lists, what they are, and which can be trained.

``discover(client, settings)`` asks the exchange (or a replay of it) and returns the
document that ``run_discovery`` writes, atomically, to
``data/aster_assets_discovery.json``.

Requests and their weight (the client's limiter paces them)::

    GET /fapi/v1/time                  1   "now" is the exchange's clock (DESIGN.md)
    GET /fapi/v1/exchangeInfo          1
    GET /fapi/v1/ticker/24hr           40  all symbols in one call
    GET /fapi/v1/fundingInfo           1   funding interval, rate cap and floor
    per perpetual symbol, concurrently:
      GET /fapi/v1/klines 1h startTime=0 limit=1             1  first bar on the exchange
      GET /fapi/v1/klines 1h (last activity_lookback_hours)  2  one page (limit 100..499)

so with the default 168-hour lookback the total is ``43 + 3 * symbols`` (100 for the 19
recorded symbols); the plan and the weight actually used are both written into the file
(``weight.planned``, ``weight.used``). A lookback over 499 hours takes several 499-bar
pages (the weight-optimal page); the plan then counts every page and is an upper bound,
because a symbol with a shorter history needs fewer.

The file: ``generated_at`` (local clock), ``server_time`` (ms) and ``server_time_iso``,
``base_url``, ``asterai_version``, ``settings`` (the DiscoverySettings used), ``counts``
(per category, ``trainable``, ``total``), ``weight``, ``problems``, ``skipped``
(non-perpetuals) and ``symbols``: one record per perpetual, sorted by name, with
``symbol, status, contract_type, base_asset, quote_asset, onboard_date, filters
{tick_size, step_size, min_notional}, volume_24h, quote_volume_24h, trades_24h,
price_change_pct_24h, first_bar_time, history_hours, history_bars, activity {bars,
zero_volume_share, distinct_closes, weekday_zero_volume_share, weekend_zero_volume_share,
session_bars, session_zero_volume_share, off_session_zero_volume_share}, category,
category_evidence, trainable, reason, funding {interval_hours, cap, floor}`` (``funding``
is ``null`` where fundingInfo does not list the symbol). Unknown values are ``null``.

Rules, applied to every symbol of ``exchangeInfo``:

1. Only ``contractType == PERPETUAL`` is kept (a symbol without a contract type is
   kept too); the others are listed under ``skipped``.
2. ``status`` other than ``TRADING`` (only when the exchange gives a status): not
   trainable, the status is the reason.
3. Activity is measured on the last ``activity_lookback_hours`` *closed* 1h bars before
   the server's time: bars, share of zero-volume bars, distinct closes, and the
   zero-volume share on UTC weekdays / weekends and inside / outside the US stock
   session (weekdays 09:30-16:00 America/New_York, daylight saving included; a bar
   counts as "in session" when it overlaps the session; exchange holidays are not
   modelled).
4. Category, first match wins:

   * ``dead``: every bar of the lookback has zero volume and there is one distinct close,
     or there is no bar at all. Not trainable: "no trading: constant price and zero
     volume over the last N hours".
   * ``stock_perpetual``: ``underlyingType`` / ``underlyingSubType`` of exchangeInfo names
     an equity or stock; otherwise, from the data, all of
       - zero-volume share within [STOCK_ZERO_SHARE_MIN, STOCK_ZERO_SHARE_MAX] = [0.20, 0.95],
       - zero-volume share outside the US session >= STOCK_OFF_SESSION_ZERO_MIN (0.45):
         the market is mostly idle while the stock market is closed,
       - zero-volume share inside the session <= STOCK_SESSION_RATIO_MAX (0.6) x the
         share outside it: the idle hours are concentrated outside the session,
       - at least STOCK_MIN_BARS_EACH (6) bars both in and out of session.
     Measured on the recording (default 168 closed bars to 2025-10-15 03:00 UTC):
     AAPLUSDT has 58% zero-volume hours, 11% inside the US session and 71% outside it
     (ratio 0.16; UTC weekdays 52%, weekends 75%). The next closest live symbols are
     AIOUSDT (24% zero hours, 28% outside the session) and 2ZUSDT (18%, 22%); every
     other live symbol has at most 5%. Over every lookback from 24 to 720 hours
     AAPLUSDT stays at 47-73% outside the session with a ratio of at most 0.56, while no
     other symbol exceeds 41% outside the session (2ZUSDT), so the rule picks AAPLUSDT
     and only AAPLUSDT at any lookback the settings allow. Stock perpetuals are
     trainable: closed hours are a property of the market, not a defect.
   * ``new_listing``: listed for fewer than ``new_listing_days`` days at the server's time.
     The listing time is ``onboardDate`` when exchangeInfo gives it, else the first 1h
     bar; the age is counted in whole hourly bars opened so far (the current bar
     included, ``history_hours``), so a symbol with exactly ``new_listing_days * 24`` bars
     is not new. (In the recording 2ZUSDT has 303 bars, 4USDT 184, 1000CHEEMSUSDT 39; the
     other symbols have 720 or 743, i.e. 30 days or more; the recorded history of the
     720-bar symbols is cut at 30 days, so their listing age sits on the default
     boundary, and an exchange that sends ``onboardDate`` settles it.)
   * ``major``: the base asset, after stripping a leading ``1000000`` or ``1000``
     multiplier, is in ``settings.discovery.majors``.
   * ``alt``: everything else.

5. Fewer than ``min_history_bars`` closed 1h bars (``history_bars``): not trainable.
6. A symbol whose requests fail is listed, not trainable, with the error as the reason,
   and categorised from what is known (never ``dead`` or ``stock_perpetual`` without
   data); the file is written all the same.

Reasons are joined with "; " when several apply.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from asterai import __version__
from asterai.atomic import write_json
from asterai.config import Settings
from asterai.exchange.client import AsterClient, parse_klines
from asterai.exchange.errors import ExchangeError, IPBanned, Unreachable
from asterai.exchange.weights import OPTIMAL_KLINE_PAGE, klines_weight, ticker_24hr_weight
from asterai.intervals import HOUR_MS, iso_ms, last_closed_open_time
from asterai.paths import DataPaths

__all__ = [
    "CATEGORIES",
    "activity_stats",
    "classify_stock_activity",
    "discover",
    "discovery_plan",
    "in_us_session",
    "is_perpetual",
    "run_discovery",
    "strip_multiplier",
]

CATEGORIES = ("major", "alt", "new_listing", "stock_perpetual", "dead")

#: Stock-perpetual rule from the data (see the module docstring for the measurements).
STOCK_ZERO_SHARE_MIN = 0.20
STOCK_ZERO_SHARE_MAX = 0.95
STOCK_OFF_SESSION_ZERO_MIN = 0.45
STOCK_SESSION_RATIO_MAX = 0.6
STOCK_MIN_BARS_EACH = 6

#: The US stock session (regular hours), in exchange-local time.
US_MARKET_TZ = ZoneInfo("America/New_York")
US_SESSION_OPEN = (9, 30)
US_SESSION_CLOSE = (16, 0)

#: Leading multipliers of meme perps (``1000PEPE`` is PEPE x 1000).
MULTIPLIER_PREFIXES = ("1000000", "1000")

#: Words in ``underlyingType`` / ``underlyingSubType`` that mark an equity underlying.
STOCK_WORDS = ("EQUITY", "STOCK")

INTERVAL = "1h"

ProgressCallback = Callable[[str], None]


# --------------------------------------------------------------------------- helpers


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def is_perpetual(entry: dict[str, Any]) -> bool:
    """A perpetual contract (a symbol that names no contract type counts as one)."""
    ctype = entry.get("contractType")
    return ctype in (None, "", "PERPETUAL")


def strip_multiplier(asset: str) -> str:
    """``1000PEPE -> PEPE``, ``1000000MOG -> MOG``; other names unchanged."""
    for prefix in MULTIPLIER_PREFIXES:
        if asset.startswith(prefix) and len(asset) > len(prefix):
            return asset[len(prefix) :]
    return asset


def _float_or_none(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _filters(entry: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {"tick_size": None, "step_size": None, "min_notional": None}
    # the exchange's liquidation fee rate, where its exchangeInfo states one per symbol
    out["liquidation_fee"] = _float_or_none(entry.get("liquidationFee"))
    for f in entry.get("filters") or []:
        kind = f.get("filterType")
        if kind == "PRICE_FILTER":
            out["tick_size"] = _float_or_none(f.get("tickSize"))
        elif kind == "LOT_SIZE":
            out["step_size"] = _float_or_none(f.get("stepSize"))
        elif kind == "MIN_NOTIONAL":
            out["min_notional"] = _float_or_none(f.get("notional", f.get("minNotional")))
    return out


def _funding_record(entry: dict[str, Any]) -> dict[str, float | None]:
    """``/fapi/v1/fundingInfo`` for one symbol: interval hours, rate cap and floor."""
    return {
        "interval_hours": _float_or_none(entry.get("fundingIntervalHours")),
        "cap": _float_or_none(entry.get("fundingFeeCap")),
        "floor": _float_or_none(entry.get("fundingFeeFloor")),
    }


def _base_asset(entry: dict[str, Any]) -> str:
    base = entry.get("baseAsset")
    if base:
        return str(base)
    symbol = str(entry["symbol"])
    quote = entry.get("quoteAsset")
    for q in ([quote] if quote else []) + ["USDT", "USDC", "USD"]:
        if symbol.endswith(q) and len(symbol) > len(q):
            return symbol[: -len(q)]
    return symbol


def _stock_metadata(entry: dict[str, Any]) -> str | None:
    """The exchangeInfo field that names an equity underlying, if any."""
    utype = entry.get("underlyingType")
    if isinstance(utype, str) and any(w in utype.upper() for w in STOCK_WORDS):
        return f"exchangeInfo underlyingType {utype!r}"
    sub = entry.get("underlyingSubType")
    subs = sub if isinstance(sub, list) else [sub] if isinstance(sub, str) else []
    for s in subs:
        if isinstance(s, str) and any(w in s.upper() for w in STOCK_WORDS):
            return f"exchangeInfo underlyingSubType {s!r}"
    return None


# --------------------------------------------------------------------------- activity


def in_us_session(open_ms: int, bar_ms: int = HOUR_MS) -> bool:
    """Does the bar ``[open_ms, open_ms + bar_ms)`` overlap a US regular stock session?"""
    start = datetime.fromtimestamp(open_ms / 1000, tz=UTC).astimezone(US_MARKET_TZ)
    end = datetime.fromtimestamp((open_ms + bar_ms) / 1000, tz=UTC).astimezone(US_MARKET_TZ)
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    for d in (day, day + timedelta(days=1)):
        if d.weekday() >= 5:
            continue
        s_open = d.replace(hour=US_SESSION_OPEN[0], minute=US_SESSION_OPEN[1])
        s_close = d.replace(hour=US_SESSION_CLOSE[0], minute=US_SESSION_CLOSE[1])
        if start < s_close and end > s_open:
            return True
    return False


def _share(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def activity_stats(
    open_times: list[int], volumes: list[float], closes: list[float]
) -> dict[str, Any]:
    """Activity of closed 1h bars: counts and zero-volume shares (``None`` where no bars)."""
    zero = [not (v > 0) for v in volumes]  # NaN volume counts as no trading
    weekday = [datetime.fromtimestamp(t / 1000, tz=UTC).weekday() < 5 for t in open_times]
    session = [in_us_session(t) for t in open_times]
    return {
        "bars": len(open_times),
        "zero_volume_share": _share(zero),
        "distinct_closes": len({c for c in closes if not math.isnan(c)}),
        "weekday_zero_volume_share": _share([z for z, w in zip(zero, weekday, strict=True) if w]),
        "weekend_zero_volume_share": _share(
            [z for z, w in zip(zero, weekday, strict=True) if not w]
        ),
        "session_bars": sum(session),
        "session_zero_volume_share": _share([z for z, s in zip(zero, session, strict=True) if s]),
        "off_session_zero_volume_share": _share(
            [z for z, s in zip(zero, session, strict=True) if not s]
        ),
    }


def is_dead(activity: dict[str, Any]) -> bool:
    if activity["bars"] == 0:
        return True
    return activity["zero_volume_share"] == 1.0 and activity["distinct_closes"] <= 1


def classify_stock_activity(activity: dict[str, Any]) -> str | None:
    """The data rule for a stock perpetual: a sentence with the numbers, or ``None``."""
    zero = activity.get("zero_volume_share")
    inside = activity.get("session_zero_volume_share")
    outside = activity.get("off_session_zero_volume_share")
    n_in = activity.get("session_bars") or 0
    n_out = (activity.get("bars") or 0) - n_in
    if zero is None or inside is None or outside is None:
        return None
    if n_in < STOCK_MIN_BARS_EACH or n_out < STOCK_MIN_BARS_EACH:
        return None
    if not (STOCK_ZERO_SHARE_MIN <= zero <= STOCK_ZERO_SHARE_MAX):
        return None
    if outside < STOCK_OFF_SESSION_ZERO_MIN:
        return None
    if inside > STOCK_SESSION_RATIO_MAX * outside:
        return None
    return (
        f"activity: {zero:.0%} zero-volume hours, {inside:.0%} inside the US stock session "
        f"and {outside:.0%} outside it"
    )


# --------------------------------------------------------------------------- plan


def _lookback_pages(lookback: int) -> list[int]:
    """Page limits that cover ``lookback`` bars at the best weight per bar (<= 499 each)."""
    pages = []
    left = lookback
    while left > 0:
        take = min(left, OPTIMAL_KLINE_PAGE)
        pages.append(take)
        left -= take
    return pages


def discovery_plan(n_symbols: int, settings: Settings) -> dict[str, int]:
    """Request weight discovery spends on ``n_symbols`` perpetuals, by item, and the total."""
    pages = _lookback_pages(settings.discovery.activity_lookback_hours)
    plan = {
        "time": 1,
        "exchangeInfo": 1,
        "ticker/24hr": ticker_24hr_weight(False),
        "fundingInfo": 1,
        "first_bar_probes": n_symbols * klines_weight(1),
        "activity_pages": n_symbols * sum(klines_weight(p) for p in pages),
    }
    plan["total"] = sum(plan.values())
    return plan


# --------------------------------------------------------------------------- per symbol


async def _first_bar(client: AsterClient, symbol: str) -> int | None:
    return (await client.first_kline(symbol, INTERVAL))[0]


async def _lookback_bars(
    client: AsterClient, symbol: str, last_closed: int, lookback: int
) -> dict[str, list]:
    start = last_closed - (lookback - 1) * HOUR_MS
    times: list[int] = []
    vols: list[float] = []
    closes: list[float] = []
    cursor = start
    for limit in _lookback_pages(lookback):
        rows = parse_klines(
            (
                await client.klines(
                    symbol, INTERVAL, start_ms=cursor, end_ms=last_closed + HOUR_MS - 1, limit=limit
                )
            ).data
        )
        for t, v, c in zip(rows["open_time"], rows["volume"], rows["close"], strict=True):
            t = int(t)
            if start <= t <= last_closed and (not times or t > times[-1]):
                times.append(t)
                vols.append(float(v))
                closes.append(float(c))
        if len(rows["open_time"]) < limit:
            break
        cursor = int(rows["open_time"][-1]) + HOUR_MS
        if cursor > last_closed:
            break
    return {"open_time": times, "volume": vols, "close": closes}


async def _measure(
    client: AsterClient, symbol: str, last_closed: int, lookback: int
) -> tuple[int | None, dict[str, list]]:
    first, bars = await asyncio.gather(
        _first_bar(client, symbol), _lookback_bars(client, symbol, last_closed, lookback)
    )
    return first, bars


def _symbol_record(
    entry: dict[str, Any],
    ticker: dict[str, Any] | None,
    measured: tuple[int | None, dict[str, list]] | None,
    error: BaseException | None,
    server_time: int,
    settings: Settings,
) -> dict[str, Any]:
    ds = settings.discovery
    lookback = ds.activity_lookback_hours
    symbol = str(entry["symbol"])
    status = entry.get("status")
    base = _base_asset(entry)
    onboard = _int_or_none(entry.get("onboardDate"))
    ticker = ticker or {}
    rec: dict[str, Any] = {
        "symbol": symbol,
        "status": status,
        "contract_type": entry.get("contractType"),
        "base_asset": base,
        "quote_asset": entry.get("quoteAsset"),
        "onboard_date": iso_ms(onboard),
        "filters": _filters(entry),
        "volume_24h": _float_or_none(ticker.get("volume")),
        "quote_volume_24h": _float_or_none(ticker.get("quoteVolume")),
        "trades_24h": _int_or_none(ticker.get("count")),
        "price_change_pct_24h": _float_or_none(ticker.get("priceChangePercent")),
        "first_bar_time": None,
        "history_hours": None,
        "history_bars": None,
        "activity": None,
        "category": None,
        "category_evidence": None,
        "trainable": False,
        "reason": None,
    }
    reasons: list[str] = []
    if error is not None:
        reasons.append(f"requests failed: {type(error).__name__}: {error}")
    if status is not None and status != "TRADING":
        reasons.append(f"status is {status}, not TRADING")

    first = None
    activity = None
    if measured is not None:
        first, bars = measured
        activity = activity_stats(bars["open_time"], bars["volume"], bars["close"])
        rec["activity"] = activity
    last_closed = last_closed_open_time(server_time, INTERVAL)
    if first is not None:
        rec["first_bar_time"] = iso_ms(first)
        # bars opened so far, the current (unclosed) one included
        rec["history_hours"] = (
            max(0, (server_time - first) // HOUR_MS + 1) if first <= server_time else 0
        )
        rec["history_bars"] = max(0, (last_closed - first) // HOUR_MS + 1)
    elif measured is not None:
        rec["history_hours"] = 0
        rec["history_bars"] = 0

    listed_at = onboard if onboard is not None else first
    listed_hours = None
    if listed_at is not None:
        listed_hours = (
            max(0, (server_time - listed_at) // HOUR_MS + 1) if listed_at <= server_time else 0
        )
    stock_meta = _stock_metadata(entry)

    category: str
    evidence: str | None = None
    if activity is not None and is_dead(activity):
        category = "dead"
        evidence = (
            "no bars"
            if activity["bars"] == 0
            else f"{activity['bars']} bars, all zero volume, one distinct close"
        )
        reasons.append(f"no trading: constant price and zero volume over the last {lookback} hours")
    elif stock_meta is not None:
        category, evidence = "stock_perpetual", stock_meta
    elif activity is not None and (why := classify_stock_activity(activity)) is not None:
        category, evidence = "stock_perpetual", why
    elif listed_hours is not None and listed_hours < ds.new_listing_days * 24:
        category = "new_listing"
        source = "onboardDate" if onboard is not None else "first 1h bar"
        evidence = f"listed {listed_hours} hours ago ({source}), under {ds.new_listing_days} days"
    elif strip_multiplier(base).upper() in {m.upper() for m in ds.majors}:
        category, evidence = "major", f"base asset {strip_multiplier(base)} is in majors"
    else:
        category, evidence = "alt", f"base asset {strip_multiplier(base)} is not in majors"
    rec["category"] = category
    rec["category_evidence"] = evidence

    short = rec["history_bars"] is not None and rec["history_bars"] < ds.min_history_bars
    if measured is not None and category != "dead" and short:
        reasons.append(
            f"only {rec['history_bars']} closed hourly bars of history; training needs at "
            f"least {ds.min_history_bars} (min_history_bars)"
        )
    rec["trainable"] = not reasons
    rec["reason"] = "; ".join(reasons) if reasons else None
    return rec


# --------------------------------------------------------------------------- discovery


async def discover(
    client: AsterClient,
    settings: Settings,
    *,
    on_symbol: ProgressCallback | None = None,
    on_start: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Discover the exchange's perpetuals and classify them (see the module docstring).

    ``on_start(n)`` is called once the number of symbols is known and ``on_symbol(name)``
    after each symbol's requests finish (for a progress bar).
    """
    weight_before = client.stats.weight
    requests_before = client.stats.requests
    server_time = await client.server_time()
    info = await client.load_exchange_info()
    problems: list[str] = []
    try:
        tickers_raw = (await client.ticker_24hr()).data
    except (IPBanned, Unreachable):
        raise
    except ExchangeError as err:
        tickers_raw = []
        problems.append(f"ticker/24hr failed, 24h volumes are unknown: {err}")
    tickers = {
        t.get("symbol"): t
        for t in (tickers_raw if isinstance(tickers_raw, list) else [])
        if isinstance(t, dict)
    }
    try:
        funding_raw = (await client.funding_info()).data
    except (IPBanned, Unreachable):
        raise
    except ExchangeError as err:
        funding_raw = []
        problems.append(f"fundingInfo failed, funding caps are unknown: {err}")
    funding = {
        f.get("symbol"): _funding_record(f)
        for f in (funding_raw if isinstance(funding_raw, list) else [])
        if isinstance(f, dict)
    }

    entries = [e for e in info.get("symbols") or [] if isinstance(e, dict) and e.get("symbol")]
    perps = [e for e in entries if is_perpetual(e)]
    skipped = [
        {"symbol": e["symbol"], "contract_type": e.get("contractType")}
        for e in entries
        if not is_perpetual(e)
    ]
    lookback = settings.discovery.activity_lookback_hours
    last_closed = last_closed_open_time(server_time, INTERVAL)
    if on_start is not None:
        on_start(len(perps))

    async def one(entry: dict[str, Any]) -> dict[str, Any]:
        symbol = str(entry["symbol"])
        measured = None
        error: BaseException | None = None
        try:
            measured = await _measure(client, symbol, last_closed, lookback)
        except (IPBanned, Unreachable):
            raise
        except (ExchangeError, ValueError, KeyError, TypeError) as err:
            error = err
        rec = _symbol_record(entry, tickers.get(symbol), measured, error, server_time, settings)
        if on_symbol is not None:
            on_symbol(symbol)
        return rec

    records = await asyncio.gather(*(one(e) for e in perps))
    records.sort(key=lambda r: r["symbol"])
    for r in records:
        r["funding"] = funding.get(r["symbol"])

    counts: dict[str, int] = {c: 0 for c in CATEGORIES}
    for r in records:
        counts[r["category"]] += 1
    counts["trainable"] = sum(1 for r in records if r["trainable"])
    counts["total"] = len(records)
    failed = [
        r["symbol"] for r in records if r["reason"] and r["reason"].startswith("requests failed")
    ]
    if failed:
        problems.append(f"requests failed for {len(failed)} symbol(s): {', '.join(failed)}")

    return {
        "generated_at": utc_now_iso(),
        "server_time": server_time,
        "server_time_iso": iso_ms(server_time),
        "base_url": client.base_url,
        "asterai_version": __version__,
        "settings": settings.discovery.model_dump(mode="json"),
        "counts": counts,
        "weight": {
            "planned": discovery_plan(len(perps), settings),
            "used": client.stats.weight - weight_before,
            "requests": client.stats.requests - requests_before,
        },
        "problems": problems,
        "skipped": skipped,
        "symbols": records,
    }


def run_discovery(settings: Settings, *, progress: bool = False) -> dict[str, Any]:
    """Run discovery against ``settings.base_url`` and write ``data/aster_assets_discovery.json``."""

    async def main() -> dict[str, Any]:
        async with AsterClient(settings.base_url, settings.exchange) as client:
            if not progress:
                return await discover(client, settings)
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            with Progress(
                TextColumn("discovering"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
            ) as bar:
                task = bar.add_task("", total=None)
                return await discover(
                    client,
                    settings,
                    on_start=lambda n: bar.update(task, total=n),
                    on_symbol=lambda s: bar.update(task, advance=1, description=s),
                )

    doc = asyncio.run(main())
    write_json(DataPaths.at(settings.data_root).discovery, doc)
    return doc
