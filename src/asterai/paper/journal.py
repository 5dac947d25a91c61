"""The paper account's journal: every bar seen and what the account did on it, in SQLite.

One file, ``data/paper/journal.sqlite`` (``paths.DataPaths.paper_journal``), in WAL mode
with ``synchronous=FULL``: each bar is one transaction (its inputs, the controls in
force, the fills, trades, rejections, funding, the orders decided at its close, the
open positions and the equity), committed before the next bar is looked at. A reader
(``asterai paper --status``) can open it while the trader writes; a trader killed with
``kill -9`` leaves every bar it committed and none of the one it was on.

The account is never stored as a snapshot to trust: ``rebuild`` plays the journaled
bar inputs and controls through a new ``SimulatedBroker`` (the backtest's own step) and
checks that every bar's equity comes out exactly as it was journaled. A restart
continues from the rebuilt account, so nothing is lost or counted twice.

Tables (NaN is stored as NULL): ``meta`` (key, JSON value: the symbols, the kernel's
parameters and filters, the model, the start), ``bars`` (one row per bar: open time,
when it was seen, late or not, the controls, the equity after it), ``bar_inputs`` (per
bar and symbol: what the broker was given), ``orders``, ``fills``, ``trades``,
``rejections`` (``bar``: the bar whose step recorded it; ``t``: the bar the order was
for, as in the backtest's ``rejected_orders.csv``: a signal refused at a close is
recorded at the next bar, whose open it would have filled at), ``positions`` (after
each bar), ``funding`` and ``events`` (start,
restart, stale data, the kill switch, stop).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asterai.backtest import kernel
from asterai.backtest.enums import EXIT_REASONS, REJECT_REASONS
from asterai.paper.broker import ENTRY, Bar, BarEvents, Controls, SimulatedBroker

SCHEMA_VERSION = 1

#: the broker's inputs per symbol, as ``bar_inputs`` stores them
INPUT_FIELDS = (
    "open", "high", "low", "close", "volume", "tradeable", "p_long", "p_short", "atr",
    "funding",
)  # fmt: skip

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bars (
    t INTEGER PRIMARY KEY, open_ms INTEGER NOT NULL UNIQUE, seen_ms INTEGER NOT NULL,
    late INTEGER NOT NULL, symbols_with_bar INTEGER NOT NULL, signals INTEGER NOT NULL,
    kill INTEGER NOT NULL, new_floor REAL, killed INTEGER NOT NULL,
    equity REAL NOT NULL, cash REAL NOT NULL, open_positions INTEGER NOT NULL,
    notional REAL NOT NULL, committed_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bar_inputs (
    t INTEGER NOT NULL, symbol INTEGER NOT NULL, open REAL, high REAL, low REAL,
    close REAL, volume REAL, tradeable INTEGER NOT NULL, p_long REAL, p_short REAL,
    atr REAL, funding REAL, PRIMARY KEY (t, symbol)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS orders (
    t INTEGER NOT NULL, symbol TEXT NOT NULL, kind TEXT NOT NULL, side TEXT NOT NULL,
    quantity REAL NOT NULL, probability REAL, reason TEXT
);
CREATE TABLE IF NOT EXISTS fills (
    t INTEGER NOT NULL, symbol TEXT NOT NULL, kind TEXT NOT NULL, side TEXT NOT NULL,
    price REAL NOT NULL, quantity REAL NOT NULL, reason TEXT
);
CREATE TABLE IF NOT EXISTS trades (
    t INTEGER NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL, signal_t INTEGER,
    entry_t INTEGER, exit_t INTEGER, entry_price REAL, exit_price REAL, quantity REAL,
    fees REAL, funding REAL, pnl REAL, exit_reason TEXT, stop REAL, target REAL
);
CREATE TABLE IF NOT EXISTS rejections (
    bar INTEGER NOT NULL, t INTEGER NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL, reason TEXT NOT NULL,
    probability REAL
);
CREATE TABLE IF NOT EXISTS positions (
    t INTEGER NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL, quantity REAL,
    entry_price REAL, stop REAL, target REAL, entry_t INTEGER
);
CREATE TABLE IF NOT EXISTS funding (
    t INTEGER NOT NULL, symbol TEXT NOT NULL, amount REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trades_t ON trades (t);
CREATE INDEX IF NOT EXISTS orders_t ON orders (t);
"""


class JournalError(RuntimeError):
    """A journal that cannot be continued: another account's, a newer schema, or one
    whose bars do not replay to the equity it recorded."""


