"""Collect real Aster klines and funding rates into the parquet store.

For each symbol and interval the collector wants the closed bars from
``max(now - days, first bar on the exchange)`` up to the newest closed bar,
where "now" is the exchange's clock (``/fapi/v1/time``). It fetches only what
the store does not hold yet (incremental), in weight-optimal pages planned up
front by time range (so pages are independent and run concurrently), then
merges, validates and writes each series atomically with its provenance.

A run killed at any moment leaves every file either as it was or complete;
the next run fetches what is still missing, so it ends with exactly the data
of an uninterrupted run. The bar still open at collection time is never stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import fcntl
import io
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asterai import __version__, atomic
from asterai.config import Settings
from asterai.data.store import (
    Series,
    StoreError,
    from_epoch_ms,
    read_series,
    to_epoch_ms,
    write_series,
)
from asterai.exchange.client import (
    AsterClient,
    Tally,
    parse_funding,
    parse_klines,
    use_tally,
)
from asterai.exchange.errors import ExchangeError, IPBanned, RetriesExhausted, Unreachable
from asterai.exchange.weights import FUNDING_MAX_LIMIT
from asterai.intervals import DAY_MS, ceil_time, interval_ms, iso_ms, last_closed_open_time
from asterai.paths import DataPaths

log = logging.getLogger(__name__)

SOURCE = "aster"
KLINES_ENDPOINT = "/fapi/v1/klines"
FUNDING_ENDPOINT = "/fapi/v1/fundingRate"
FUNDING_KEY = "funding"


class CollectionUsageError(ValueError):
    """The request cannot be carried out as asked (unknown symbol, no discovery file)."""


# -- planning -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    """One klines request: bars with ``start_ms <= open_time <= end_ms``."""

    start_ms: int
    end_ms: int
    limit: int


def plan_pages(first_ms: int, last_ms: int, step_ms: int, page_limit: int) -> list[Page]:
    """Split the bar range ``[first_ms, last_ms]`` into pages of at most ``page_limit`` bars.

    Each page asks for exactly the bars it covers, so a short last page pays the
    lighter weight of its smaller ``limit``.
    """
    if last_ms < first_ms:
        return []
    pages = []
    start = first_ms
    while start <= last_ms:
        end = min(last_ms, start + (page_limit - 1) * step_ms)
        pages.append(Page(start, end, (end - start) // step_ms + 1))
        start = end + step_ms
    return pages


# -- results ------------------------------------------------------------------


@dataclass(slots=True)
class SeriesResult:
    symbol: str
    interval: str  # a kline interval, or "funding"
    file: str
    status: str = "pending"  # ok | up-to-date | empty | failed | skipped
    rows: int = 0
    new_rows: int = 0
    first_time: str | None = None
    last_time: str | None = None
    expected_rows: int = 0
    missing_bars: int = 0
    missing_share: float = 0.0
    gaps: int = 0
    longest_gap_bars: int = 0
    invalid_bars: int = 0
    quality_score: float | None = None
    requests: int = 0
    weight: int = 0
    retries: int = 0
    rate_limited: int = 0
    errors: list[str] = field(default_factory=list)

    def absorb(self, tally: Tally) -> None:
        self.requests, self.weight = tally.requests, tally.weight
        self.retries, self.rate_limited = tally.retries, tally.rate_limited


def describe_klines(result: SeriesResult, frame: pd.DataFrame, interval: str) -> None:
    """Fill the quality fields of ``result`` from the stored frame.

    Quality score (0..100) = 100 x (1 - missing share) x (1 - invalid share), where
    the missing share counts absent bars between the first and last stored bar and
    an invalid bar breaks ``0 < low <= open, close <= high`` or has a negative or
    non-finite volume.
    """
    result.rows = len(frame)
    if frame.empty:
        result.quality_score = 0.0
        return
    times = to_epoch_ms(frame["open_time"])
    step = interval_ms(interval)
    result.first_time, result.last_time = iso_ms(int(times[0])), iso_ms(int(times[-1]))
    result.expected_rows = int((times[-1] - times[0]) // step + 1)
    result.missing_bars = result.expected_rows - len(frame)
    result.missing_share = round(result.missing_bars / result.expected_rows, 6)
    jumps = np.diff(times) // step
    result.gaps = int(np.count_nonzero(jumps > 1))
    result.longest_gap_bars = int(jumps.max() - 1) if len(jumps) else 0
    o, h, lo, c, v = (frame[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    bad = ~((lo > 0) & (lo <= o) & (lo <= c) & (h >= o) & (h >= c) & np.isfinite(v) & (v >= 0))
    result.invalid_bars = int(bad.sum())
    result.quality_score = round(
        100.0 * (1 - result.missing_share) * (1 - result.invalid_bars / len(frame)), 3
    )


def describe_funding(result: SeriesResult, frame: pd.DataFrame) -> None:
    result.rows = len(frame)
    if not frame.empty:
        times = to_epoch_ms(frame["funding_time"])
        result.first_time, result.last_time = iso_ms(int(times[0])), iso_ms(int(times[-1]))


@dataclass(slots=True)
class CollectionReport:
    base_url: str
    server_time: int
    settings: dict[str, Any]
    symbols: list[str]
    intervals: list[str]
    series: list[SeriesResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    aborted: str | None = None
    elapsed_s: float = 0.0
    client: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[SeriesResult]:
        return [r for r in self.series if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return self.aborted is None and not self.failures

    def to_json(self) -> dict[str, Any]:
        klines = [r for r in self.series if r.interval != FUNDING_KEY]
        new_bars = sum(r.new_rows for r in klines)
        return {
            "generated_at": iso_ms(int(time.time() * 1000)),
            "collector_version": __version__,
            "source": SOURCE,
            "base_url": self.base_url,
            "server_time": self.server_time,
            "server_time_iso": iso_ms(self.server_time),
            "symbols": self.symbols,
            "intervals": self.intervals,
            "ok": self.ok,
            "aborted": self.aborted,
            "totals": {
                "series": len(klines),
                "ok": sum(r.status in ("ok", "up-to-date") for r in klines),
                "failed": sum(r.status == "failed" for r in self.series),
                "bars_stored": sum(r.rows for r in klines),
                "bars_collected": new_bars,
                "funding_rows_stored": sum(
                    r.rows for r in self.series if r.interval == FUNDING_KEY
                ),
                "elapsed_s": round(self.elapsed_s, 3),
                "bars_per_s": round(new_bars / self.elapsed_s, 1) if self.elapsed_s else None,
                **self.client,
            },
            "warnings": self.warnings,
            "series": [asdict(r) for r in self.series],
            "settings": self.settings,
        }


SUMMARY_COLUMNS = (
    "symbol",
    "interval",
    "status",
    "rows",
    "new_rows",
    "first_time",
    "last_time",
    "missing_share",
    "gaps",
    "longest_gap_bars",
    "quality_score",
    "requests",
    "weight",
    "retries",
)


def summary_csv(report: CollectionReport) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for r in report.series:
        writer.writerow(asdict(r))
    return buf.getvalue()


# -- the collector ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    symbol: str
    interval: str


class Collector:
    """Collects many series through one client; ``run`` returns a ``CollectionReport``."""

    def __init__(self, client: AsterClient, settings: Settings, *, progress: Any = None) -> None:
        self.client = client
        self.settings = settings
        self.paths = DataPaths.at(settings.data_root)
        self.progress = progress
        self._task_id = None

    # progress helpers: a rich Progress, or nothing
    def _progress_add(self, pages: int) -> None:
        if self.progress is not None and self._task_id is not None and pages:
            self.progress.update(self._task_id, total=(self.progress.tasks[0].total or 0) + pages)

    def _progress_advance(self, n: int = 1) -> None:
        if self.progress is not None and self._task_id is not None:
            self.progress.advance(self._task_id, n)

    async def run(
        self, symbols: Iterable[str], intervals: Iterable[str], days: int
    ) -> CollectionReport:
        started = time.perf_counter()
        symbols, intervals = list(symbols), list(intervals)
        now = await self.client.server_time()
        report = CollectionReport(
            base_url=self.client.base_url,
            server_time=now,
            settings=self.settings.public_dict(),
            symbols=symbols,
            intervals=intervals,
        )
        self.paths.historical.mkdir(parents=True, exist_ok=True)
        for stale in atomic.remove_stale_temp_files(self.paths.historical):
            log.info("removed a temp file left by an interrupted run: %s", stale.name)
        if self.progress is not None:
            self._task_id = self.progress.add_task("collecting", total=0)

        jobs: list[tuple[SeriesResult, Any]] = []
        for symbol in symbols:
            for interval in intervals:
                res = SeriesResult(symbol, interval, str(self.paths.klines(symbol, interval)))
                jobs.append((res, self._job(res, self._collect_klines(res, now, days))))
            if self.settings.collect.funding:
                res = SeriesResult(symbol, FUNDING_KEY, str(self.paths.funding(symbol)))
                jobs.append((res, self._job(res, self._collect_funding(res, now, days))))
        report.series = [res for res, _ in jobs]

        tasks = [asyncio.ensure_future(coro) for _, coro in jobs]
        try:
            for fut in asyncio.as_completed(tasks):
                try:
                    await fut
                except (IPBanned, Unreachable, RetriesExhausted) as err:
                    # a request that waited its whole budget is an outage, not one bad
                    # series: the others would each wait theirs too
                    outage = isinstance(err, RetriesExhausted)
                    report.aborted = (
                        f"the exchange stopped answering: {err}" if outage else str(err)
                    )
                    for t in tasks:
                        t.cancel()
                    break
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)
        for res in report.series:
            if res.status == "pending":
                res.status = "skipped"
                res.errors.append("not collected: the run was aborted")
        report.elapsed_s = time.perf_counter() - started
        stats = self.client.stats
        report.client = {
            "requests": stats.requests,
            "weight": stats.weight,
            "retries": stats.retries,
            "rate_limited_429": stats.rate_limited,
            "banned_418": stats.banned,
            "weight_limit": self.client.rate_limit.limit,
            "weight_window_s": self.client.rate_limit.window_s,
        }
        return report

    # -- klines ---------------------------------------------------------------
    async def _job(self, res: SeriesResult, work: Any) -> None:
        """Run one series' collection with its own tally; a failure stays with that series.

        A ban, an unreachable exchange, or a request that spent its whole retry budget (an
        outage) is re-raised: it ends the whole run.
        """
        tally = Tally()
        use_tally(tally)
        try:
            await work
        except (IPBanned, Unreachable):
            res.status = "failed"
            res.errors.append("aborted: the exchange cannot be used (see the report's 'aborted')")
            raise
        except RetriesExhausted as err:
            res.status = "failed"
            res.errors.append(str(err))
            raise
        except (ExchangeError, StoreError) as err:
            res.status = "failed"
            res.errors.append(str(err))
            log.error("%s %s: %s", res.symbol, res.interval, err)
        finally:
            res.absorb(tally)

    async def _collect_klines(self, res: SeriesResult, now: int, days: int) -> None:
        symbol, interval = res.symbol, res.interval
        step = interval_ms(interval)
        path = self.paths.klines(symbol, interval)
        existing = await asyncio.to_thread(read_series, path, "klines") if path.exists() else None
        if existing is not None:
            check_own_file(existing, path, symbol, interval)
        old = existing.frame if existing is not None and len(existing.frame) else None
        last_closed = last_closed_open_time(now, interval)
        wanted_first = ceil_time(now - days * DAY_MS, interval)
        listed = (existing.provenance or {}).get("listing_open_time") if existing else None
        hashes: list[str] = []

        ranges: list[tuple[int, int]] = []
        if old is not None:
            times = to_epoch_ms(old["open_time"])
            have_first, have_last = int(times[0]), int(times[-1])
            if wanted_first < have_first and listed is None:
                listed, reply = await self.client.first_kline(symbol, interval)
                hashes.append(reply.sha256)
            if listed is not None and max(wanted_first, listed) < have_first:
                ranges.append((max(wanted_first, listed), have_first - step))
            ranges.append((have_last + step, last_closed))
        else:
            listed, reply = await self.client.first_kline(symbol, interval)
            hashes.append(reply.sha256)
            if listed is None:
                res.status = "empty"
                res.errors.append("the exchange has no bars for this symbol and interval")
                return
            ranges.append((max(wanted_first, listed), last_closed))

        pages = [
            p for a, b in ranges for p in plan_pages(a, b, step, self.settings.collect.page_limit)
        ]
        self._progress_add(len(pages))
        replies = await gather_or_cancel(self._fetch_page(symbol, interval, p) for p in pages)
        hashes += [h for _, h in replies]

        frames = [f for f, _ in replies if len(f)]
        new = pd.concat(frames, ignore_index=True) if frames else None
        if new is not None:
            # Never store a bar that had not closed at the exchange's "now".
            new = new[to_epoch_ms(new["close_time"]) < now]
        if new is None or new.empty:
            if old is None:
                res.status = "empty"
                res.errors.append("no closed bars in the requested window")
                return
            res.status = "up-to-date"
            describe_klines(res, old, interval)
            return

        merged, res.new_rows = merge_rows(old, new, "open_time")
        times = to_epoch_ms(merged["open_time"])
        provenance = self._provenance(
            existing.provenance if existing is not None else None,
            endpoint=KLINES_ENDPOINT,
            symbol=symbol,
            interval=interval,
            first=int(times[0]),
            last=int(times[-1]),
            rows=len(merged),
            now=now,
            hashes=hashes,
            added=res.new_rows,
        )
        provenance["listing_open_time"] = listed
        await asyncio.to_thread(write_series, path, merged, provenance, "klines")
        res.status = "ok"
        describe_klines(res, merged, interval)

    async def _fetch_page(self, symbol: str, interval: str, page: Page) -> tuple[pd.DataFrame, str]:
        reply = await self.client.klines(
            symbol, interval, start_ms=page.start_ms, end_ms=page.end_ms, limit=page.limit
        )
        cols = parse_klines(reply.data)
        inside = (cols["open_time"] >= page.start_ms) & (cols["open_time"] <= page.end_ms)
        if not inside.all():
            raise ExchangeError(
                f"{symbol} {interval}: the exchange returned bars outside the requested range "
                f"{iso_ms(page.start_ms)}..{iso_ms(page.end_ms)}"
            )
        self._progress_advance()
        return klines_frame(cols), reply.sha256

    # -- funding --------------------------------------------------------------
    async def _collect_funding(self, res: SeriesResult, now: int, days: int) -> None:
        path = self.paths.funding(res.symbol)
        existing = await asyncio.to_thread(read_series, path, "funding") if path.exists() else None
        if existing is not None:
            check_own_file(existing, path, res.symbol, None)
        old = existing.frame if existing is not None else None
        start = now - days * DAY_MS
        if old is not None and len(old):
            start = int(to_epoch_ms(old["funding_time"])[-1]) + 1
        self._progress_add(1)
        frames, hashes = [], []
        while True:
            reply = await self.client.funding_rate(
                res.symbol, start_ms=start, end_ms=now, limit=FUNDING_MAX_LIMIT
            )
            cols = parse_funding(reply.data)
            hashes.append(reply.sha256)
            keep = (cols["funding_time"] >= start) & (cols["funding_time"] <= now)
            frames.append(funding_frame({k: v[keep] for k, v in cols.items()}))
            if len(cols["funding_time"]) < FUNDING_MAX_LIMIT or not keep.any():
                break
            start = int(cols["funding_time"][keep].max()) + 1
        self._progress_advance()
        new = pd.concat(frames, ignore_index=True)
        if existing is not None and new.empty:
            res.status = "up-to-date"
            describe_funding(res, old)
            return
        merged, res.new_rows = merge_rows(old, new, "funding_time")
        times = to_epoch_ms(merged["funding_time"])
        provenance = self._provenance(
            existing.provenance if existing is not None else None,
            endpoint=FUNDING_ENDPOINT,
            symbol=res.symbol,
            interval=None,
            first=int(times[0]) if len(times) else None,
            last=int(times[-1]) if len(times) else None,
            rows=len(merged),
            now=now,
            hashes=hashes,
            added=res.new_rows,
            first_key="first_funding_time",
            last_key="last_funding_time",
        )
        await asyncio.to_thread(write_series, path, merged, provenance, "funding")
        res.status = "ok"
        describe_funding(res, merged)

    # -- provenance -------------------------------------------------------------
    def _provenance(
        self,
        previous: dict[str, Any] | None,
        *,
        endpoint: str,
        symbol: str,
        interval: str | None,
        first: int | None,
        last: int | None,
        rows: int,
        now: int,
        hashes: list[str],
        added: int,
        first_key: str = "first_open_time",
        last_key: str = "last_open_time",
    ) -> dict[str, Any]:
        this = {
            "collected_at": now,
            "base_url": self.client.base_url,
            "requests": len(hashes),
            "sha256": hashes,
            "rows_added": added,
            "collector_version": __version__,
        }
        collections = list((previous or {}).get("collections") or []) + [this]
        record: dict[str, Any] = {
            "source": SOURCE,
            "base_url": self.client.base_url,
            "endpoint": endpoint,
            "symbol": symbol,
            "interval": interval,
            first_key: first,
            last_key: last,
            "rows": rows,
            "collected_at": now,
            "collector_version": __version__,
            "requests": sum(c["requests"] for c in collections),
            "sha256": [h for c in collections for h in c["sha256"]],
            "collections": collections,
        }
        if previous and "listing_open_time" in previous:
            record["listing_open_time"] = previous["listing_open_time"]
        return record


def merge_rows(
    old: pd.DataFrame | None, new: pd.DataFrame, time_column: str
) -> tuple[pd.DataFrame, int]:
    """Stored rows plus newly fetched ones, sorted, one row per timestamp (stored rows win).

    Returns the merged frame and how many rows it added.
    """
    merged = new if old is None else pd.concat([old, new], ignore_index=True)
    merged = merged.sort_values(time_column, kind="stable")
    merged = merged.drop_duplicates(time_column, keep="first").reset_index(drop=True)
    return merged, len(merged) - (0 if old is None else len(old))


async def gather_or_cancel(coros: Iterable[Any]) -> list[Any]:
    """Run ``coros`` concurrently; when one fails, cancel the rest (no wasted weight)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def check_own_file(series: Series, path: Path, symbol: str, interval: str | None) -> None:
    """Refuse to extend a file the collector did not write (or that does not match its record).

    Merging new bars into such a file would stamp unverified rows as real exchange data.
    """
    prov = series.provenance
    if prov is None:
        raise StoreError(
            path,
            "unverified",
            "the file has no asterai.provenance record, so it was "
            "not written by the collector; move it aside and collect again",
        )
    if prov.get("source") != SOURCE:
        raise StoreError(
            path, "unverified", f"provenance source is {prov.get('source')!r}, not {SOURCE!r}"
        )
    if prov.get("symbol") != symbol or prov.get("interval") != interval:
        raise StoreError(
            path,
            "provenance mismatch",
            f"the record is for {prov.get('symbol')} "
            f"{prov.get('interval')}, the file name says {symbol} {interval}",
        )
    if prov.get("rows") != len(series.frame):
        raise StoreError(
            path,
            "provenance mismatch",
            f"the record says {prov.get('rows')} rows, the file holds {len(series.frame)}",
        )


