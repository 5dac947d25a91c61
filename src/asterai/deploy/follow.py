"""Following the market: the warm-up history, then every new closed bar, into signals.

``Follower`` is what ``asterai serve`` runs beside its endpoints. At start it asks the
exchange (the collector's client: the same limiter, retries and 429/418 rules) for each
served symbol's listing, the last ``deploy.live.KEEP_BARS`` closed bars of every
timeframe the features read, and its recent funding; after each base bar's close it
polls the closed bars of every symbol, hands them to the live features and publishes
the newest bar's signals. Only closed bars are ever taken (a bar whose close time is
not before the exchange's clock is dropped, as the collector drops it), only as the
exchange sent them: a bar that fails the sanity rules (positive, finite prices, the
high above and the low below the open and close) is refused and logged, and that
symbol has no signal for the bar. Nothing is filled in.

"Now" is the exchange's clock (``/fapi/v1/time``), advanced between answers by the
local monotonic clock. A bar is *due* once it has closed; when the next bar is more than
``grace_s`` overdue (the exchange is down, rate limited, or sends nothing new), the
snapshot is stale: ``/health`` says so and every signal carries ``stale: true``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from asterai.config import FeatureSettings, Settings
from asterai.data.collector import funding_frame, gather_or_cancel, klines_frame
from asterai.data.filters import ticks_of
from asterai.data.gate.values import impossible_bars, previous_close
from asterai.data.store import to_epoch_ms
from asterai.data.universe import (
    REASONS,
    TRADEABLE,
    VOLUME_WINDOW_MS,
    Rules,
    known_tick,
    tradeable_kernel,
)
from asterai.deploy.live import COLUMNS, KEEP_BARS, LiveFeatures
from asterai.deploy.runtime import OnnxModel
from asterai.deploy.signals import LiveSignals
from asterai.exchange.client import AsterClient, parse_funding, parse_klines
from asterai.exchange.errors import ExchangeError
from asterai.exchange.streams import KlineStreams
from asterai.exchange.weights import FUNDING_MAX_LIMIT
from asterai.features.build import unknown_listings
from asterai.features.types import SymbolInput
from asterai.intervals import INTERVAL_MS, iso_ms

log = logging.getLogger(__name__)

#: funding rates fetched per symbol at the start (the newest two are what the features read)
FUNDING_ROWS = 10
#: klines asked for per poll at least (the newest closed bars; a few in case one was
#: missed), and at most (the exchange's page)
POLL_ROWS = 5
KLINES_PAGE_MAX = 1500
#: base bars whose signals are kept (``Follower.bar_signals``)
BAR_SIGNALS = 48
#: how long after a bar's close a symbol's missing bar of it is polled for again
LATE_WINDOW_MS = 10 * 60_000
#: funding rates asked for the whole market in one request reach back this far (a
#: day: every funding interval the exchange uses fits twice); older ones, one by one
FUNDING_LOOKBACK_MS = 24 * 3_600_000


class _Bars:
    """Closed bars to hand over, by (interval, open time): the symbols and their
    fields (``live.COLUMNS``), one list entry per symbol."""

    def __init__(self) -> None:
        self.by_time: dict[tuple[str, int], tuple[list[str], dict[str, list[float]]]] = {}

    def __bool__(self) -> bool:
        return bool(self.by_time)

    def add(self, symbol: str, interval: str, cols: dict[str, np.ndarray]) -> None:
        for i, t in enumerate(cols["open_time"]):
            names, got = self.by_time.setdefault(
                (interval, int(t)), ([], {f: [] for f in COLUMNS})
            )
            if symbol in names:  # REST and a push brought the same bar: once
                continue
            names.append(symbol)
            for name, column in COLUMNS.items():
                got[name].append(cols[column][i])

    def in_time_order(self) -> list[tuple[tuple[str, int], tuple[list[str], dict]]]:
        return sorted(self.by_time.items(), key=lambda kv: kv[0][1])


#: the longest wait, in local seconds, before retrying after unexpected errors in a row
MAX_BACKOFF_S = 300.0
#: pushed bars held per (symbol, timeframe) at most, not taken yet: a day of hourly bars.
#: More only gather while the bars are not taken (a stream group down: REST follows
#: then, and what it brings is pruned); the oldest go first, REST has them.
PUSHED_PER_SERIES = 24


class _Pushed:
    """Closed bars pushed by the streams, not taken yet: (symbol, interval, open time)
    to the bar's columns; at most ``PUSHED_PER_SERIES`` per symbol and timeframe."""

    def __init__(self) -> None:
        self.bars: dict[tuple[str, str, int], dict[str, np.ndarray]] = {}
        self._times: dict[tuple[str, str], list[int]] = {}

    def add(self, symbol: str, interval: str, cols: dict[str, np.ndarray]) -> None:
        t = int(cols["open_time"][0])
        times = self._times.setdefault((symbol, interval), [])
        if (symbol, interval, t) not in self.bars:
            times.append(t)
            times.sort()
        self.bars[(symbol, interval, t)] = cols
        while len(times) > PUSHED_PER_SERIES:
            self.bars.pop((symbol, interval, times.pop(0)), None)

    def has(self, symbol: str, interval: str, t: int) -> bool:
        return (symbol, interval, t) in self.bars

    def take(self, symbol: str, interval: str, t: int) -> dict[str, np.ndarray] | None:
        got = self.bars.pop((symbol, interval, t), None)
        if got is not None:
            self._times[(symbol, interval)].remove(t)
        return got

    def prune(self, held: Callable[[str, str], int], taken: _Bars) -> None:
        """Drop what is held now (``held(symbol, interval)``: the newest held bar
        time, -1 for none) or is about to be (a repeat)."""
        for key in list(self.bars):
            symbol, interval, t = key
            names = taken.by_time.get((interval, t), ([], {}))[0]
            if t <= held(symbol, interval) or symbol in names:
                del self.bars[key]
                self._times[(symbol, interval)].remove(t)


