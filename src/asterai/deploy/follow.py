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
from typing import Any

import numpy as np
import pandas as pd

from asterai.config import FeatureSettings, Settings
from asterai.data.collector import funding_frame, gather_or_cancel, klines_frame
from asterai.data.filters import ticks_of
from asterai.data.gate.values import previous_close
from asterai.data.store import to_epoch_ms
from asterai.data.universe import REASONS, TRADEABLE, Rules, known_tick, tradeable_kernel
from asterai.deploy.arriving import Bars, Pushed, bars_to_hold, refused_rows
from asterai.deploy.clock import Clock, first_of
from asterai.deploy.follow_state import FollowState, Snapshot
from asterai.deploy.funding_poll import FundingPoll
from asterai.deploy.live import LiveFeatures
from asterai.deploy.runtime import OnnxModel
from asterai.deploy.signals import LiveSignals
from asterai.exchange.client import AsterClient, parse_funding, parse_klines
from asterai.exchange.errors import ExchangeError
from asterai.exchange.streams import KlineStreams
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
#: the longest wait, in local seconds, before retrying after unexpected errors in a row
MAX_BACKOFF_S = 300.0


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
        self.funding = FundingPoll(self.step)
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
        self.pushed = Pushed()
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
        bars = Bars()
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
        self, client: AsterClient, wanted: list[tuple[str, str]], now: int, bars: Bars
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

    async def _ingest(self, client: AsterClient, bars: Bars, now: int, due: bool) -> bool:
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
            await self.funding.poll(client, self.live, now)
        if self.live.newest_time() != newest or self._with_newest() > before:
            for t in base.panel().times:
                if newest is None or t > newest:
                    self.seen_ms.setdefault(int(t), now)
            await asyncio.to_thread(self._publish, newest)
            return True
        return False

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
        bars, wanted = Bars(), []
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
        self.pushed.prune(self._held_of, Bars())  # what REST brought meanwhile is held now
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
            self.pushed.prune(self._held_of, Bars())
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
            if not await first_of([self.pushed_event, stop], left):
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
        await first_of([stop, self.pushed_event if streams else None], wait_s)

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
        return self.state.health(self.clock.now_ms(), self.step, self.grace_ms)

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
            self.client = client  # its rate limiter, read by the metrics
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
                        self.state.failed(err, int(time.time() * 1000))
                        self.state.exchange_errors += 1
                        log.warning("following the market: %s", self.state.last_error)
                        wait = self.retry_s
                    except Exception as err:  # noqa: BLE001 - a long-running loop: count, retry
                        failed = True
                        repeated = self.state.last_error == f"{type(err).__name__}: {err}"
                        self.state.failed(err, int(time.time() * 1000))
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