def klines_frame(cols: dict[str, np.ndarray]) -> pd.DataFrame:
    """Column arrays from ``parse_klines`` as a frame in the store's schema."""
    trades = pd.array(cols["trades"], dtype="Int64")
    trades[cols["trades"] < 0] = pd.NA
    return pd.DataFrame(
        {
            "open_time": from_epoch_ms(cols["open_time"]),
            "open": cols["open"],
            "high": cols["high"],
            "low": cols["low"],
            "close": cols["close"],
            "volume": cols["volume"],
            "quote_volume": cols["quote_volume"],
            "trades": trades,
            "taker_buy_base": cols["taker_buy_base"],
            "taker_buy_quote": cols["taker_buy_quote"],
            "close_time": from_epoch_ms(cols["close_time"]),
        }
    )


def funding_frame(cols: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "funding_time": from_epoch_ms(cols["funding_time"]),
            "funding_rate": cols["funding_rate"],
            "mark_price": cols["mark_price"],
        }
    )


# -- symbol selection -----------------------------------------------------------


def load_discovery(paths: DataPaths) -> dict[str, Any] | None:
    if not paths.discovery.exists():
        return None
    try:
        return json.loads(paths.discovery.read_text())
    except ValueError as err:
        raise CollectionUsageError(
            f"{paths.discovery}: not valid JSON ({err}); run `asterai discover` again"
        ) from err


