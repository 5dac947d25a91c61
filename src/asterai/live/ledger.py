"""The fills ledger: what the exchange says the bot's orders traded, and what the
account was paid for it, in the live journal.

The intents (``live.intents``) say which orders the bot sent and how much each
executed; the ledger holds the exchange's own record of every fill of those orders
(``userTrades``: price, quantity, realised PnL, commission, maker or taker, time) and
the funding the account paid or received while the bot held a position (``income``,
``FUNDING_FEE``). From it:

- **the bot's cash** (``realised``): the allotment (``live.capital``) plus the realised
  PnL of its fills, less their commissions, plus its funding: sizing never uses more,
  whatever else the wallet holds (fills of orders that are not the bot's are not in
  the ledger, but for the exchange's liquidation or auto-deleverage of the bot's own
  position, with its fee: the bot's loss);
- **the live trades** (``trades``): each run of a symbol's fills from flat back to
  flat is one trade, dated by the bars its first and last fills fell in, for the report
  that compares them with the shadow's.

Fills are fetched by id (``fromId``, each symbol from the last one kept), so a sync
repeated after a crash adds nothing twice (the primary key is the exchange's trade
id). Only symbols whose intents moved since the last sync are asked (weight 5 each),
and the income once (weight 30).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from decimal import Decimal

from asterai.exchange.private import PrivateClient

ZERO = Decimal(0)
#: the client ids of the exchange's own orders on an account: a liquidation, an
#: auto-deleverage
FORCED = ("autoclose-", "adl_autoclose")
#: the income the ledger keeps: funding, and a liquidation's fee (the insurance fund's)
INCOME = ("FUNDING_FEE", "INSURANCE_CLEAR")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS live_fills (
    trade_id INTEGER NOT NULL, symbol TEXT NOT NULL, order_id INTEGER NOT NULL,
    client_id TEXT NOT NULL, side TEXT NOT NULL, price TEXT NOT NULL, qty TEXT NOT NULL,
    realized_pnl TEXT NOT NULL, commission TEXT NOT NULL, maker INTEGER NOT NULL,
    time_ms INTEGER NOT NULL, PRIMARY KEY (symbol, trade_id)
);
CREATE TABLE IF NOT EXISTS live_funding (
    tran_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, amount TEXT NOT NULL,
    time_ms INTEGER NOT NULL, kind TEXT NOT NULL DEFAULT 'FUNDING_FEE'
);
CREATE TABLE IF NOT EXISTS live_sync (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS live_orders (order_id INTEGER PRIMARY KEY, client_id TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class LiveTrade:
    """One position of the bot, from its first fill to the fill that made it flat."""

    symbol: str
    side: int
    entry_t: int
    exit_t: int | None  # None: still open
    entry_price: Decimal  # the quantity-weighted average of the opening fills
    exit_price: Decimal | None
    quantity: Decimal
    fees: Decimal
    funding: Decimal  # paid (positive) or received (negative)
    pnl: Decimal  # realised, less fees and funding
    client_ids: tuple[str, ...]


class Ledger:
    """The ledger's tables in the live journal's SQLite file (``conn``: the intents'
    connection, autocommit)."""

    def __init__(self, conn: sqlite3.Connection, *, create: bool = True) -> None:
        """``create=False``: a reader's (read-only) connection; the tables are there."""
        self.conn = conn
        if create:
            self.conn.executescript(_SCHEMA)

    def _mark(self, key: str) -> int:
        row = self.conn.execute("SELECT value FROM live_sync WHERE key = ?", (key,)).fetchone()
        return 0 if row is None else int(row[0])

    def _set_mark(self, key: str, value: int) -> None:
        self.conn.execute("INSERT INTO live_sync (key, value) VALUES (?, ?) ON CONFLICT(key) "
                          "DO UPDATE SET value = excluded.value", (key, value))  # fmt: skip

    async def sync(self, api: PrivateClient, now_ms: int, also: set[str] = frozenset()) -> int:
        """Fetch the fills and the funding since the last sync: on the symbols whose
        intents moved, and on those in ``also`` (where the bot's position and the
        exchange's differ: a liquidation moves no intent). Kept: the fills of the bot's
        orders, and the exchange's own orders that closed a position the bot held (a
        liquidation or an auto-deleverage, client ids ``autoclose-`` and
        ``adl_autoclose``: the bot's loss). Each symbol is read from the last trade seen
        there, and another order is asked for once (``live_orders``). The number of
        fills added."""
        since = self._mark("intents_ms")
        symbols = sorted({r[0] for r in self.conn.execute(
            "SELECT DISTINCT symbol FROM intents WHERE order_id IS NOT NULL AND updated_ms >= ?",
            (since,))} | set(also))  # fmt: skip
        by_order = {int(r[0]): r[1] for r in self.conn.execute(
            "SELECT order_id, client_id FROM intents WHERE order_id IS NOT NULL")}  # fmt: skip
        added = 0
        for symbol in symbols:
            last = self._mark(f"trades:{symbol}")
            while True:
                params = {"limit": 1000} | ({"fromId": last + 1} if last else {})
                rows = await api.user_trades(symbol, **params)
                for f in rows:
                    order_id, at = int(f["orderId"]), int(f["time"])
                    cid = by_order.get(order_id)
                    if cid is None:
                        cid = await self._forced(api, symbol, order_id)
                        if cid is None or not self.held_at(symbol, at):
                            continue  # not the bot's: never its cash
                    cur = self.conn.execute(
                        "INSERT OR IGNORE INTO live_fills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (int(f["id"]), symbol, order_id, cid, f["side"], f["price"], f["qty"],
                         f.get("realizedPnl", "0"), f.get("commission", "0"),
                         int(bool(f.get("maker"))), at),
                    )  # fmt: skip
                    added += cur.rowcount
                if rows:
                    last = max(int(f["id"]) for f in rows)
                    self._set_mark(f"trades:{symbol}", last)
                if len(rows) < 1000:
                    break
        start = self._mark("funding_ms")
        while True:
            rows = await api.call("GET", "income", {"startTime": start, "limit": 1000})
            for r in rows:
                if r.get("incomeType") not in INCOME:
                    continue
                self.conn.execute("INSERT OR IGNORE INTO live_funding VALUES (?, ?, ?, ?, ?)",
                                  (str(r["tranId"]), r["symbol"], r["income"], int(r["time"]),
                                   r["incomeType"]))  # fmt: skip
            if rows:
                start = max(int(r["time"]) for r in rows) + 1
                self._set_mark("funding_ms", start)
            if len(rows) < 1000:
                break
        # the next sync asks the symbols whose intents move from now on (a margin for
        # the clock's millisecond)
        self._set_mark("intents_ms", max(now_ms - 1, since))
        return added

    async def _forced(self, api: PrivateClient, symbol: str, order_id: int) -> str | None:
        """The client id of an order that is not the bot's when the exchange placed it
        (a liquidation, an auto-deleverage), else None; asked once, then remembered."""
        row = self.conn.execute("SELECT client_id FROM live_orders WHERE order_id = ?",
                                (order_id,)).fetchone()  # fmt: skip
        if row is None:
            order = await api.order(symbol, order_id=order_id)
            cid = str(order.get("clientOrderId", ""))
            self.conn.execute("INSERT OR IGNORE INTO live_orders VALUES (?, ?)", (order_id, cid))
        else:
            cid = row[0]
        return cid if cid.startswith(FORCED) else None

    def fills(self, symbol: str | None = None) -> list[sqlite3.Row]:
        where, args = ("WHERE symbol = ?", (symbol,)) if symbol else ("", ())
        return self.conn.execute(f"SELECT * FROM live_fills {where} ORDER BY time_ms, trade_id",
                                 args).fetchall()  # fmt: skip

    def trades(self, start_ms: int, step_ms: int) -> list[LiveTrade]:
        """The bot's positions, each from flat to flat (the last one may still be open),
        with the funding paid while it was held (bars: ``(time - start_ms) // step_ms``)."""
        funding = self.conn.execute("SELECT symbol, amount, time_ms FROM live_funding "
                                    "WHERE kind = 'FUNDING_FEE'").fetchall()  # fmt: skip
        out: list[LiveTrade] = []
        symbols = [r[0] for r in self.conn.execute("SELECT DISTINCT symbol FROM live_fills")]
        for symbol in sorted(symbols):
            run: list[sqlite3.Row] = []
            held = ZERO
            for f in self.fills(symbol):
                signed = Decimal(f["qty"]) * (1 if f["side"] == "BUY" else -1)
                run.append(f)
                held += signed
                if not held:
                    out.append(_trade(symbol, run, funding, start_ms, step_ms, closed=True))
                    run = []
            if run:
                out.append(_trade(symbol, run, funding, start_ms, step_ms, closed=False))
        return sorted(out, key=lambda x: (x.entry_t, x.symbol))

    def realised(self, since_ms: int = 0) -> Decimal:
        """The bot's realised PnL less commissions, plus the funding of its positions,
        since ``since_ms`` (its fills and the funding while it held a position)."""
        total = ZERO
        for f in self.conn.execute("SELECT realized_pnl, commission FROM live_fills "
                                   "WHERE time_ms >= ?", (since_ms,)):  # fmt: skip
            total += Decimal(f[0]) - Decimal(f[1])
        for symbol, amount, time_ms, kind in self.conn.execute(
            "SELECT symbol, amount, time_ms, kind FROM live_funding WHERE time_ms >= ?",
            (since_ms,),
        ):
            if kind == "FUNDING_FEE" and self.held_at(symbol, int(time_ms)):
                total += Decimal(amount)
            elif kind == "INSURANCE_CLEAR" and self.forced_at(symbol, int(time_ms)):
                total += Decimal(amount)  # a liquidation's fee on the bot's position
        return total

    def forced_at(self, symbol: str, time_ms: int) -> bool:
        """Whether a liquidation or auto-deleverage closed the bot's position on
        ``symbol`` at ``time_ms``."""
        return any(str(r[0]).startswith(FORCED) for r in self.conn.execute(
            "SELECT client_id FROM live_fills WHERE symbol = ? AND time_ms = ?",
            (symbol, time_ms)))  # fmt: skip

    def forced(self) -> list[sqlite3.Row]:
        """The exchange's own fills of the bot's positions (liquidations, deleverages)."""
        return [f for f in self.fills() if str(f["client_id"]).startswith(FORCED)]

    def held_at(self, symbol: str, time_ms: int) -> Decimal:
        """The bot's position on ``symbol`` just before ``time_ms`` by its fills."""
        held = ZERO
        for side, qty in self.conn.execute(
            "SELECT side, qty FROM live_fills WHERE symbol = ? AND time_ms < ?", (symbol, time_ms)
        ):
            held += Decimal(qty) * (1 if side == "BUY" else -1)
        return held


