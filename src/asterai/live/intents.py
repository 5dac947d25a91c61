"""Orders as intents, journaled before they are sent: never a blind resend.

Every order the live trader sends is first an *intent*, written to SQLite (and
committed) with a client id derived from what it is for (the account, the bar, the
symbol, the leg: ``client_id``), then sent, then its outcome written. An intent moves
only as ``TRANSITIONS`` allows (STYLE.md, "Order states are data"):

- ``INTENT``: journaled, perhaps not sent (a crash may come between the commit and
  the send, or between the send and the answer's commit);
- ``SENT``: on its way; ``UNKNOWN``: sent, and nothing says whether the exchange took
  it (a timeout, a dropped connection, 503 -1007: ``exchange.private.OutcomeUnknown``);
- the exchange's own statuses once it answered or was asked (``NEW``,
  ``PARTIALLY_FILLED``, ``FILLED``, ``CANCELED``, ``EXPIRED``, ``REJECTED``);
- ``NOT_PLACED``: never sent (still ``INTENT`` at a settle: ``SENT`` is committed
  before the request leaves), or sent, asked for by its client id and not found once
  the request is older than ``SEND_WINDOW_MS`` (a signed request older than the
  exchange's freshness window can no longer be applied; Hummingbot likewise marks an
  order lost only after repeated not-found answers over time).

``settle`` asks the exchange about every intent without a final state (at each start,
and after every bar): the journal never guesses.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path

from asterai.exchange.errors import APIError
from asterai.exchange.orders import TRANSITIONS as EXCHANGE_MOVES
from asterai.exchange.orders import OrderStatus
from asterai.exchange.private import OutcomeUnknown, PrivateClient

#: the exchange's rule for a client order id
CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
#: how long after it was sent a request not found at the exchange may still arrive:
#: past it, the order was never placed (V1's recvWindow is at most 60 s; V3's nonce
#: and timestamp are checked within the same bound)
SEND_WINDOW_MS = 60_000
#: the exchange's code for an order it does not have
NO_SUCH_ORDER = -2013


class Leg(StrEnum):
    """What an order is for: its letter in the client id."""

    ENTRY = "e"
    STOP = "s"
    TARGET = "t"
    EXIT = "x"  # a time limit, a signal, the breaker, the kill switch: at market


class State(StrEnum):
    INTENT = "INTENT"
    SENT = "SENT"
    UNKNOWN = "UNKNOWN"
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"
    NOT_PLACED = "NOT_PLACED"

    @property
    def final(self) -> bool:
        return not TRANSITIONS[self]

    @property
    def resting(self) -> bool:
        return self in (State.NEW, State.PARTIALLY_FILLED)


#: the exchange's own statuses: their moves are ``exchange.orders.TRANSITIONS`` (one
#: table for the matching engine and the journal)
_EXCHANGE = frozenset(State(s.value) for s in OrderStatus)
#: what may follow each state (a final one: nothing)
TRANSITIONS: dict[State, frozenset[State]] = {
    State.INTENT: frozenset({State.SENT, State.NOT_PLACED, *_EXCHANGE}),
    State.SENT: frozenset({State.UNKNOWN, State.NOT_PLACED, *_EXCHANGE}),
    State.UNKNOWN: frozenset({State.UNKNOWN, State.NOT_PLACED, *_EXCHANGE}),
    State.NOT_PLACED: frozenset(),
    **{State(s.value): frozenset(State(x.value) for x in after)
       for s, after in EXCHANGE_MOVES.items()},
}  # fmt: skip


class IllegalMove(ValueError):
    """An intent asked to move where the table does not allow."""


def client_id(account: str, t: int, symbol: str, leg: Leg, attempt: int = 1) -> str:
    """The order's client id, the same whoever computes it and however often: a short
    tag of the account, the bar number, the symbol, the leg and, from the second on,
    the attempt (a stop placed again after the first never reached the exchange) (at
    most 36 characters, the exchange's alphabet)."""
    tag = hashlib.sha256(account.encode()).hexdigest()[:6]
    out = f"ai{tag}-{t}-{symbol[:16]}-{leg.value}{attempt if attempt > 1 else ''}"
    if not CLIENT_ID_RE.match(out):
        raise ValueError(f"no valid client id for {symbol!r} at bar {t}: {out!r}")
    return out


@dataclass(frozen=True, slots=True)
class Intent:
    """An order as decided: what is sent as ``newClientOrderId`` and the parameters."""

    client_id: str
    t: int
    symbol: str
    leg: Leg
    side: str  # BUY or SELL
    type: str  # MARKET, LIMIT, STOP_MARKET
    quantity: str | None = None  # None with close_position
    price: str | None = None
    stop_price: str | None = None
    reduce_only: bool = False
    close_position: bool = False
    #: an entry's ATR at the decision: its stop and target are placed from its fill
    #: with it, whenever the fill becomes known (``protect.ensure_protected``)
    atr: float | None = None

    def params(self) -> dict[str, object]:
        out: dict[str, object] = {"symbol": self.symbol, "side": self.side, "type": self.type,
                                  "newClientOrderId": self.client_id}  # fmt: skip
        if self.quantity is not None:
            out["quantity"] = self.quantity
        if self.type == "LIMIT":
            out.update(price=self.price, timeInForce="GTC")
        if self.stop_price is not None:
            out["stopPrice"] = self.stop_price
        if self.reduce_only:
            out["reduceOnly"] = True
        if self.close_position:
            out["closePosition"] = True
        return out


_SCHEMA = """
CREATE TABLE IF NOT EXISTS intents (
    client_id TEXT PRIMARY KEY,
    t INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    leg TEXT NOT NULL,
    side TEXT NOT NULL,
    type TEXT NOT NULL,
    quantity TEXT,
    price TEXT,
    stop_price TEXT,
    reduce_only INTEGER NOT NULL,
    close_position INTEGER NOT NULL,
    atr REAL,
    state TEXT NOT NULL,
    order_id INTEGER,
    executed TEXT,
    avg_price TEXT,
    misses INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
)
"""


class Intents:
    """The intents journal (its own table in the live journal's SQLite file)."""

    def __init__(self, path: Path, clock=lambda: int(time.time() * 1000)) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")  # an intent survives a power cut
        self.conn.execute(_SCHEMA)
        self._clock = clock

    def close(self) -> None:
        self.conn.close()

    def record(self, intent: Intent) -> None:
        """Journal ``intent`` (committed) before it is sent; a second record of the same
        client id is refused (the decision was made already)."""
        now = self._clock()
        try:
            self.conn.execute(
                "INSERT INTO intents (client_id, t, symbol, leg, side, type, quantity, price, "
                "stop_price, reduce_only, close_position, atr, state, created_ms, updated_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (intent.client_id, intent.t, intent.symbol, intent.leg.value, intent.side,
                 intent.type, intent.quantity, intent.price, intent.stop_price,
                 int(intent.reduce_only), int(intent.close_position), intent.atr,
                 State.INTENT.value, now, now),
            )  # fmt: skip
        except sqlite3.IntegrityError:
            raise IllegalMove(f"{intent.client_id} was journaled already") from None

    def state(self, cid: str) -> State:
        row = self.conn.execute("SELECT state FROM intents WHERE client_id = ?", (cid,)).fetchone()
        if row is None:
            raise KeyError(cid)
        return State(row["state"])

    def move(self, cid: str, new: State, *, order_id: int | None = None,
             executed: str | None = None, avg_price: str | None = None,
             detail: str = "") -> None:  # fmt: skip
        """Move ``cid`` to ``new`` (committed), as the table allows."""
        old = self.state(cid)
        if new not in TRANSITIONS[old]:
            raise IllegalMove(f"{cid}: {old.value} cannot become {new.value}")
        self.conn.execute(
            "UPDATE intents SET state = ?, order_id = COALESCE(?, order_id), "
            "executed = COALESCE(?, executed), avg_price = COALESCE(?, avg_price), "
            "detail = CASE WHEN ? = '' THEN detail ELSE ? END, misses = 0, updated_ms = ? "
            "WHERE client_id = ?",
            (new.value, order_id, executed, avg_price, detail, detail, self._clock(), cid),
        )

    def advance(self, cid: str, new: State, *, order_id: int | None = None,
                executed: str | None = None, avg_price: str | None = None) -> bool:  # fmt: skip
        """What the exchange reports of ``cid`` (an answer, an asked-for order, a stream
        event), journaled when it is news: a state the table allows after the journal's,
        or the same state with more executed. A report older than what the journal
        holds (an event delivered late, or twice; an answer that lost the race to its
        own event) changes nothing. Whether it was news."""
        row = self.conn.execute("SELECT state, executed FROM intents WHERE client_id = ?",
                                (cid,)).fetchone()  # fmt: skip
        if row is None:
            raise KeyError(cid)
        old = State(row["state"])
        if new is old:
            have = Decimal(row["executed"]) if row["executed"] not in (None, "None") else None
            got = Decimal(executed) if executed not in (None, "None") else None
            if got is None or (have is not None and got <= have):
                return False
            self.conn.execute("UPDATE intents SET executed = ?, avg_price = COALESCE(?, "
                              "avg_price), updated_ms = ? WHERE client_id = ?",
                              (executed, avg_price, self._clock(), cid))  # fmt: skip
            return True
        if new not in TRANSITIONS[old]:
            return False
        self.move(cid, new, order_id=order_id, executed=executed, avg_price=avg_price)
        return True

    def rows(self, where: str = "1", args: tuple = ()) -> list[sqlite3.Row]:
        return self.conn.execute(f"SELECT * FROM intents WHERE {where} ORDER BY t, rowid",
                                 args).fetchall()  # fmt: skip

    def latest(self, symbol: str, t: int, leg: Leg) -> sqlite3.Row | None:
        """The last attempt of a leg (its client ids differ by attempt)."""
        rows = self.rows("symbol = ? AND t = ? AND leg = ?", (symbol, t, leg.value))
        return rows[-1] if rows else None

    def unsettled(self) -> list[sqlite3.Row]:
        """Intents whose fate the exchange has not told: journaled, sent or unknown."""
        return self.rows("state IN ('INTENT', 'SENT', 'UNKNOWN')")

    def _miss(self, cid: str) -> int:
        # (updated_ms stays the time it was sent: the window is counted from it)
        self.conn.execute("UPDATE intents SET misses = misses + 1 WHERE client_id = ?", (cid,))
        return int(self.conn.execute("SELECT misses FROM intents WHERE client_id = ?",
                                     (cid,)).fetchone()[0])  # fmt: skip


