"""Alerts for a running paper or live account: the journal's new rows as messages,
delivered through apprise (Telegram, Discord, Slack, e-mail, any JSON webhook).

``Alerter`` tails a trader's SQLite journal, opened read-only (the trader writes it
meanwhile, in WAL mode; the alerter never writes to it), and turns what is new since its
cursor into one message per kind of alert, a burst folded into one:

- ``fill`` (entries), ``stop``, ``target``, ``exit`` (any other exit): the paper
  account's ``fills``; for a live journal (it has ``live_fills``) the exchange's fills,
  their leg taken from ``intents`` by client id (an order that is not there, such as the
  exchange's own liquidation order, is an ``exit``), never the shadow's ``fills``;
- from ``events``: ``kill switch`` (kill requested, kill switch, live killed), ``daily
  pause`` (paused, pause requested), ``stale data`` (stale, and resumed as its recovery
  line), ``reconciliation mismatch`` (live differences), ``liquidation`` (live
  liquidation), ``started`` (start, live start, a restart after a stop), ``crash
  restart`` (a restart whose previous event is not a stop: the trader died), ``error
  streak`` (``error_streak`` errors with no bar committed between them; every later
  error of the same streak is an item of it too). Stops, late and missing bars and
  acknowledgements are not alerted: the user did them, or the dashboard shows them.

Each kind goes at most once per ``interval_s``; what comes sooner is held and folded
into the first message after the interval. The urgent kinds (kill switch, crash restart,
liquidation, reconciliation mismatch) go at once. A message that a target refuses or
that fails is logged and dropped, not retried: an alert hours late is noise.

The cursor, ``alerts.json`` beside the journal (written atomically), keeps where the
journal was read to (events by ``seq``, fills and live fills by ``rowid``: the ledger
inserts a symbol's fills when it syncs that symbol, so a later row may carry an earlier
``time_ms``, and insertion order skips nothing), the error streak in progress, when each
kind was last sent and what is held. Without a cursor the alerter starts after what the
journal holds, so enabling alerts on an old account replays none of its history; a
journal that is not the one the cursor read (another account started in its place) is
read from its beginning.

The target URLs carry secrets (bot tokens, webhook keys): they are never logged in
full, and apprise's own log lines have their URLs cut to the scheme.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apprise

from asterai.atomic import write_json
from asterai.intervals import iso_ms
from asterai.live.ledger import FORCED
from asterai.paper.journal import has_table, read_only

log = logging.getLogger(__name__)

#: the environment variable naming the targets (apprise URLs, whitespace or commas)
ENV = "ASTERAI_ALERT_URLS"
CURSOR_NAME = "alerts.json"
CURSOR_VERSION = 1
#: a message's body lists this many items, then says how many more
MAX_LINES = 20
#: an item's line is cut to this many characters (a reconciliation's detail runs to 2,000;
#: Telegram takes 4,096 in a message)
MAX_LINE = 300

KILL, LIQUIDATION, MISMATCH, CRASH = (
    "kill switch", "liquidation", "reconciliation mismatch", "crash restart",
)  # fmt: skip
ERRORS, PAUSE, STALE, STARTED = "error streak", "daily pause", "stale data", "started"
FILL, STOP, TARGET, EXIT = "fill", "stop", "target", "exit"
#: every kind of alert, in the order one poll sends them: the urgent first
KINDS = (KILL, LIQUIDATION, MISMATCH, CRASH, ERRORS, PAUSE, STALE, STARTED, FILL, STOP,
         TARGET, EXIT)  # fmt: skip
URGENT = frozenset({KILL, LIQUIDATION, MISMATCH, CRASH})

#: the journal's event kinds alerted as they are ("restart" and "error" need context)
EVENT_KINDS = {
    "kill requested": KILL, "kill switch": KILL, "live killed": KILL,
    "paused": PAUSE, "pause requested": PAUSE,
    "stale": STALE, "resumed": STALE,
    "live differences": MISMATCH,
    "live liquidation": LIQUIDATION,
    "start": STARTED, "live start": STARTED,
}  # fmt: skip
#: a live intent's leg (``live.intents``) as the kind of its fill
LEGS = {"e": FILL, "s": STOP, "t": TARGET, "x": EXIT}
#: the paper exit reasons (``backtest.enums.EXIT_REASONS``) that are a stop hit
STOP_REASONS = frozenset({"stop", "gap through stop"})

_URL = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*)://\S+")
_REQUEST = re.compile(r'"(GET|POST|PUT|PATCH|DELETE|HEAD) [^"\s]+')


def alert_urls(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The targets ``ASTERAI_ALERT_URLS`` names (split on whitespace and commas); ``[]``
    if it is unset or empty."""
    return [u for u in re.split(r"[\s,]+", environ.get(ENV, "")) if u]