def bars_to_hold(step_ms: int) -> int:
    """Bars of each timeframe the follower holds for a base bar of ``step_ms``: the
    features' ``KEEP_BARS``, or the bars of the universe's 24-hour volume window and
    the bar before it, whichever is more."""
    return max(KEEP_BARS, VOLUME_WINDOW_MS // step_ms + 1)


async def _first_of(events: list[asyncio.Event | None], timeout_s: float) -> bool:
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


def refused_rows(
    cols: dict[str, np.ndarray], prev_close: np.ndarray | None = None
) -> tuple[np.ndarray, list[str]]:
    """Bars no exchange sends (the gate's impossible values, ``gate.values``), and the
    rules they break; ``prev_close``: each bar's previous close, where known."""
    rules = impossible_bars(
        cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"],
        cols["quote_volume"], cols["taker_buy_base"], prev_close,
    )  # fmt: skip
    bad = np.zeros(len(cols["open"]), dtype=bool)
    broken = []
    for mask, what in rules:
        if mask.any():
            bad |= mask
            broken.append(what)
    return bad, broken


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the endpoints read: replaced whole after each bar, never edited."""

    bar_open_ms: int
    signals: pd.DataFrame  # symbol, p_long, p_short, the members, tradeable, reason
    computed_at_ms: int  # the exchange's clock when it was computed


@dataclass(slots=True)
class FollowState:
    started: bool = False
    snapshot: Snapshot | None = None
    last_error: str | None = None
    last_poll_ms: int | None = None
    refused_bars: int = 0
    polls: int = 0
    #: errors since the start: the exchange's (retried every ``retry_s``) and any other
    #: (a malformed field, a model runtime's error: logged with its traceback, retried
    #: with a growing delay); the follower never ends on one
    exchange_errors: int = 0
    unexpected_errors: int = 0
    #: failed steps in a row (0 after a step that went through): the backoff's exponent
    failing: int = 0
    last_error_at: str | None = None  # local UTC time of the latest error


class Follower:
    """Follows the export's symbols on ``settings``' exchange for ``model``, and serves
    ``symbols`` of them (default: all)."""

    def __init__(
        self,
        settings: Settings,
        model: OnnxModel,
        *,
        symbols: list[str] | None = None,
        clock_rate: float = 1.0,
        grace_s: float = 120.0,
        poll_delay_s: float = 5.0,
        retry_s: float = 15.0,
        warm_bars: int = 1_000_000,
    ) -> None:
        facts = model.manifest.get("service")
        if not facts:
            raise ValueError(
                f"{model.folder} was exported before the service facts were recorded: "
                "run `asterai export-onnx` again"
            )
        self.settings = settings
        self.model = model
        self.fs = FeatureSettings(**facts["features"])
        known = list(facts["symbols"])
        if symbols is not None:
            unknown = sorted(set(symbols) - set(known))
            if unknown:
                raise ValueError(
                    f"not symbols the model was trained on: {', '.join(unknown)} "
                    f"(it knows {', '.join(known)})"
                )
        #: every symbol of the export is followed: the live features' cross-sectional
        #: ranks, confluence and regime read the whole universe the model was trained
        #: on, as the batch table does; ``symbols`` only narrows what is served
        self.followed = sorted(known)
        self.symbols = sorted(symbols if symbols is not None else known)
        self.step = INTERVAL_MS[self.fs.base_interval]
        # a manifest exported before the tick rule has no max_tick_share: its model was
        # trained on a universe without the rule, so the rule stays off for it (0)
        self.rules = Rules.of(self.step, {"max_tick_share": 0.0, **facts["universe"]})
        #: each symbol's tick from the exchangeInfo loaded at the warm-up (today's: the
        #: one in force); the universe's tick rule abstains for a symbol without one
        self.ticks: dict[str, float | None] = {}
        self.intervals = (self.fs.base_interval, *self.fs.higher_intervals)
        self.clock = Clock(clock_rate)
        self.grace_ms = int(grace_s * 1000)
        self.poll_delay_s = poll_delay_s
        self.retry_s = retry_s
        #: bars held per timeframe: what the features read (``KEEP_BARS``) and what the
        #: universe's trailing 24-hour volume reads of the base timeframe (1,440 bars
        #: of 1m: more than the features' 750)
        self.keep_bars = bars_to_hold(self.step)
        #: closed bars of each timeframe asked for at the warm-up (all that is held;
        #: fewer only where a test needs the held span short)
        self.warm_bars = min(warm_bars, self.keep_bars)
        self.state = FollowState()
        self.live: LiveFeatures | None = None
        self.signals: LiveSignals | None = None
        self.listing: dict[str, int] = {}
        #: served symbols without a closed bar yet (listed after the start): polled each
        #: bar, and followed from their first bar (the features' cross-section counts them
        #: from there, as the batch table does)
        self.unlisted: set[str] = set()
        #: each base bar's signals, as computed at the poll that brought it (the newest
        #: ``BAR_SIGNALS`` bars): paper trading reads the bars it has not traded yet
        self.bar_signals: dict[int, pd.DataFrame] = {}
        #: the exchange's clock when each of those bars was first held
        self.seen_ms: dict[int, int] = {}
        #: each symbol's funding settlement awaited (``premiumIndex``'s nextFundingTime):
        #: its funding rates are polled once it has passed, until its rate has come
        self.next_funding: dict[str, int] = {}
        #: ``tradeable_at``'s answers since the held bars last changed (the service and
        #: the paper trader both ask for each new bar)
        self._codes: dict[int, np.ndarray] = {}
        #: each timeframe's newest held bar time per symbol (``_held``), kept until the
        #: held bars change: the streams ask for it at every push
        self._last: dict[str, np.ndarray] = {}
        #: the kline streams (``start_streams``), their closed bars not taken yet, and
        #: an event set when one comes
        self.ws_url = settings.streams_url()
        self.streams: KlineStreams | None = None
        self.pushed = _Pushed()
        self.pushed_event: asyncio.Event | None = None
        self._streams_task: asyncio.Task | None = None
        self._streams_stop: asyncio.Event | None = None

    # -- the exchange ---------------------------------------------------------------

    async def _now(self, client: AsterClient) -> int:
        now = await client.server_time()
        self.clock.sync(now)
        return now

    async def closed_klines(
        self, client: AsterClient, symbol: str, interval: str, now: int, **params: Any
    ) -> dict[str, np.ndarray]:
        """The klines ``params`` asks for, closed before ``now`` (the exchange's clock)
        and without impossible bars (refused, counted and logged)."""
        cols = parse_klines((await client.klines(symbol, interval, **params)).data)
        keep = cols["close_time"] < now  # the collector's rule: an open bar is never taken
        refused, broken = refused_rows(cols, self._previous_closes(symbol, interval, cols))
        bad = keep & refused
        if bad.any():
            self.state.refused_bars += int(bad.sum())
            log.warning(
                "%s %s: %d bar(s) refused (%s; first at %s)", symbol, interval, int(bad.sum()),
                ", ".join(broken), iso_ms(int(cols["open_time"][np.flatnonzero(bad)[0]])),
            )  # fmt: skip
        return {k: v[keep & ~refused] for k, v in cols.items()}

    async def warm_up(self, client: AsterClient) -> None:
        """The history the live features need, then the first snapshot."""
        self.ticks = ticks_of(await client.load_exchange_info())
        now = await self._now(client)

        async def one(symbol: str) -> SymbolInput:
            bars, firsts = {}, {}
            for iv in self.intervals:
                firsts[iv], _ = await client.first_kline(symbol, iv)
                cols = await self.closed_klines(
                    client, symbol, iv, now, limit=min(self.warm_bars, 1500)
                )
                bars[iv] = klines_frame(cols)
            rates = parse_funding((await client.funding_rate(symbol, limit=FUNDING_ROWS)).data)
            funding = funding_frame({k: v[rates["funding_time"] <= now] for k, v in rates.items()})
            listing = firsts[self.fs.base_interval]
            return SymbolInput(symbol, bars, funding, listing), firsts

        got = await gather_or_cancel(one(s) for s in self.followed)
        inputs = unknown_listings([inp for inp, _ in got], {inp.symbol: f for inp, f in got})
        base = self.fs.base_interval
        self.unlisted = {i.symbol for i in inputs if not len(i.bars[base])}
        if self.unlisted == {i.symbol for i in inputs}:
            raise ExchangeError("the exchange returned no closed bars for any served symbol")
        if self.unlisted:
            log.warning(
                "no closed bars yet for %s: served from their first bar",
                ", ".join(sorted(self.unlisted)),
            )
        # the universe's listing: the exchange's first kline, as the collector records it
        # (the features' listing age may still be unknown: a cut history)
        firsts = {inp.symbol: f[base] for inp, f in got}
        self.listing = {
            i.symbol: firsts[i.symbol] if firsts[i.symbol] is not None
            else int(to_epoch_ms(i.bars[base]["open_time"])[0])
            for i in inputs if i.symbol not in self.unlisted
        }  # fmt: skip
        live = LiveFeatures(
            self.fs, inputs, keep=self.keep_bars, history=max(self.model.sequence_length, 1)
        )
        self.live = live
        self._changed()
        self.signals = LiveSignals(live, self.model)
        self.seen_ms[int(live.newest_time())] = now
        await asyncio.to_thread(self._publish, None)
        self.state.started = True

    async def _listed(self, client: AsterClient, symbols: list[str]) -> None:
        """Served symbols whose first bars have just come: their listing, by the rule
        the collector and the features apply (``unknown_listings``)."""
        assert self.live is not None

        async def firsts_of(symbol: str) -> tuple[str, dict[str, int | None]]:
            out = {}
            for iv in self.intervals:
                out[iv], _ = await client.first_kline(symbol, iv)
            return symbol, out

        base = self.fs.base_interval
        for symbol, firsts in await gather_or_cancel(firsts_of(s) for s in symbols):
            j = self.live.index[symbol]
            held = self.live.rings[base].panel()
            first_held = int(held.times[np.flatnonzero(~np.isnan(held.fields["close"][j]))[0]])
            listing = firsts[base] if firsts[base] is not None else first_held
            probe = SymbolInput(symbol, {iv: None for iv in self.intervals}, None, listing)
            known = unknown_listings([probe], {symbol: firsts})[0].listing_ms
            self.live.listing_ms[j] = np.nan if known is None else float(known)
            self.listing[symbol] = listing
            self.unlisted.discard(symbol)
            self._changed()
            log.info("%s: first bar %s: followed from now on", symbol, iso_ms(first_held))

    def _changed(self) -> None:
        """The held bars or listings changed: what was derived from them is stale."""
        self._codes.clear()
        self._last.clear()

    def _held(self, interval: str) -> np.ndarray:
        """Each held symbol's newest held bar time of ``interval`` (-1: none)."""
        if interval not in self._last:
            self._last[interval] = self.live.rings[interval].last_times()
        return self._last[interval]

    def _held_of(self, symbol: str, interval: str) -> int:
        return int(self._held(interval)[self.live.index[symbol]])

    def _previous_closes(
        self, symbol: str, interval: str, cols: dict[str, np.ndarray]
    ) -> np.ndarray:
        """Each arriving bar's previous close (the gate's ``previous_close``): the bar
        before it in the same answer, or for the first one the bar held or pushed one
        step before it; NaN where none is known (not judged then)."""
        step = INTERVAL_MS[interval]
        prev = previous_close(cols["close"], cols["open_time"], step)
        if len(prev) and self.live is not None and symbol in self.live.index:
            t = int(cols["open_time"][0]) - step
            pushed = self.pushed.bars.get((symbol, interval, t))
            if pushed is not None:
                prev[0] = float(pushed["close"][0])
            else:  # the ring itself, not a panel of views: this runs at every push
                ring = self.live.rings[interval]
                at = ring.lo + int(np.searchsorted(ring.times[ring.lo : ring.used], t))
                if at < ring.used and ring.times[at] == t:
                    prev[0] = float(ring.data["close"][self.live.index[symbol], at])
        return prev

    def _late(self, now: int | None) -> list[str]:
        """Served symbols still without the newest bar while it may yet come (within
        ``LATE_WINDOW_MS`` of its close): polled again soon, not at the next close."""
        assert self.live is not None
        newest = self.live.newest_time()
        if newest is None or now is None or now - (newest + self.step - 1) > LATE_WINDOW_MS:
            return []
        held = self._held(self.fs.base_interval)
        return [s for j, s in enumerate(self.live.symbols)
                if s not in self.unlisted and held[j] != newest]  # fmt: skip

    def _with_newest(self) -> int:
        """How many symbols hold the newest base bar."""
        assert self.live is not None
        newest = self.live.rings[self.fs.base_interval].last_time
        return int((self._held(self.fs.base_interval) == newest).sum()) if newest is not None else 0

    async def poll(self, client: AsterClient) -> bool:
        """Fetch each symbol's bars closed since its newest held one; True when the
        newest bar's signals changed (a new bar, or a late symbol's bar of it)."""
        assert self.live is not None
        now = await self._now(client)
        self.state.last_poll_ms = now
        self.state.polls += 1
        newest = self.live.newest_time()
        late = self._late(now)
        due = newest is None or newest + 2 * self.step - 1 < now  # the next bar has closed
        if not due and not late:
            return False
        # a new bar: every symbol; otherwise only those still without the newest bar
        polled = self.live.symbols if due else late
        wanted = [(s, iv) for s in polled for iv in self.intervals if self._due_for(s, iv, now)]
        bars = _Bars()
        await self._fetch(client, wanted, now, bars)
        return await self._ingest(client, bars, now, due)

    def _due_for(self, symbol: str, interval: str, now: int) -> bool:
        """A bar of ``interval`` newer than the held one has closed (or none held; a
        symbol not listed yet is asked for its base bars only)."""
        if symbol in self.unlisted and interval != self.fs.base_interval:
            return False
        held = self._held_of(symbol, interval)
        return held < 0 or held + 2 * INTERVAL_MS[interval] - 1 < now

    async def _fetch(
        self, client: AsterClient, wanted: list[tuple[str, str]], now: int, bars: _Bars
    ) -> None:
        """REST: the closed bars of each (symbol, interval) after its newest held one."""

        async def one(symbol: str, interval: str) -> tuple[str, str, dict[str, np.ndarray]]:
            held = self._held_of(symbol, interval)
            start = None if held < 0 else held + INTERVAL_MS[interval]
            # every bar closed since the held one, in one page: a symbol behind the
            # others (its pushes not contiguous, a long stall) catches up at once, so the
            # bar handed over next is every symbol's, never a part of them
            limit = POLL_ROWS if start is None else min(
                KLINES_PAGE_MAX, max(POLL_ROWS, (now - start) // INTERVAL_MS[interval] + 1)
            )  # fmt: skip
            cols = await self.closed_klines(
                client, symbol, interval, now, start_ms=start, limit=limit
            )
            return symbol, interval, cols

        for symbol, interval, cols in await gather_or_cancel(one(s, iv) for s, iv in wanted):
            bars.add(symbol, interval, cols)

    async def _ingest(self, client: AsterClient, bars: _Bars, now: int, due: bool) -> bool:
        """Hand ``bars`` to the live features (one hand-over per bar time, all its
        symbols at once, in time order), follow new listings, poll the funding due
        (``due``: a new base bar has closed) and publish the new bars' signals."""
        assert self.live is not None
        newest = self.live.newest_time()
        before = self._with_newest()
        for (interval, t), (names, got) in bars.in_time_order():
            values = {f: np.asarray(v, dtype=float) for f, v in got.items()}
            self.live.add_closed(interval, t, names, values)
        if bars:
            self._changed()
        base = self.live.rings[self.fs.base_interval]
        listed = [s for s in self.unlisted if self._held_of(s, self.fs.base_interval) >= 0]
        if listed:
            await self._listed(client, sorted(listed))
        if due:
            await self._poll_funding(client, now)
        if self.live.newest_time() != newest or self._with_newest() > before:
            for t in base.panel().times:
                if newest is None or t > newest:
                    self.seen_ms.setdefault(int(t), now)
            await asyncio.to_thread(self._publish, newest)
            return True
        return False

    def _held_funding(self, symbol: str) -> int | None:
        have = self.live.funding[self.live.index[symbol]]
        return int(have[0][-1]) if have is not None and len(have[0]) else None

    async def _poll_funding(self, client: AsterClient, now: int) -> None:
        """The funding rates settled since each symbol's newest held one (the last two
        bars' for a symbol that holds none), for the symbols whose awaited settlement
        has passed or that await none: one ``fundingRate`` request for the whole market
        (a page of at most ``FUNDING_MAX_LIMIT`` rates; a full page, the exchange having
        been away long, falls back to one request a symbol); then the next
        settlements, from ``premiumIndex`` (one request), for the symbols whose awaited
        rate has come or that await none."""
        assert self.live is not None
        due = self._funding_due(now)
        if not due:
            return
        since = {}
        for s in due:
            last = self._held_funding(s)
            since[s] = last + 1 if last is not None else now - 2 * self.step
        # one request for the market from a recent start; a symbol whose newest rate is
        # older (delisted, or the exchange was away) is asked on its own
        bound = now - FUNDING_LOOKBACK_MS
        alone = [s for s in due if since[s] < bound]
        together = [s for s in due if since[s] >= bound]
        got: dict[str, dict[str, np.ndarray]] = {}
        if together:
            rows = (await client.funding_rate(
                None, start_ms=min(since[s] for s in together), end_ms=now,
                limit=FUNDING_MAX_LIMIT,
            )).data  # fmt: skip
            if isinstance(rows, list) and len(rows) < FUNDING_MAX_LIMIT:
                wanted = set(together)
                mine: dict[str, list] = {}
                for row in rows:
                    if isinstance(row, dict) and row.get("symbol") in wanted:
                        mine.setdefault(row["symbol"], []).append(row)
                got = {s: parse_funding(r) for s, r in mine.items()}
            else:
                alone += together

        async def rates_of(symbol: str) -> tuple[str, dict[str, np.ndarray]]:
            reply = await client.funding_rate(symbol, start_ms=since[symbol], end_ms=now)
            return symbol, parse_funding(reply.data)

        got.update(await gather_or_cancel(rates_of(s) for s in alone))
        for symbol, rates in got.items():
            keep = (rates["funding_time"] <= now) & (rates["funding_time"] >= since[symbol])
            if keep.any():
                self.live.add_funding(symbol, funding_frame({k: v[keep] for k, v in rates.items()}))
        stale = [s for s in self.live.symbols
                 if self.next_funding.get(s) is None
                 or (self._held_funding(s) or -1) >= self.next_funding[s]]  # fmt: skip
        if not stale:
            return
        upcoming = await self._upcoming_funding(client)
        for symbol in stale:
            if symbol in upcoming:
                self.next_funding[symbol] = upcoming[symbol]
            else:
                self.next_funding.pop(symbol, None)

    async def _upcoming_funding(self, client: AsterClient) -> dict[str, int]:
        """Every symbol's next funding settlement, from one ``premiumIndex`` request."""
        reply = (await client.premium_index()).data
        out = {}
        for entry in reply if isinstance(reply, list) else [reply]:
            t = entry.get("nextFundingTime")
            if entry.get("symbol") in self.live.index and t:
                out[entry["symbol"]] = int(t)
        return out

    def _funding_due(self, now: int) -> list[str]:
        """Symbols whose funding rates to poll: no settlement known, or the awaited one
        has passed (and stays awaited until its rate has come)."""
        return [s for s in self.live.symbols
                if self.next_funding.get(s) is None or self.next_funding[s] <= now]  # fmt: skip

    # -- the kline streams ------------------------------------------------------------

    def on_pushed(self, symbol: str, interval: str, cols: dict[str, np.ndarray],
                  event_ms: int) -> None:  # fmt: skip
        """A closed kline from the streams (``exchange.streams``): kept until it is
        taken (``take_pushed``) if it is newer than the symbol's held bars; an
        impossible bar is refused, as from REST."""
        if self.live is None or symbol not in self.live.index or interval not in self.intervals:
            return
        now = self.clock.now_ms()
        if event_ms and (now is None or event_ms > now):
            self.clock.sync(event_ms)  # the exchange's clock, as its event says
        refused, broken = refused_rows(cols, self._previous_closes(symbol, interval, cols))
        if refused.any():  # REST is asked for it then, and counts it if it is refused too
            log.warning("%s %s: a pushed bar refused (%s; at %s)", symbol, interval,
                        ", ".join(broken), iso_ms(int(cols["open_time"][0])))  # fmt: skip
            return
        if int(cols["open_time"][0]) <= self._held_of(symbol, interval):
            return  # held already: a repeat after a reconnect
        self.pushed.add(symbol, interval, cols)
        self.pushed_event.set()

    def _push_ready(self, now: int) -> bool:
        """The streams have pushed the next bar of every symbol that holds the newest
        one, in every timeframe whose next bar has closed (a symbol behind the others,
        or not listed yet, is asked from REST when the bars are taken)."""
        assert self.live is not None
        newest = self.live.newest_time()
        if newest is None or not newest + 2 * self.step - 1 < now:
            return False
        base = self._held(self.fs.base_interval)
        current = [(j, s) for j, s in enumerate(self.live.symbols)
                   if s not in self.unlisted and base[j] == newest]  # fmt: skip
        for iv in self.intervals:
            held, step = self._held(iv), INTERVAL_MS[iv]
            for j, s in current:
                h = int(held[j])
                if h >= 0 and h + 2 * step - 1 < now and not self.pushed.has(s, iv, h + step):
                    return False
        return True

    async def take_pushed(self, client: AsterClient, ask_time: bool = False) -> bool:
        """The pushed bars that extend each symbol's held ones by exactly one step at a
        time (REST history stays the reference: a bar after a gap is not taken), plus,
        from REST, every due bar the streams have not pushed (a gap, a lost message, a
        symbol late or not listed yet); then as ``poll``."""
        assert self.live is not None
        now = self.clock.now_ms()
        if ask_time or now is None:
            now = await self._now(client)
        self.state.last_poll_ms = now
        self.state.polls += 1
        newest = self.live.newest_time()
        due = newest is None or newest + 2 * self.step - 1 < now
        bars, wanted = _Bars(), []
        for iv in self.intervals:
            last, step = self._held(iv), INTERVAL_MS[iv]
            for j, s in enumerate(self.live.symbols):
                held = int(last[j])
                if held >= 0:
                    t = held + step
                    while (got := self.pushed.take(s, iv, t)) is not None:
                        bars.add(s, iv, got)
                        held, t = t, t + step
                if (s not in self.unlisted or iv == self.fs.base_interval) and (
                    held < 0 or held + 2 * step - 1 < now
                ):
                    wanted.append((s, iv))
        self.pushed.prune(self._held_of, bars)
        self.pushed_event.clear()
        if wanted and (due or self._late(now)):
            await self._fetch(client, wanted, now, bars)
        changed = await self._ingest(client, bars, now, due)
        self.pushed.prune(self._held_of, _Bars())  # what REST brought meanwhile is held now
        return changed

    async def follow(self, client: AsterClient, stop: asyncio.Event | None = None) -> bool:
        """One step of following: with the streams open, wait until they have pushed
        the bars due (at most until ``poll_delay_s`` after the close, or that many
        seconds on a stepped clock, or until ``stop``) and take them, REST filling in
        the rest (after a wait that ended without them, the exchange's clock is asked
        first: the streams may have stopped without a word); without them (none
        configured, or not all connected), ``poll``. On a running clock with nothing
        closed, pushed or late, it returns at once (the caller waits for a push)."""
        s = self.streams
        if s is None or not s.live:
            changed = await self.poll(client)
            # the groups still up push on: what REST brought is held now, not kept twice
            self.pushed.prune(self._held_of, _Bars())
            return changed
        now, newest = self.clock.now_ms() or 0, self.live.newest_time()
        due = newest is None or newest + 2 * self.step - 1 < now
        if self.clock.rate != 0 and not due and not self.pushed.bars and not self._late(now):
            self.pushed_event.clear()
            return False
        deadline = time.monotonic() + self._push_wait_s()
        ready = self._push_ready(self.clock.now_ms() or 0)
        while not ready and not (stop is not None and stop.is_set()):
            left = deadline - time.monotonic()
            if left <= 0 or not s.live:
                break
            self.pushed_event.clear()
            if not await _first_of([self.pushed_event, stop], left):
                break
            ready = self._push_ready(self.clock.now_ms() or 0)
        return await self.take_pushed(client, ask_time=not ready)

    def _push_wait_s(self) -> float:
        """Local seconds until REST is asked for what the streams have not pushed."""
        now, newest = self.clock.now_ms(), self.live.newest_time()
        if now is None or newest is None or self.clock.rate == 0:
            return self.poll_delay_s
        if self._late(now):
            return min(self.retry_s, self.poll_delay_s)
        ms = newest + 2 * self.step - 1 + int(self.poll_delay_s * 1000) - now
        return max(ms / 1000 / self.clock.rate, 0.0)

    def start_streams(self) -> None:
        """Open the kline streams of every followed symbol and timeframe (after the
        warm-up; nothing when no stream URL is configured)."""
        if self.ws_url is None or self.streams is not None or self.live is None:
            return
        pairs = [(s, iv) for s in self.live.symbols for iv in self.intervals]
        ex = self.settings.exchange
        self.pushed_event = asyncio.Event()
        self.streams = KlineStreams(
            self.ws_url, pairs, self.on_pushed, backoff_base_s=ex.backoff_base_s,
            backoff_max_s=ex.backoff_max_s, open_timeout_s=ex.timeout_s,
        )  # fmt: skip
        self._streams_stop = asyncio.Event()
        self._streams_task = asyncio.create_task(self.streams.run(self._streams_stop))

    async def close_streams(self) -> None:
        if self._streams_task is None:
            return
        self._streams_stop.set()
        await asyncio.gather(self._streams_task, return_exceptions=True)
        self._streams_task = self._streams_stop = None
        self.streams = None

    async def wait_next(self, stop: asyncio.Event, wait_s: float, pushes: bool = True) -> None:
        """Until ``stop`` is set, ``wait_s`` seconds pass, or (the streams started) a
        bar is pushed: also when the streams are still connecting as the wait begins
        (right after the warm-up), so the first bar they push is taken at once. After an
        error (``pushes`` False) the whole wait: a push that the failed step did not
        take would otherwise end every wait at once, and the loop would spin."""
        streams = self.streams is not None and pushes
        await _first_of([stop, self.pushed_event if streams else None], wait_s)

    # -- the snapshot ---------------------------------------------------------------

    def tradeable_at(self, open_ms: int) -> np.ndarray:
        """The universe's reason code of each held symbol (``live.symbols``) at the base
        bar that opened at ``open_ms`` (``universe.TRADEABLE``: tradeable), from its
        bars up to that one, as the gate's point-in-time universe computes it; -1 where
        the symbol has no bar there. Read-only: kept until the held bars change."""
        assert self.live is not None
        if open_ms in self._codes:
            return self._codes[open_ms]
        base = self.live.rings[self.fs.base_interval].panel()
        out = np.full(len(self.live.symbols), -1, dtype=np.int8)
        at = np.searchsorted(base.times, open_ms)
        if at == len(base.times) or base.times[at] != open_ms:
            return out
        for j, symbol in enumerate(self.live.symbols):
            close = base.fields["close"][j][: at + 1]
            if np.isnan(close[-1]) or symbol not in self.listing:
                continue
            have = ~np.isnan(close)
            out[j] = tradeable_kernel(
                base.times[: at + 1][have], base.fields["volume"][j][: at + 1][have],
                base.fields["quote_volume"][j][: at + 1][have], close[have],
                known_tick(self.ticks.get(symbol)), self.listing[symbol], self.rules,
            )[-1]  # fmt: skip
        out.flags.writeable = False
        self._codes[open_ms] = out
        return out

    def _publish(self, after: int | None) -> None:
        """Each new bar's signals (those after ``after``, oldest first), then the
        snapshot of the newest."""
        assert self.live is not None and self.signals is not None
        for rows in self.live.catch_up(after):
            signals = self.signals.predict(rows)
            self.bar_signals[rows.open_time] = signals
        keep = max(BAR_SIGNALS, self.live.history)
        for t in sorted(self.bar_signals)[:-keep]:
            del self.bar_signals[t]
        for t in sorted(self.seen_ms)[:-keep]:
            del self.seen_ms[t]
        codes = self.tradeable_at(int(self.live.newest_time()))
        at = [self.live.index[s] for s in signals["symbol"]]
        tradeable = [bool(codes[j] == TRADEABLE) for j in at]
        reasons = [REASONS[int(codes[j])] for j in at]
        signals = signals.assign(tradeable=tradeable, reason=reasons)
        signals["symbol"] = signals["symbol"].astype(str)
        if len(self.symbols) < len(self.followed):  # the served ones (``--symbols``)
            signals = signals[signals["symbol"].isin(self.symbols)].reset_index(drop=True)
        self.state.snapshot = Snapshot(
            int(self.live.newest_time()), signals, self.clock.now_ms() or 0
        )

    def health(self) -> dict[str, Any]:
        """Status, the newest bar, its age and whether the data is stale."""
        now = self.clock.now_ms()
        snap = self.state.snapshot
        out: dict[str, Any] = {
            "status": "starting",
            "exchange_time": iso_ms(now) if now is not None else None,
            "last_bar_open_time": None,
            "last_bar_close_time": None,
            "last_bar_age_s": None,
            "next_bar_due": None,
            "stale": True,
            "last_error": self.state.last_error,
            "last_error_at": self.state.last_error_at,
            "errors": {
                "exchange": self.state.exchange_errors,
                "unexpected": self.state.unexpected_errors,
            },
            "refused_bars": self.state.refused_bars,
        }
        if snap is None or now is None:
            return out
        close = snap.bar_open_ms + self.step - 1
        due = close + self.step  # the next bar's close
        stale = now > due + self.grace_ms
        out.update(
            status="stale" if stale else "ok",
            last_bar_open_time=iso_ms(snap.bar_open_ms),
            last_bar_close_time=iso_ms(close),
            last_bar_age_s=round((now - close) / 1000, 3),
            next_bar_due=iso_ms(due),
            stale=stale,
        )
        return out

    # -- the loop ---------------------------------------------------------------------

    def next_poll_s(self) -> float:
        """Seconds of local time until the next bar's close plus the poll delay (both on
        the exchange's clock: a replay played at 600x waits a 600th of them)."""
        now = self.clock.now_ms()
        newest = self.live.newest_time() if self.live is not None else None
        if now is None or newest is None:
            return self.retry_s
        if self._late(now) or self.clock.rate == 0:  # late, or a stepped replay's clock
            return self.retry_s
        wait_ms = newest + 2 * self.step - 1 + int(self.poll_delay_s * 1000) - now
        return max(wait_ms / 1000 / self.clock.rate, 0.0)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Warm up, then poll after every bar's close until ``stop`` is set. No error
        ends it: the exchange's are logged and retried every ``retry_s`` seconds, any
        other is logged with its traceback (once while it repeats) and retried after
        ``retry_s`` doubled for each failure in a row, at most ``MAX_BACKOFF_S``; both
        are counted and the latest kept for ``/health``."""
        stop = stop or asyncio.Event()
        async with AsterClient(self.settings.base_url, self.settings.exchange.following()) as client:
            try:
                while not stop.is_set():
                    failed = False
                    try:
                        if not self.state.started:
                            await self.warm_up(client)
                            self.start_streams()
                        else:
                            await self.follow(client, stop)
                        self.state.last_error = None
                        self.state.failing = 0
                        wait = self.next_poll_s()
                    except ExchangeError as err:
                        failed = True
                        self._failed(err)
                        self.state.exchange_errors += 1
                        log.warning("following the market: %s", self.state.last_error)
                        wait = self.retry_s
                    except Exception as err:  # noqa: BLE001 - a long-running loop: count, retry
                        failed = True
                        repeated = self.state.last_error == f"{type(err).__name__}: {err}"
                        self._failed(err)
                        self.state.unexpected_errors += 1
                        wait = min(
                            self.retry_s * 2 ** (self.state.failing - 1),
                            max(MAX_BACKOFF_S, self.retry_s),
                        )
                        log.error(
                            "following the market: an unexpected error (%s; %d so far), "
                            "retrying in %.1f s", self.state.last_error,
                            self.state.unexpected_errors, wait,
                            exc_info=not repeated,
                        )  # fmt: skip
                    await self.wait_next(stop, wait, pushes=not failed)
            finally:
                await self.close_streams()

    def _failed(self, err: Exception) -> None:
        self.state.last_error = f"{type(err).__name__}: {err}"
        self.state.failing += 1
        self.state.last_error_at = iso_ms(int(time.time() * 1000))