def _trade(symbol: str, run: list[sqlite3.Row], funding: list, start_ms: int, step_ms: int,
           closed: bool) -> LiveTrade:  # fmt: skip
    first = run[0]
    side = 1 if first["side"] == "BUY" else -1
    opening = [f for f in run if (f["side"] == "BUY") == (side > 0)]
    closing = [f for f in run if (f["side"] == "BUY") != (side > 0)]
    qty = sum((Decimal(f["qty"]) for f in opening), ZERO)
    entry = sum((Decimal(f["qty"]) * Decimal(f["price"]) for f in opening), ZERO) / qty
    exit_qty = sum((Decimal(f["qty"]) for f in closing), ZERO)
    exit_px = (sum((Decimal(f["qty"]) * Decimal(f["price"]) for f in closing), ZERO) / exit_qty
               if exit_qty else None)  # fmt: skip
    fees = sum((Decimal(f["commission"]) for f in run), ZERO)
    realized = sum((Decimal(f["realized_pnl"]) for f in run), ZERO)
    t0 = int(first["time_ms"])
    t1 = int(run[-1]["time_ms"]) if closed else None
    paid = ZERO
    for s, amount, when in funding:
        if s == symbol and when > t0 and (t1 is None or when <= t1):
            paid -= Decimal(amount)  # income: negative when the account paid
    return LiveTrade(
        symbol, side, (t0 - start_ms) // step_ms,
        None if t1 is None else (t1 - start_ms) // step_ms, entry,
        exit_px if closed else None, qty, fees, paid, realized - fees - paid,
        tuple(dict.fromkeys(f["client_id"] for f in run)),
    )  # fmt: skip