def choose_symbols(
    requested: list[str] | None,
    exchange_symbols: set[str],
    discovery: dict[str, Any] | None,
    exclude: tuple[str, ...] = (),
) -> tuple[list[str], list[str]]:
    """The symbols to collect and warnings about them.

    Named symbols must exist on the exchange; a named symbol that discovery marks
    untrainable is collected with a warning. Without names, every discovered symbol with
    history is collected (dead ones too: no survivorship), so discovery must have run. Symbols the user excludes are
    never collected; naming one in both lists is a usage error, and so is excluding a
    symbol the exchange does not list.
    """
    warnings: list[str] = []
    by_symbol = {s["symbol"]: s for s in (discovery or {}).get("symbols", [])}
    unknown = [s for s in exclude if s not in exchange_symbols and s not in by_symbol]
    if unknown:
        raise CollectionUsageError(
            f"--exclude: unknown symbol(s) {', '.join(unknown)}: the exchange lists "
            f"{len(exchange_symbols)} symbols (see `asterai discover`)"
        )
    both = [s for s in requested or [] if s in exclude]
    if both:
        raise CollectionUsageError(
            f"{', '.join(both)} named in --symbols and excluded (--exclude / exclude_symbols)"
        )
    if requested:
        unknown = [s for s in requested if s not in exchange_symbols]
        if unknown:
            raise CollectionUsageError(
                f"unknown symbol(s) {', '.join(unknown)}: the exchange lists {len(exchange_symbols)} "
                "symbols (see `asterai discover`)"
            )
        for s in requested:
            entry = by_symbol.get(s)
            if entry is not None and not entry.get("trainable", True):
                warnings.append(
                    f"{s} is not trainable ({entry.get('reason')}); collecting it anyway as asked"
                )
        return list(dict.fromkeys(requested)), warnings
    if discovery is None:
        raise CollectionUsageError(
            "no discovery file yet: run `asterai discover` first (it decides which symbols are "
            "trainable), or name symbols with --symbols"
        )
    # Every listed symbol with history, dead or alive today: a market that stopped trading
    # is part of the past the backtest replays (no survivorship); the quality gate and the
    # point-in-time universe decide what of it may be used.
    chosen = [
        s["symbol"]
        for s in discovery.get("symbols", [])
        if s.get("history_bars") is None or s.get("history_bars", 0) > 0
    ]
    if not chosen:
        raise CollectionUsageError(
            "the discovery file lists no symbol with history (see "
            "data/aster_assets_discovery.json); run `asterai discover` again or name symbols "
            "with --symbols"
        )
    skipped = [s for s in chosen if s in exclude]
    if skipped:
        warnings.append(f"excluded by you, not collected: {', '.join(skipped)}")
    chosen = [s for s in chosen if s not in exclude]
    gone = [s for s in chosen if s not in exchange_symbols]
    if gone:
        warnings.append(f"no longer listed on the exchange, skipped: {', '.join(gone)}")
    return [s for s in chosen if s in exchange_symbols], warnings