def _from_exchange(order: dict) -> dict:
    def text(value: object) -> str | None:
        return None if value is None else str(value)

    return {"order_id": int(order["orderId"]), "executed": text(order.get("executedQty")),
            "avg_price": text(order.get("avgPrice"))}  # fmt: skip


async def send(journal: Intents, api: PrivateClient, intent: Intent) -> State:
    """Journal ``intent``, send it once, journal what came of it. An intent journaled
    already (a bar redone after a crash) is not sent again: its state is returned, and
    ``settle`` learns the rest."""
    try:
        return journal.state(intent.client_id)
    except KeyError:
        pass
    journal.record(intent)
    journal.move(intent.client_id, State.SENT)
    try:
        reply = await api.new_order(**intent.params(), newOrderRespType="RESULT")
    except OutcomeUnknown as err:
        if journal.state(intent.client_id) is State.SENT:  # (unless its event came first)
            journal.move(intent.client_id, State.UNKNOWN, detail=str(err.cause)[:200])
        return journal.state(intent.client_id)
    except APIError as err:
        journal.move(intent.client_id, State.REJECTED, detail=f"{err.code}: {err.msg}")
        return State.REJECTED
    journal.advance(intent.client_id, State(reply["status"]), **_from_exchange(reply))
    return journal.state(intent.client_id)  # (an event may have told more already)


