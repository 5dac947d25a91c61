"""The paper trader: the exported model's signals on a simulated account, bar by bar,
against the live market, journaled.

``PaperTrader`` follows the market with the signal service's ``Follower`` (the same
client, live features and ONNX model), and after each poll trades every base bar the
journal does not hold yet, oldest first, through ``SimulatedBroker`` (the backtest's
own step), committing each bar to the journal before the next:

- **On time or late.** A bar's signals are acted on only when the bar was seen within
  ``paper.max_delay_s`` of its close; a bar seen later (after a restart, a stall, a slow
  exchange) is traded late and recorded as late: its fills, stops, targets, time limits
  and funding apply, its signals open nothing (acting on them would fill at an open
  long gone). Nothing is back-dated.
- **A symbol's bar that has not come.** When a traded symbol that had the previous
  bar has no bar yet while the others' have come, the bar waits for it up to
  ``paper.straggler_wait_s`` after its close (the follower asks for it again
  meanwhile); after that it is traded without that symbol (no stop, target or signal
  of it applied on that bar), the journal names the symbol, and its bar, when it
  comes, feeds the features but is never traded (the report lists it).
- **Stale data.** When the next bar is ``paper.grace_s`` overdue, nothing is traded (so
  nothing opens) and the journal records it; when bars come again, the missed ones are
  traded in order, late.
- **The daily loss limit.** At each UTC day's first bar the floor is the previous bar's
  equity times ``1 - paper.daily_loss_limit``; a close below it pauses new entries for
  the rest of the day (exits go on).
- **The kill switch** (the file ``data/paper/KILL``, which ``asterai paper --kill``
  writes): every position exits at the open of the first bar that opens after the
  request (within ``max_delay_s``), the entries decided for it are cancelled, and the
  trader stops once that bar is journaled. The file is removed then; the journal is
  final.
- **A stop** (``stop`` set: SIGTERM or SIGINT in ``asterai paper``) is not the kill
  switch: the bar being traded is finished (its one transaction), no later one is
  begun, the positions stay open in the journal, and the next start continues the
  account. A stop during the warm-up or a fetch abandons it.
- **A restart** (even after ``kill -9``) rebuilds the account from the journal
  (``Journal.rebuild``) and goes on with the first bar after the last journaled one.
- **Errors.** An exchange error is retried every ``retry_s``; any other error of a
  cycle (a malformed field, onnxruntime, the disk) is counted, logged and journaled
  (``paper.errors``) and the cycle tried again after an exponential backoff; a bar
  whose step raised is redone from the journal's account, never applied twice. Only
  what no retry mends ends the trader: settings or a journal it cannot continue.

Everything the trader needs is checked before anything is written
(``paper.plan.prepare``): the export, its feature set against the data root's settings,
the strategy taken from it, the symbols, an existing journal's account. No API key is
needed or read.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from asterai.backtest.enums import REJECT_REASONS
from asterai.data.universe import TRADEABLE
from asterai.deploy.follow import Follower
from asterai.exchange.client import AsterClient
from asterai.exchange.errors import ExchangeError
from asterai.intervals import DAY_MS, iso_ms
from asterai.paper.backfill import Missed, fetch_missed
from asterai.paper.broker import Bar, BarEvents, Controls
from asterai.paper.errors import ErrorCount
from asterai.paper.journal import Journal, JournalError
from asterai.paper.plan import (  # noqa: F401 - their home was here
    EXPORT_STRATEGY,
    PaperSettingsError,
    PaperStopped,
    Plan,
    check_journal,
    export_strategy,
    prepare,
)
from asterai.paths import DataPaths
from asterai.watch.metrics import TraderMetrics

log = logging.getLogger(__name__)

#: the feature that sizes stops and targets (the labels' ATR, as in the backtest)
ATR = "atr_14"


@dataclass(slots=True)
class TraderState:
    started_ms: int | None = None
    stale: bool = False
    kill_requested_ms: int | None = None
    kill_source: str = ""
    stopped: bool = False
    last_error: str | None = None
    bars: int = 0  # bars traded this run
    late: int = 0
    last: dict[str, Any] | None = None  # the journal's last bar row
    day_start_equity: float | None = None
    errors: ErrorCount = field(default_factory=ErrorCount)  # the unexpected ones
    exchange_errors: int = 0


class PaperTrader:
    """Trades ``plan`` on the exchange of its settings; ``clock_rate``: the follower's
    (a replay played forward faster, or 0 for a stepped one); ``retry_s``: the wait after
    an exchange error; ``backoff_s``: the first and the longest wait after another."""

    def __init__(
        self, plan: Plan, *, clock_rate: float = 1.0, retry_s: float = 15.0,
        backoff_s: tuple[float, float] = (1.0, 300.0),
    ) -> None:  # fmt: skip
        ps = plan.settings.paper
        self.plan = plan
        self.paths = DataPaths.at(plan.settings.data_root)
        #: the journal; the kill switch's file; the daily pause's (``watch.controls``)
        self.journal_path, self.kill_path, self.pause_path = self.where(self.paths)
        self._pause_pending = False  # a pause taken by the shadow, for the live close
        #: Prometheus metrics (``watch.metrics``), when the caller serves them
        self.metrics: TraderMetrics | None = None
        self.follower = Follower(
            plan.settings, plan.model, clock_rate=clock_rate, grace_s=ps.grace_s,
            poll_delay_s=ps.poll_delay_s, retry_s=retry_s,
        )  # fmt: skip
        self.step = plan.account.step_ms
        self.max_delay_ms = int(ps.max_delay_s * 1000)
        self.wait_ms = int(ps.straggler_wait_s * 1000)
        self._waiting: int | None = None  # the bar waited for, logged once
        self.limit = ps.daily_loss_limit
        self.journal: Journal | None = None
        self.broker = None
        #: the bars missed before a restart, fetched from the exchange (``backfill``), and
        #: the first of them while they still are to fetch
        self.missed: Missed | None = None
        self._backfill_from: int | None = None
        self.state = TraderState(errors=ErrorCount(first_s=backoff_s[0], max_s=backoff_s[1]))
        self._stop: asyncio.Event | None = None  # set: no new bar is begun
        self._trading = False  # a worker thread is trading bars (not to be cancelled)
        self._dirty = False  # the broker applied a bar the journal did not commit
        if self.journal_path.exists():  # checked now: nothing is written on a mismatch
            journal = Journal.open(self.journal_path)
            try:
                check_journal(plan, journal)
                if journal.query("SELECT 1 FROM bars WHERE killed > 0 OR kill = 1 LIMIT 1"):
                    raise PaperStopped(
                        f"{journal.path}: this account was stopped by the kill switch; its "
                        "journal is final (move it away to start a new account)"
                    )
            finally:
                journal.close()

    @staticmethod
    def where(paths: DataPaths) -> tuple[Path, Path, Path]:
        """(the journal, the kill switch file, the daily pause file): paper trading's."""
        return paths.paper_journal, paths.paper_kill, paths.paper_pause

    # -- the controls ---------------------------------------------------------------

    def request_kill(self, source: str) -> None:
        """The kill switch (the KILL file): flatten at the next open, stop."""
        if self.state.kill_requested_ms is not None:
            return
        now = self.follower.clock.now_ms() or int(time.time() * 1000)
        self.state.kill_requested_ms = now
        self.state.kill_source = source
        log.warning("kill switch (%s) at %s: flattening at the next open", source, iso_ms(now))
        if self.metrics is not None:
            self.metrics.control("kill", True)
        if self.journal is not None:
            # its own connection: the trader's may be inside a bar's transaction in its
            # worker thread; SQLite serialises the two writers (WAL, a busy timeout)
            with Journal.open(self.journal.path) as other:
                other.event(now, "kill requested", source)

    def _check_kill_file(self) -> None:
        if self.state.kill_requested_ms is None and self.kill_path.exists():
            self.request_kill(f"file {self.kill_path}")

    # -- the journal ----------------------------------------------------------------

    def _open_journal(self, first_ms: int) -> None:
        path = self.journal_path
        now = self.follower.clock.now_ms() or 0
        if path.exists():
            journal = Journal.open(path)
            check_journal(self.plan, journal)
            broker, last = journal.rebuild()
            journal.event(
                now,
                "restart",
                f"{journal.query('SELECT COUNT(*) AS n FROM bars')[0]['n']} bars rebuilt",
            )
        else:
            account = replace(self.plan.account, start_ms=int(first_ms))
            journal = Journal.create(path, account)
            broker, last = journal.account.broker(), None
            journal.event(
                now, "start", f"first bar {iso_ms(first_ms)}; " + "; ".join(self.plan.notes)
            )
        self.journal, self.broker = journal, broker
        self.state.last = last
        if self.metrics is not None and last is not None:
            self.metrics.book("simulated", float(last["equity"]), int(last["open_positions"]),
                              float(broker.state.account[1]))  # fmt: skip
        # a kill switch requested before a stop (the file found, then the process stopped
        # before the next bar) is journaled: it still applies, at the first open after it
        asked = journal.query("SELECT at_ms, detail FROM events WHERE kind = 'kill requested' "
                              "ORDER BY seq DESC LIMIT 1")  # fmt: skip
        if asked and self.state.kill_requested_ms is None:
            self.state.kill_requested_ms = int(asked[0]["at_ms"])
            self.state.kill_source = asked[0]["detail"] + " (before a restart)"
        elif self.state.kill_requested_ms is not None:  # asked during the warm-up
            journal.event(now, "kill requested", self.state.kill_source)
        self.state.started_ms = now
        self._live_index = np.array(
            [self.follower.live.index[s] for s in journal.account.symbols], dtype=np.int64
        )

    # -- one poll ---------------------------------------------------------------------

    async def cycle(self, client: AsterClient, stop: asyncio.Event | None = None) -> list[int]:
        """One poll of the exchange (or the bars the streams pushed), then every new bar
        traded; the bars journaled. After a restart, nothing is traded until the bars
        missed meanwhile have been fetched (retried at each cycle until they are)."""
        f = self.follower
        if not f.state.started:
            await f.warm_up(client)
            f.state.last_error = None
        elif self.journal is not None:
            await f.follow(client, stop)
        if self.journal is None:  # (after a warm-up, or an error right after it)
            self._open_journal(int(f.live.newest_time()))
            last = self.state.last
            self._backfill_from = None if last is None else int(last["open_ms"]) + self.step
            f.start_streams()
        if self._backfill_from is not None:
            newest = int(f.live.newest_time())
            if self._backfill_from <= newest:
                self.missed = await fetch_missed(
                    client, f, self.journal.account.symbols, self._backfill_from, newest,
                    f.clock.now_ms() or newest,
                )  # fmt: skip
            self._backfill_from = None
        self._check_kill_file()
        self._trading = True
        try:
            return await asyncio.to_thread(self._trade_new)
        finally:
            self._trading = False

    def _trade_new(self) -> list[int]:
        f = self.follower
        if self._dirty:  # a bar's step raised after the broker applied it: as journaled
            self.broker, self.state.last = self.journal.rebuild()
            self._dirty = False
        newest = int(f.live.newest_time())
        last = self.state.last
        start = newest if last is None else int(last["open_ms"]) + self.step
        now = f.clock.now_ms() or 0
        done = []
        for open_ms in range(start, newest + 1, self.step):
            if self._stop is not None and self._stop.is_set():
                break  # a stop: this bar is left to the next start
            missing = self.stragglers(open_ms)
            if missing and now - (open_ms + self.step - 1) < self.wait_ms:
                if self._waiting != open_ms:
                    self._waiting = open_ms
                    log.info("bar %s: waiting for %s", iso_ms(open_ms), ", ".join(missing))
                break
            self._waiting = None
            done.append(self._trade(open_ms, missing))
            if self.state.stopped:
                break
        m, now_last = self.missed, self.state.last
        if m is not None and now_last is not None and now_last["open_ms"] >= m.times[-1]:
            self.missed = None  # traded past it
        self.check_stale()
        return done

    def check_stale(self) -> None:
        """Record the data going stale (the next bar ``grace_s`` overdue: nothing is
        traded, so nothing opens) and coming back."""
        f = self.follower
        if self.journal is None or f.live is None:
            return
        newest = int(f.live.newest_time())
        now = f.clock.now_ms() or 0
        stale = now > newest + 2 * self.step - 1 + int(self.plan.settings.paper.grace_s * 1000)
        due = iso_ms(newest + 2 * self.step - 1)
        if stale and not self.state.stale:
            self.journal.event(now, "stale", f"the bar closing {due} is overdue: nothing opens")
            log.warning("stale data: the bar closing %s is overdue", due)
        elif self.state.stale and not stale:
            self.journal.event(now, "resumed", f"bars up to {iso_ms(newest)}")
        self.state.stale = stale
        if self.metrics is not None:
            self.metrics.set_stale(stale)

    def stragglers(self, open_ms: int) -> list[str]:
        """The traded symbols with a bar just before ``open_ms`` and none at it, while
        other symbols have theirs (among the bars the live features hold; a bar only
        the restart's fetch holds is complete: the exchange's answer long after it)."""
        base = self.follower.live.rings[self.follower.fs.base_interval].panel()
        col = int(np.searchsorted(base.times, open_ms))
        if col == 0 or col >= len(base.times) or base.times[col] != open_ms:
            return []
        close = base.fields["close"][self._live_index]
        absent = ~np.isnan(close[:, col - 1]) & np.isnan(close[:, col])
        fetched = self.missed.column(open_ms) if self.missed is not None else None
        if fetched is not None:  # the restart's fetch has it
            absent &= np.isnan(self.missed.fields["close"][:, fetched])
        return [self.journal.account.symbols[k] for k in np.flatnonzero(absent)]

    def straggler_deadline_s(self) -> float | None:
        """Local seconds until the bar waited for is traded without its stragglers."""
        if self._waiting is None:
            return None
        now = self.follower.clock.now_ms()
        if now is None or self.follower.clock.rate == 0:
            return None
        ms = self._waiting + self.step - 1 + self.wait_ms - now
        return max(ms / 1000 / self.follower.clock.rate, 0.0)

    def bar(self, open_ms: int) -> tuple[Bar, bool, int]:
        """The broker's inputs for the bar at ``open_ms``: (bar, late, seen_ms)."""
        f, acct = self.follower, self.journal.account
        live = f.live
        j = self._live_index
        t = (open_ms - acct.start_ms) // self.step
        n = len(j)
        base = live.rings[f.fs.base_interval].panel()
        col = int(np.searchsorted(base.times, open_ms))
        held = col < len(base.times) and base.times[col] == open_ms
        # a bar missed before a restart: as the exchange sent it. Its prices from the
        # live features where they hold it (a symbol's bar that came late is there), its
        # tradeable flag from the fetch (its 24 h volume window is whole from its first
        # bar on; the live features' held span may start inside it)
        missed = self.missed.column(open_ms) if self.missed is not None else None
        if missed is not None and not held:

            def field_of(name: str) -> np.ndarray:
                return self.missed.fields[name][:, missed].copy()

        else:

            def field_of(name: str) -> np.ndarray:
                out = base.fields[name][j, col].astype(float) if held else np.full(n, np.nan)
                if missed is not None:  # a symbol's bar the fetch got, the warm-up not
                    out = np.where(np.isnan(out), self.missed.fields[name][:, missed], out)
                return out

        now = f.clock.now_ms() or 0
        seen = f.seen_ms.get(open_ms, now)
        # late by when it is traded (a bar that waited for a straggler is decided then)
        late = max(seen, now) - (open_ms + self.step - 1) > self.max_delay_ms
        p_long, p_short, atr = (np.full(n, np.nan) for _ in range(3))
        signals = f.bar_signals.get(open_ms)
        pos = {s: k for k, s in enumerate(acct.symbols)}
        if signals is not None and not late:
            for s, pl, ps in zip(
                signals["symbol"], signals["p_long"], signals["p_short"], strict=True
            ):
                if s in pos:
                    p_long[pos[s]], p_short[pos[s]] = pl, ps
        rows = live.rows_at(open_ms)
        if rows is not None:
            k = rows.features.index(ATR)
            for r, s in enumerate(rows.symbols):
                if s in pos:
                    atr[pos[s]] = rows.values[r, k]
        funding = None
        if self.missed is not None:
            funding = self.missed.funding_in(open_ms, open_ms + self.step)
        if funding is None:
            funding = np.zeros(n)
            for k, jj in enumerate(j):
                have = live.funding[jj]
                if have is not None:
                    ft, rate = have
                    inside = (ft > open_ms) & (ft <= open_ms + self.step)
                    funding[k] = float(rate[inside].sum())
        codes = f.tradeable_at(open_ms)[j]
        if missed is not None:
            fetched = self.missed.codes[:, missed]
            codes = np.where(fetched >= 0, fetched, codes)
        tradeable = codes == TRADEABLE
        bar = Bar(
            int(t), open_ms, field_of("open"), field_of("high"), field_of("low"),
            field_of("close"), field_of("volume"), tradeable, p_long, p_short, atr, funding,
        )  # fmt: skip
        return bar, bool(late), int(seen)

    def _controls(self, bar: Bar) -> Controls:
        kill = (
            self.state.kill_requested_ms is not None
            and bar.open_ms + self.max_delay_ms >= self.state.kill_requested_ms
        )
        last = self.state.last
        new_day = last is None or (bar.open_ms // DAY_MS) != (int(last["open_ms"]) // DAY_MS)
        floor = None
        if new_day:
            equity = self.journal.account.params.capital if last is None else float(last["equity"])
            floor = equity * (1.0 - self.limit) if self.limit > 0 else 0.0
        today = (self.follower.clock.now_ms() or 0) // DAY_MS
        if self.pause_path.exists() and bar.open_ms // DAY_MS >= today:
            # the user's pause: a floor no close reaches, so the kernel pauses new entries
            # at this close until the next day's floor lifts it (journaled as the control).
            # Taken by a bar of today only: a bar of an earlier day traded late after a
            # restart leaves it to today's
            floor = math.inf
        return Controls(kill=kill, new_floor=floor)

    def _trade(self, open_ms: int, missing: list[str] = ()) -> int:  # type: ignore[assignment]
        bar, late, seen = self.bar(open_ms)
        controls = self._controls(bar)
        acct = self.broker.state.account
        paused_before = acct[4] != 0.0 and controls.new_floor is None
        self._dirty = True  # until the bar is committed
        ev: BarEvents = self.broker.apply(bar, controls)
        now = self.follower.clock.now_ms() or 0
        notes = []
        asked = controls.new_floor == math.inf
        if asked:
            notes.append(("pause requested", f"{self.pause_path} at {iso_ms(open_ms)}"))
        if acct[4] != 0.0 and not paused_before:
            notes.append(("paused", "asked by the user" if asked else
                          f"equity {ev.curve[0]:.4f} closed below the day's floor "
                          f"{acct[5]:.4f}" + ": no new entry until the next UTC day"))  # fmt: skip
        if late:
            after = (max(seen, now) - open_ms - self.step + 1) / 1000
            notes.append(
                (
                    "late bar",
                    f"{iso_ms(open_ms)} traded {after:.0f} s after its close: signals not "
                    "acted on",
                )
            )
        if missing:
            notes.append(
                (
                    "missing bar",
                    f"{iso_ms(open_ms)}: no bar of {', '.join(missing)} "
                    f"{(now - open_ms - self.step + 1) / 1000:.0f} s after its close: traded "
                    "without it",
                )
            )
        if controls.kill:
            notes.append(
                (
                    "kill switch",
                    f"{ev.killed} position(s) closed at the open of {iso_ms(open_ms)}; stopped",
                )
            )
        self.state.last = self.journal.write_bar(
            bar, controls, ev, seen_ms=seen, late=late, committed_ms=now, events=notes
        )
        self._dirty = False
        if asked:
            self.pause_path.unlink(missing_ok=True)
            self._pause_pending = True
        self.state.bars += 1
        self.state.late += int(late)
        if controls.kill:
            self.state.stopped = True
            self.kill_path.unlink(missing_ok=True)
        if self.metrics is not None:
            self._observe(ev, acct, controls.kill)
        return bar.t

    def _observe(self, ev: BarEvents, acct: np.ndarray, killed: bool) -> None:
        """The metrics of the bar just journaled; they never fail a bar."""
        try:
            m = self.metrics
            m.bar(self.state.last, self.step, acct[1],
                  (REJECT_REASONS[int(r[3])] for r in ev.rejects))  # fmt: skip
            m.control("paused", bool(acct[4] != 0.0))
            # (the kill switch stops the account as the breaker does: not the breaker)
            m.control("breaker", bool(acct[2] != 0.0) and not killed)
        except Exception:  # noqa: BLE001 - a metric is not worth a bar
            log.warning("metrics: the bar's update failed", exc_info=True)

    # -- the loop ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll after every bar's close and trade, until ``stop`` is set (the bar being
        traded is finished, the account kept) or the kill switch has flattened the
        account. Exchange errors are retried every ``retry_s``, any other error of a
        cycle after a backoff (``paper.errors``); settings or a journal the trader cannot
        continue end it."""
        stop = stop or asyncio.Event()
        self._stop = stop
        settings = self.plan.settings
        ended = ""  # why the loop ended, when an error no retry mends ended it
        async with AsterClient(settings.base_url, settings.exchange.following()) as client:
            if self.metrics is not None:
                self.metrics.watch_client(client)
            try:
                while not stop.is_set() and not self.state.stopped:
                    failed = True  # until the cycle went through: then pushes end a wait
                    try:
                        await self._cycle_or_stop(client, stop)
                        failed = False
                        self.state.last_error = None
                        self.state.errors.ok()
                        wait = self.follower.next_poll_s()
                        deadline = self.straggler_deadline_s()
                        if deadline is not None:
                            wait = min(wait, deadline)
                    except ExchangeError as err:
                        self.state.exchange_errors += 1
                        self.state.last_error = f"{type(err).__name__}: {err}"
                        log.warning("paper trading: %s", self.state.last_error)
                        if self.metrics is not None:
                            self.metrics.error("exchange")
                        self.check_stale()  # an exchange that stops answering: stale in time
                        wait = self.follower.retry_s
                    except (PaperSettingsError, PaperStopped, JournalError) as err:
                        ended = f"ended: {type(err).__name__}: {err}"[:500]
                        raise  # no retry mends them
                    except Exception as err:  # noqa: BLE001 - counted, logged, retried
                        wait = self._survive(err)
                    if self.state.stopped:
                        break
                    await self.follower.wait_next(stop, wait, pushes=not failed)
            finally:
                await self.follower.close_streams()
                # journaled however it ends but a crash (a start after no stop is one)
                if self.journal is not None:
                    try:
                        self.journal.event(self.follower.clock.now_ms() or 0, "stop", ended
                                           or ("killed" if self.state.stopped else "stopped"))
                    except Exception:  # noqa: BLE001 - the journal may be what failed
                        log.warning("the stop could not be journaled", exc_info=True)

    async def _cycle_or_stop(self, client: AsterClient, stop: asyncio.Event) -> None:
        """``cycle``, abandoned when ``stop`` is set while it waits on the exchange (a
        warm-up, a fetch); bars being traded are finished (no new one is begun)."""
        work = asyncio.ensure_future(self.cycle(client, stop))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not work.done() and not self._trading:
            work.cancel()
        try:
            await work
        except asyncio.CancelledError:
            if not stop.is_set():
                raise

    def _survive(self, err: Exception) -> float:
        """An unexpected error of a cycle: counted, logged, journaled; the wait before the
        next try. A bar whose step raised is redone from the journal (``_trade_new``)."""
        now = self.follower.clock.now_ms() or int(time.time() * 1000)
        wait = self.state.errors.record(err, now)
        if self.metrics is not None:
            self.metrics.error(type(err).__name__)
        self.state.last_error = self.state.errors.describe()
        if self.journal is not None:
            try:
                if self.journal.conn.in_transaction:  # a commit that failed
                    self.journal.conn.execute("ROLLBACK")
                self.journal.event(now, "error", self.state.last_error or "")
                self.check_stale()
            except Exception:  # noqa: BLE001 - the journal itself may be what fails
                log.warning("paper trading: the error could not be journaled", exc_info=True)
        return wait

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
            self.journal = None