def redact(text: str) -> str:
    """``text`` with every URL cut to its scheme (``tgram://…``) and every request line's
    path cut (``"POST …"``, as urllib3 logs the requests apprise sends: a Telegram bot's
    token is in its path): they hold secrets."""
    return _REQUEST.sub(r'"\1 …', _URL.sub(r"\1://…", text))


def _scheme(url: str) -> str:
    """What a log may say of a target URL: its scheme (``tgram://``), never the rest."""
    return url.split("://", 1)[0] + "://" if "://" in url else "(schemeless)"


class _RedactURLs(logging.Filter):
    """Cuts URLs out of apprise's log lines: it logs a URL it cannot parse in full."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def _guard_apprise_log() -> None:
    # apprise's own lines, and urllib3's (the HTTP library under apprise's targets logs
    # each request's path at DEBUG)
    for name in ("apprise", "urllib3.connectionpool"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactURLs) for f in logger.filters):
            logger.addFilter(_RedactURLs())


@dataclass(frozen=True, slots=True)
class Message:
    """One alert as sent: its kind, title, body (one line per item) and item count."""

    kind: str
    title: str
    body: str
    items: int


@dataclass(slots=True)
class _Held:
    """The items of one kind not sent yet: the first ``MAX_LINES`` lines, how many in all,
    and the journal kind of the last one (a stale data alert that ends resumed)."""

    lines: list[str] = field(default_factory=list)
    count: int = 0
    last: str = ""

    def add(self, line: str, source: str) -> None:
        if len(self.lines) < MAX_LINES:
            self.lines.append(line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…")
        self.count += 1
        self.last = source


@dataclass(slots=True)
class _Streak:
    """Errors with no bar committed between them: how many, the last one's time, and the
    lines of those not alerted yet (until the streak is long enough)."""

    count: int = 0
    last_ms: int | None = None
    lines: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Cursor:
    """Where the journal was read to, and what is held (``alerts.json``)."""

    journal: str | None = None  # the journal's identity: its meta ``start_ms``
    events: int = 0  # the last ``events.seq`` read
    fills: int = 0  # the last ``fills`` rowid read
    live_fills: int = 0  # the last ``live_fills`` rowid read
    streak: _Streak = field(default_factory=_Streak)
    sent: dict[str, float] = field(default_factory=dict)  # kind -> when last sent (clock)
    held: dict[str, _Held] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        s = self.streak
        return {
            "version": CURSOR_VERSION,
            "journal": self.journal,
            "events": self.events,
            "fills": self.fills,
            "live_fills": self.live_fills,
            "streak": {"count": s.count, "last_ms": s.last_ms, "lines": s.lines},
            "sent": self.sent,
            "held": {k: {"lines": h.lines, "count": h.count, "last": h.last}
                     for k, h in self.held.items()},
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> _Cursor:
        if d.get("version") != CURSOR_VERSION:
            raise ValueError(f"cursor version {d.get('version')!r}, this reads {CURSOR_VERSION}")
        s = d.get("streak") or {}
        return cls(
            d.get("journal"), int(d["events"]), int(d["fills"]), int(d["live_fills"]),
            _Streak(int(s.get("count", 0)), s.get("last_ms"), list(s.get("lines", []))),
            {k: float(v) for k, v in d.get("sent", {}).items()},
            {k: _Held(list(h["lines"]), int(h["count"]), str(h.get("last", "")))
             for k, h in d.get("held", {}).items() if k in KINDS},
        )  # fmt: skip


class Alerter:
    """Tails ``journal_path`` and sends its news to ``urls`` (none: a dry run that still
    advances the cursor and returns what it would send). ``account`` names the account in
    the titles ("paper", "live"); ``clock`` (seconds) paces the rate limit."""

    def __init__(
        self,
        journal_path: Path,
        urls: Sequence[str],
        *,
        account: str,
        interval_s: float = 600,
        error_streak: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, not {interval_s}")
        if error_streak < 1:
            raise ValueError(f"error_streak must be >= 1, not {error_streak}")
        self.journal_path = Path(journal_path)
        self.cursor_path = self.journal_path.parent / CURSOR_NAME
        self.account = account
        self.interval_s = float(interval_s)
        self.error_streak = int(error_streak)
        self.clock = clock
        self._lock = threading.Lock()  # one poll at a time, whichever thread calls it
        self._targets = _targets(urls)
        loaded = self._load()
        self._dirty = loaded is None  # a cursor made here is saved at the first poll
        self._seek_end = False  # the journal was unreadable here: skip to its end when read
        self.cursor = loaded if loaded is not None else self._at_end()

    # -- the cursor -------------------------------------------------------------------

    def _load(self) -> _Cursor | None:
        try:
            return _Cursor.from_json(json.loads(self.cursor_path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            # starting over from the journal's end loses at most a few alerts; replaying
            # its history would flood the targets
            log.warning("alerts: %s unreadable (%s): starting after what the journal holds",
                        self.cursor_path, err)  # fmt: skip
            return None

    def _at_end(self) -> _Cursor:
        """A cursor after everything the journal holds now (at 0 if there is none yet)."""
        cursor = _Cursor()
        if not self.journal_path.exists():
            return cursor
        try:
            with read_only(self.journal_path) as conn:
                cursor.journal = _identity(conn)
                _seek_end(conn, cursor)
        except sqlite3.Error as err:  # the poll says it again until the journal is readable
            log.warning("alerts: %s unreadable (%s): alerting from its end once it is",
                        self.journal_path, err)  # fmt: skip
            self._seek_end = True
        return cursor

    def _save(self) -> None:
        write_json(self.cursor_path, self.cursor.to_json())
        self._dirty = False

    # -- one poll -----------------------------------------------------------------------

    def poll(self, flush: bool = False) -> list[Message]:
        """Reads what is new since the cursor, sends what is due (the urgent at once, the
        rest at most once per kind per ``interval_s``; ``flush``: everything held, as the
        trader stops), saves the cursor; returns the messages sent or tried. A failing
        target never raises here."""
        with self._lock:
            if self.journal_path.exists():
                self._read_news()
            messages = self._due(flush)
            for message in messages:
                self._deliver(message)
            if self._dirty:
                self._save()
            return messages

    def _read_news(self) -> None:
        c = self.cursor
        with read_only(self.journal_path) as conn:
            conn.execute("BEGIN")  # one snapshot: the bars the streak checks match the events
            try:
                if not has_table(conn, "events"):
                    return  # not a journal yet
                self._check_same_journal(conn)
                if self._seek_end:
                    _seek_end(conn, c)
                    self._seek_end = False
                events = conn.execute(
                    "SELECT seq, at_ms, kind, detail FROM events WHERE seq > ? ORDER BY seq",
                    (c.events,),
                ).fetchall()
                for seq, at_ms, kind, detail in events:
                    self._on_event(conn, seq, at_ms, kind, detail)
                    c.events = seq
                if has_table(conn, "live_fills"):
                    for rowid, kind, line in _live_fills(conn, c.live_fills):
                        self._hold(kind, line, kind)
                        c.live_fills = rowid
                elif has_table(conn, "fills"):
                    for rowid, kind, line in _paper_fills(conn, c.fills):
                        self._hold(kind, line, kind)
                        c.fills = rowid
            finally:
                conn.execute("COMMIT")

    def _check_same_journal(self, conn: sqlite3.Connection) -> None:
        """Another journal in the place of the one the cursor read (an account moved away,
        a new one started) is read from its beginning."""
        c = self.cursor
        identity = _identity(conn)
        replaced = c.journal is not None and identity != c.journal
        if replaced or _max_rowid(conn, "events", "seq") < c.events:
            log.info("alerts: %s is a new journal: reading it from its beginning",
                     self.journal_path)  # fmt: skip
            c.events = c.fills = c.live_fills = 0
            c.streak = _Streak()
        if identity != c.journal:
            c.journal = identity
            self._dirty = True

    def _on_event(
        self, conn: sqlite3.Connection, seq: int, at_ms: int, kind: str, detail: str
    ) -> None:
        self._dirty = True
        line = f"{iso_ms(at_ms)} {kind}" + (f": {detail}" if detail else "")
        if kind == "error":
            self._on_error(conn, at_ms, line)
        elif kind == "restart":
            prev = conn.execute(
                "SELECT kind FROM events WHERE seq < ? ORDER BY seq DESC LIMIT 1", (seq,)
            ).fetchone()
            # a trader that stops cleanly journals "stop" last: anything else, it died
            self._hold(CRASH if prev is not None and prev[0] != "stop" else STARTED, line, kind)
        elif kind in EVENT_KINDS:
            self._hold(EVENT_KINDS[kind], line, kind)

    def _on_error(self, conn: sqlite3.Connection, at_ms: int, line: str) -> None:
        s = self.cursor.streak
        if s.count and _bar_between(conn, s.last_ms, at_ms):
            s = self.cursor.streak = _Streak()  # a bar went through since: a new streak
        s.count += 1
        s.last_ms = at_ms
        if s.count < self.error_streak:
            s.lines.append(line)
            return
        for earlier in s.lines:
            self._hold(ERRORS, earlier, "error")
        s.lines = []
        self._hold(ERRORS, line, "error")

    def _hold(self, kind: str, line: str, source: str) -> None:
        self.cursor.held.setdefault(kind, _Held()).add(line, source)
        self._dirty = True

    def _due(self, flush: bool = False) -> list[Message]:
        """The held kinds that may go now (``flush``: all of them), as messages, taken out
        of the held items."""
        now = self.clock()
        out = []
        for kind in KINDS:
            held = self.cursor.held.get(kind)
            if held is None or not held.count:
                continue
            last = self.cursor.sent.get(kind)
            wait = kind not in URGENT and last is not None and now - last < self.interval_s
            if wait and not flush:
                continue  # held, folded into the first message after the interval
            out.append(self._message(kind, held))
            del self.cursor.held[kind]
            self.cursor.sent[kind] = now  # a failed send counts too: no retry storm
            self._dirty = True
        return out

    def _message(self, kind: str, held: _Held) -> Message:
        body = list(held.lines)
        if held.count > len(body):
            body.append(f"... and {held.count - len(body)} more")
        title = f"AsterAI {self.account}: {_headline(kind, held.count, held.last)}"
        return Message(kind, title, "\n".join(body), held.count)

    # -- delivery -------------------------------------------------------------------

    def _deliver(self, message: Message) -> None:
        if self._targets is None:
            return
        try:
            ok = bool(self._targets.notify(title=message.title, body=redact(message.body),
                                           notify_type=_notify_type(message.kind)))  # fmt: skip
        except Exception as err:  # noqa: BLE001 - a target must never stop the alerter
            log.warning("alerts: %r not delivered (%s: %s): dropped", message.title,
                        type(err).__name__, redact(str(err)))  # fmt: skip
            return
        if not ok:
            log.warning("alerts: %r not delivered to every target: dropped", message.title)

    # -- the loop ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, every_s: float) -> None:
        """``poll`` (in a thread: SQLite and the targets block) every ``every_s`` seconds
        until ``stop`` is set, then once more with everything held (what the trader
        journaled as it stopped: the kill switch's close, say; it may not run again for
        days). Never raises: a failed poll is logged, and tried again. Its own thread,
        not the event loop's pool the trader's bars are stepped in: a target that hangs
        until its timeout delays no bar."""
        with ThreadPoolExecutor(1, thread_name_prefix="alerts") as pool:
            while not stop.is_set():
                await self._poll_logged(pool, every_s)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=every_s)
                except TimeoutError:
                    pass
            await self._poll_logged(pool, every_s, flush=True)

    async def _poll_logged(self, pool: ThreadPoolExecutor, every_s: float,
                           flush: bool = False) -> None:  # fmt: skip
        try:
            await asyncio.get_running_loop().run_in_executor(pool, self.poll, flush)
        except (sqlite3.Error, OSError) as err:  # a journal being replaced, a full disk
            log.warning("alerts: polling %s failed (%s: %s); trying again in %g s",
                        self.journal_path, type(err).__name__, err, every_s)  # fmt: skip
        except Exception:  # noqa: BLE001 - a bug: its traceback, and the alerts go on
            log.exception("alerts: polling %s failed; trying again in %g s",
                          self.journal_path, every_s)  # fmt: skip


# -- the journal, read-only -------------------------------------------------------------


def _seek_end(conn: sqlite3.Connection, cursor: _Cursor) -> None:
    """``cursor`` after every row the journal holds."""
    cursor.events = _max_rowid(conn, "events", "seq")
    cursor.fills = _max_rowid(conn, "fills")
    cursor.live_fills = _max_rowid(conn, "live_fills")


def _max_rowid(conn: sqlite3.Connection, table: str, column: str = "rowid") -> int:
    if not has_table(conn, table):
        return 0
    return int(conn.execute(f"SELECT COALESCE(MAX({column}), 0) FROM {table}").fetchone()[0])


def _identity(conn: sqlite3.Connection) -> str | None:
    if not has_table(conn, "meta"):
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'start_ms'").fetchone()
    return None if row is None else str(row[0])


def _bar_between(conn: sqlite3.Connection, after_ms: int | None, until_ms: int) -> bool:
    """A bar committed after ``after_ms`` and by ``until_ms`` (one committed the same
    millisecond as an error may have come after it: it counts, fewer false alerts)."""
    row = conn.execute(
        "SELECT 1 FROM bars WHERE committed_ms > ? AND committed_ms <= ? LIMIT 1",
        (after_ms if after_ms is not None else -1, until_ms),
    ).fetchone()
    return row is not None


def _paper_fills(conn: sqlite3.Connection, after: int) -> list[tuple[int, str, str]]:
    """(rowid, kind, line) of the paper fills after rowid ``after``."""
    rows = conn.execute(
        "SELECT f.rowid, f.symbol, f.kind, f.side, f.price, f.quantity, f.reason, b.open_ms "
        "FROM fills f LEFT JOIN bars b ON b.t = f.t WHERE f.rowid > ? ORDER BY f.rowid",
        (after,),
    ).fetchall()
    out = []
    for rowid, symbol, kind, side, price, qty, reason, open_ms in rows:
        bar = f"bar {iso_ms(open_ms)}: " if open_ms is not None else ""
        verb = "buy" if side == "long" else "sell"  # an exit's side is its order's side
        trade = f"{bar}{symbol} {verb} {qty:.10g} @ {price:.10g}"
        if kind == "entry":
            out.append((rowid, FILL, f"{trade}, opens a {side}"))
            continue
        held = "short" if side == "long" else "long"
        what = STOP if reason in STOP_REASONS else TARGET if reason == "target" else EXIT
        out.append((rowid, what, f"{trade}, {reason or 'exit'}, closes a {held}"))
    return out


def _live_fills(conn: sqlite3.Connection, after: int) -> list[tuple[int, str, str]]:
    """(rowid, kind, line) of the exchange's fills after rowid ``after``: the leg from
    the intent of the same client id."""
    leg = "i.leg" if has_table(conn, "intents") else "NULL"
    join = "LEFT JOIN intents i ON i.client_id = f.client_id" if leg != "NULL" else ""
    rows = conn.execute(
        f"SELECT f.rowid, f.symbol, f.side, f.price, f.qty, f.realized_pnl, f.client_id, "
        f"f.time_ms, {leg} FROM live_fills f {join} WHERE f.rowid > ? ORDER BY f.rowid",
        (after,),
    ).fetchall()
    out = []
    for rowid, symbol, side, price, qty, pnl, client_id, time_ms, leg_code in rows:
        line = f"{iso_ms(time_ms)} {symbol} {side} {qty} @ {price}"
        if pnl and float(pnl) != 0:
            line += f", realised {pnl}"
        if leg_code is None:
            forced = str(client_id).startswith(FORCED)
            line += " (the exchange's own order" + (": liquidation)" if forced else ")")
        out.append((rowid, LEGS.get(leg_code, EXIT), line))
    return out


# -- messages and targets -----------------------------------------------------------------


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _headline(kind: str, n: int, last: str) -> str:
    """The title's text after the account: counted for trades and errors."""
    if kind == FILL:
        return _plural(n, "fill")
    if kind in (STOP, TARGET):
        return f"{_plural(n, kind)} hit"
    if kind == EXIT:
        return _plural(n, "exit")
    if kind == ERRORS:
        return f"{_plural(n, 'error')} with no bar traded between them"
    if kind == STALE and last == "resumed":
        return "data resumed"
    if kind == CRASH:
        return "restarted after a crash"
    return kind if n == 1 else f"{kind} ({n} events)"


def _notify_type(kind: str) -> apprise.NotifyType:
    if kind in URGENT:
        return apprise.NotifyType.FAILURE
    if kind in (ERRORS, PAUSE, STALE):
        return apprise.NotifyType.WARNING
    return apprise.NotifyType.INFO


def _targets(urls: Sequence[str]) -> apprise.Apprise | None:
    """apprise with every URL it accepts (each refused one warned of by its scheme only);
    ``None`` with none: a dry run."""
    if not urls:
        return None
    _guard_apprise_log()
    targets = apprise.Apprise()
    for url in urls:
        try:
            ok = targets.add(url)
        except Exception:  # noqa: BLE001 - a malformed URL is the user's to mend, not fatal
            ok = False
        if not ok:
            log.warning("alerts: a %s target URL was refused by apprise: skipped",
                        _scheme(url))  # fmt: skip
    return targets if len(targets) else None