@dataclass(frozen=True, slots=True)
class Account:
    """What a journal describes: the filters and parameters the account trades with."""

    symbols: list[str]
    params: kernel.Params
    tick: np.ndarray
    step: np.ndarray
    min_notional: np.ndarray
    start_ms: int
    step_ms: int
    facts: dict[str, Any]  # the model, the settings: checked on a restart, shown in reports

    def to_meta(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "symbols": self.symbols,
            "params": self.params._asdict(),
            "tick": self.tick.tolist(),
            "step": self.step.tolist(),
            "min_notional": self.min_notional.tolist(),
            "start_ms": self.start_ms,
            "step_ms": self.step_ms,
            "facts": self.facts,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Account:
        return cls(
            list(meta["symbols"]), kernel.Params(**meta["params"]),
            np.asarray(meta["tick"], dtype=float), np.asarray(meta["step"], dtype=float),
            np.asarray(meta["min_notional"], dtype=float), int(meta["start_ms"]),
            int(meta["step_ms"]), dict(meta["facts"]),
        )  # fmt: skip

    def broker(self) -> SimulatedBroker:
        return SimulatedBroker(self.params, self.tick, self.step, self.min_notional)


def _nan(a: Any) -> float:
    return np.nan if a is None else float(a)


def _side(x: float) -> str:
    return "long" if x > 0 else "short"


class Journal:
    """An open journal file (created with ``Journal.create``, continued with ``open``)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, account: Account) -> None:
        self.path = path
        self.conn = conn
        self.account = account

    # -- opening ------------------------------------------------------------------

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        # one writer, used from one thread at a time (the trader hands its bars to a worker)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @classmethod
    def create(cls, path: str | Path, account: Account) -> Journal:
        path = Path(path)
        if path.exists():
            raise JournalError(f"{path} already exists: continue it, or move it away first")
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = cls._connect(path)
        with _transaction(conn):
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in account.to_meta().items()],
            )
        return cls(path, conn, account)

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> Journal:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: no paper account has started here")
        if readonly:
            conn = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False
            )
        else:
            conn = cls._connect(path)
        meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        if meta.get("schema") != SCHEMA_VERSION:
            raise JournalError(
                f"{path}: journal schema {meta.get('schema')!r}, this version reads "
                f"{SCHEMA_VERSION}"
            )
        return cls(path, conn, Account.from_meta(meta))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------

    def event(self, at_ms: int, kind: str, detail: str = "") -> None:
        with _transaction(self.conn):
            self._event(at_ms, kind, detail)

    def _event(self, at_ms: int, kind: str, detail: str) -> None:
        self.conn.execute(
            "INSERT INTO events (at_ms, kind, detail) VALUES (?, ?, ?)", (at_ms, kind, detail)
        )

    def write_bar(
        self,
        bar: Bar,
        controls: Controls,
        ev: BarEvents,
        *,
        seen_ms: int,
        late: bool,
        committed_ms: int,
        events: list[tuple[str, str]] = (),  # type: ignore[assignment]
    ) -> dict[str, Any]:
        """Bar ``bar`` and everything it did, in one transaction; returns its ``bars`` row
        (as ``last_bar`` would read it back)."""
        names = self.account.symbols
        c = self.conn
        has = ~np.isnan(bar.close)
        acted = ~np.isnan(bar.p_long) | ~np.isnan(bar.p_short)
        row = {
            "t": int(bar.t),
            "open_ms": int(bar.open_ms),
            "seen_ms": int(seen_ms),
            "late": int(late),
            "symbols_with_bar": int(has.sum()),
            "signals": int(acted.sum()),
            "kill": int(controls.kill),
            "new_floor": None if controls.new_floor is None else float(controls.new_floor),
            "killed": int(ev.killed),
            "equity": float(ev.curve[0]),
            "cash": float(ev.curve[1]),
            "open_positions": int(ev.curve[2]),
            "notional": float(ev.curve[3]),
            "committed_ms": int(committed_ms),
        }
        with _transaction(c):
            c.execute(
                f"INSERT INTO bars ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})",
                row,
            )
            keep = np.flatnonzero(has | acted | (bar.funding != 0))
            columns = [bar.open, bar.high, bar.low, bar.close, bar.volume]
            c.executemany(
                "INSERT INTO bar_inputs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (bar.t, int(j), *(_db(a[j]) for a in columns), int(bar.tradeable[j]),
                     _db(bar.p_long[j]), _db(bar.p_short[j]), _db(bar.atr[j]),
                     _db(bar.funding[j]))
                    for j in keep
                ],
            )  # fmt: skip
            c.executemany(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (bar.t, names[int(j)], "entry" if kind == ENTRY else "exit", _side(side),
                     float(q), _db(prob), None if reason < 0 else EXIT_REASONS[int(reason)])
                    for j, kind, side, q, prob, reason in ev.orders
                ],
            )  # fmt: skip
            fills = []
            for r in ev.trades:
                if int(r[3]) == bar.t:  # opened at this open and closed in the same bar
                    fills.append((bar.t, names[int(r[0])], "entry", _side(r[1]), r[5], r[7], None))
                fills.append(
                    (bar.t, names[int(r[0])], "exit", _side(-r[1]), r[6], r[7],
                     EXIT_REASONS[int(r[11])])
                )  # fmt: skip
            for r in ev.positions:
                if int(r[6]) == bar.t:
                    fills.append((bar.t, names[int(r[0])], "entry", _side(r[1]), r[3], r[2], None))
            c.executemany("INSERT INTO fills VALUES (?, ?, ?, ?, ?, ?, ?)", fills)
            c.executemany(
                "INSERT INTO trades VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (bar.t, names[int(r[0])], _side(r[1]), int(r[2]), int(r[3]), int(r[4]),
                     r[5], r[6], r[7], r[8], r[9], r[10], EXIT_REASONS[int(r[11])], _db(r[12]),
                     _db(r[13]))
                    for r in ev.trades
                ],
            )  # fmt: skip
            c.executemany(
                "INSERT INTO rejections VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (bar.t, int(r[0]), names[int(r[1])], _side(r[2]), REJECT_REASONS[int(r[3])],
                     _db(r[4]))
                    for r in ev.rejects
                ],
            )  # fmt: skip
            c.executemany(
                "INSERT INTO positions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (bar.t, names[int(r[0])], _side(r[1]), r[2], r[3], _db(r[4]), _db(r[5]),
                     int(r[6]))
                    for r in ev.positions
                ],
            )  # fmt: skip
            paid = np.flatnonzero(ev.funding != 0)
            c.executemany(
                "INSERT INTO funding VALUES (?, ?, ?)",
                [(bar.t, names[int(j)], float(ev.funding[j])) for j in paid],
            )
            for kind, detail in events:
                self._event(committed_ms, kind, detail)
        return row

    # -- reading ------------------------------------------------------------------

    def last_bar(self) -> dict[str, Any] | None:
        cur = self.conn.execute("SELECT * FROM bars ORDER BY t DESC LIMIT 1")
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    def query(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, args)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def bars(self) -> Iterator[tuple[Bar, Controls, dict[str, Any]]]:
        """Every journaled bar in order: the broker's inputs, the controls, its row."""
        n = len(self.account.symbols)
        inputs = self.conn.execute("SELECT * FROM bar_inputs ORDER BY t, symbol")
        pending = inputs.fetchone()
        cur = self.conn.execute("SELECT * FROM bars ORDER BY t")
        cols = [d[0] for d in cur.description]
        for raw in cur:
            row = dict(zip(cols, raw, strict=True))
            t = row["t"]
            a = {f: np.full(n, np.nan) for f in INPUT_FIELDS}
            a["funding"][:] = 0.0
            a["tradeable"][:] = 0.0
            while pending is not None and pending[0] == t:
                j = pending[1]
                for f, v in zip(INPUT_FIELDS, pending[2:], strict=True):
                    a[f][j] = _nan(v) if f not in ("funding", "tradeable") else (v or 0.0)
                pending = inputs.fetchone()
            bar = Bar(
                t, row["open_ms"], a["open"], a["high"], a["low"], a["close"], a["volume"],
                a["tradeable"].astype(bool), a["p_long"], a["p_short"], a["atr"], a["funding"],
            )  # fmt: skip
            yield bar, Controls(bool(row["kill"]), row["new_floor"]), row

    def rebuild(self) -> tuple[SimulatedBroker, dict[str, Any] | None]:
        """The account after the last journaled bar, replayed through the engine; raises
        ``JournalError`` if any bar's equity differs from the journal's."""
        broker = self.account.broker()
        last = None
        for bar, controls, row in self.bars():
            ev = broker.apply(bar, controls)
            want = (row["equity"], row["cash"], row["open_positions"])
            got = (float(ev.curve[0]), float(ev.curve[1]), int(ev.curve[2]))
            if got != want:
                raise JournalError(
                    f"{self.path}: bar {bar.t} (opened {bar.open_ms}) replays to equity, cash, "
                    f"positions {got}, the journal says {want}: it was written by other "
                    "code or changed by hand"
                )
            last = row
        return broker, last


@contextmanager
def read_only(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A reader's connection to a journal (``mode=ro``: it cannot write, whatever it
    runs; a trader may be writing meanwhile, WAL lets both), rows as ``sqlite3.Row``."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30,
                           check_same_thread=False)  # fmt: skip
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None  # fmt: skip


def pause_starts(rows: Iterable[Mapping[str, Any]]) -> Iterator[int]:
    """The bars (their index in ``rows``, the journal's ``bars`` in order) at whose close
    new entries were paused: the kernel's rule over the journaled controls. A bar's
    ``new_floor`` (each UTC day's first bar: the daily loss limit's, 0 when off; the
    user's pause: infinity) lifts a pause and sets the floor; a close below it pauses new
    entries until the next one."""
    floor, paused = 0.0, False
    for i, r in enumerate(rows):
        if r["new_floor"] is not None:
            floor, paused = float(r["new_floor"]), False
        if not paused and floor > 0.0 and r["equity"] < floor:
            paused = True
            yield i


def _db(x: Any) -> float | None:
    """A float for SQLite (NaN as NULL)."""
    x = float(x)
    return None if np.isnan(x) else x


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit
    connection: one bar, one transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.conn.execute("ROLLBACK")
            return
        try:
            self.conn.execute("COMMIT")
        except BaseException:  # a failed commit leaves the transaction open: end it
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