async def settle(journal: Intents, api: PrivateClient) -> dict[str, State]:
    """Ask the exchange about every unsettled intent by its client id; what it says is
    journaled. An intent still ``INTENT`` was never sent: ``NOT_PLACED``. One sent and
    not found: ``NOT_PLACED`` once it was sent more than ``SEND_WINDOW_MS`` ago (by the
    journal's clock), else it stays as it was (asked again at the next settle)."""
    out: dict[str, State] = {}
    for row in journal.unsettled():
        cid = row["client_id"]
        if row["state"] == State.INTENT.value:
            journal.move(cid, State.NOT_PLACED, detail="never sent")
            out[cid] = State.NOT_PLACED
            continue
        try:
            order = await api.order(row["symbol"], client_id=cid)
        except APIError as err:
            if err.code != NO_SUCH_ORDER:
                raise
            journal._miss(cid)
            late = journal._clock() - int(row["updated_ms"]) > SEND_WINDOW_MS
            if late and journal.state(cid) in (State.SENT, State.UNKNOWN):
                journal.move(cid, State.NOT_PLACED, detail="the exchange does not have it")
            out[cid] = journal.state(cid)
            continue
        journal.advance(cid, State(order["status"]), **_from_exchange(order))
        out[cid] = journal.state(cid)
    return out