async def collect(
    settings: Settings,
    *,
    symbols: list[str] | None = None,
    progress: bool = False,
    client: AsterClient | None = None,
) -> CollectionReport:
    """Collect ``symbols`` (default: discovery's trainable ones) and write the reports."""
    paths = DataPaths.at(settings.data_root)
    discovery = load_discovery(paths)
    with collection_lock(paths):
        return await _collect_locked(settings, paths, discovery, symbols, progress, client)


@contextlib.contextmanager
def collection_lock(paths: DataPaths) -> Iterator[None]:
    """One collection per data root at a time: a second would delete the first's temp files."""
    paths.historical.mkdir(parents=True, exist_ok=True)
    lock_path = paths.historical / ".collect.lock"
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise StoreError(
                lock_path,
                "locked",
                "another `asterai collect` is running on this data root; wait for it to finish",
            ) from err
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


async def _collect_locked(
    settings: Settings,
    paths: DataPaths,
    discovery: dict[str, Any] | None,
    symbols: list[str] | None,
    progress: bool,
    client: AsterClient | None,
) -> CollectionReport:
    own_client = client is None
    if own_client:
        # a probe that met the limit recommends a gentler client: adopt it
        from asterai.data.ratelimit_probe import client_settings

        gentler = client_settings(settings, paths.rate_limit_test)
        if gentler.exchange != settings.exchange:
            log.warning(
                "the rate-limit probe met the limit: collecting with weight share %s and "
                "%d request(s) at once",
                gentler.exchange.weight_safety,
                gentler.exchange.concurrency,
            )
        settings = gentler
    client = client or AsterClient(settings.base_url, settings.exchange)
    try:
        info = await client.load_exchange_info()
        listed = {s["symbol"] for s in info.get("symbols", []) if "symbol" in s}
        chosen, warnings = choose_symbols(symbols, listed, discovery, settings.exclude_symbols)
        for w in warnings:
            log.warning(w)
        bar = _progress_bar() if progress else None
        collector = Collector(client, settings, progress=bar)
        with bar or contextlib.nullcontext():
            report = await collector.run(chosen, settings.collect.intervals, settings.collect.days)
        report.warnings.extend(warnings)
    finally:
        if own_client:
            await client.aclose()
    paths.historical.mkdir(parents=True, exist_ok=True)
    atomic.write_json(paths.collection_report, report.to_json())
    atomic.write_text(paths.collection_summary, summary_csv(report))
    return report


def _progress_bar():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("requests"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )
