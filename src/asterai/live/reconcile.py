"""The journal against the exchange: what the bot believes it holds, what the exchange
says it holds, and every difference named.

The journal's belief comes from its intents (``live.intents``): a symbol's position is
what its filled entries bought less what its filled exits sold (each at its executed
quantity), less what the exchange itself closed (a liquidation, an auto-deleverage,
once the fills ledger holds it), and the resting orders are the intents the exchange last reported open. The
exchange's truth is ``positionRisk`` and ``openOrders``. A difference is one of:

- ``foreign position``: the exchange holds a position the bot never opened (opened by
  hand, or by another program): reported, never touched;
- ``foreign order``: an open order whose client id is not one of the bot's: the same;
- ``position``: the bot's position and the exchange's differ in size or side;
- ``unprotected``: the bot holds a position with no resting stop on the exchange;
- ``stale order``: an order the journal believes resting that the exchange no longer
  has open (filled or cancelled meanwhile: ``intents.settle`` learns which).

Any difference but a stale order (which settling resolves) switches the trader to
reduce-only until it is explained (STYLE.md, "Fail closed"). A foreign position or
order on a symbol the user acknowledged (``asterai live --acknowledge SYMBOL``) is
still reported, and still never touched, but no longer stops the entries on other
symbols (the bot never trades a symbol where something not its own is held).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from asterai.exchange.private import PrivateClient
from asterai.live.intents import Intents, Leg

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Difference:
    kind: str
    symbol: str
    detail: str


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """What the journal holds, what the exchange holds, and the differences."""

    believed: dict[str, Decimal]
    held: dict[str, Decimal]
    differences: tuple[Difference, ...] = field(default_factory=tuple)

    @property
    def fail_closed(self) -> bool:
        """Whether new entries must stop until a person looks (anything but orders the
        next settle resolves)."""
        return any(d.kind not in PASSING for d in self.differences)

    def lines(self) -> list[str]:
        if not self.differences:
            return ["journal and exchange agree"]
        return [f"{d.kind}: {d.symbol}: {d.detail}" for d in self.differences]


#: differences that do not stop new entries
PASSING = frozenset({"stale order", "acknowledged foreign position", "acknowledged foreign order"})

#: the states of an intent whose executed quantity counts (a partial fill that then
#: expired or was cancelled included): the one rule for what the bot traded
TRADED = "state IN ('FILLED', 'PARTIALLY_FILLED', 'CANCELED', 'EXPIRED') AND executed IS NOT NULL"


def latest_entry(journal: Intents, symbol: str, side: int):
    """The bot's latest entry on ``symbol`` on ``side`` that traded, or None."""
    rows = journal.rows(f"symbol = ? AND leg = ? AND {TRADED}", (symbol, Leg.ENTRY.value))
    return next((r for r in reversed(rows) if Decimal(r["executed"])
                 and (r["side"] == "BUY") == (side > 0)), None)  # fmt: skip


def believed_positions(journal: Intents) -> dict[str, Decimal]:
    """Each symbol's position by the journal: filled entries less filled exits (a
    signed quantity; a partial fill counts its executed part)."""
    out: dict[str, Decimal] = {}
    for row in journal.rows(TRADED):
        done = Decimal(row["executed"])
        if not done:
            continue
        signed = done if row["side"] == "BUY" else -done
        out[row["symbol"]] = out.get(row["symbol"], ZERO) + signed
    # the exchange's own closes of the bot's positions (a liquidation, an auto-deleverage:
    # ``ledger``), once the ledger holds them
    has = journal.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'live_fills'").fetchone()
    if has:
        for f in journal.conn.execute("SELECT symbol, side, qty FROM live_fills WHERE "
                                      "client_id LIKE 'autoclose-%' OR client_id LIKE "
                                      "'adl_autoclose%'"):  # fmt: skip
            signed = Decimal(f[2]) if f[1] == "BUY" else -Decimal(f[2])
            out[f[0]] = out.get(f[0], ZERO) + signed
    return {s: q for s, q in out.items() if q}


def compare(journal: Intents, positions: list[dict], open_orders: list[dict],
            prefix: str, acknowledged: frozenset[str] = frozenset()) -> Reconciliation:  # fmt: skip
    """The journal against the exchange's ``positionRisk`` and ``openOrders`` answers;
    ``prefix``: the start of every client id the bot makes (``client_id``'s ``ai<tag>``)."""
    believed = believed_positions(journal)
    held = {p["symbol"]: Decimal(p["positionAmt"]) for p in positions
            if Decimal(p["positionAmt"])}  # fmt: skip
    differences: list[Difference] = []
    for symbol in sorted(set(believed) | set(held)):
        mine, theirs = believed.get(symbol, ZERO), held.get(symbol, ZERO)
        if not mine and theirs:
            kind = "acknowledged foreign position" if symbol in acknowledged else "foreign position"
            differences.append(Difference(kind, symbol,
                                          f"the exchange holds {theirs}; the bot opened none"))  # fmt: skip
        elif mine != theirs:
            differences.append(Difference("position", symbol,
                                          f"the journal holds {mine}, the exchange {theirs}"))  # fmt: skip
    open_ids = {o["clientOrderId"] for o in open_orders}
    for o in open_orders:
        if not o["clientOrderId"].startswith(prefix):
            kind = ("acknowledged foreign order" if o["symbol"] in acknowledged
                    else "foreign order")  # fmt: skip
            differences.append(Difference(kind, o["symbol"],
                                          f"{o['type']} {o['side']} {o['clientOrderId']}"))  # fmt: skip
    resting = journal.rows("state IN ('NEW', 'PARTIALLY_FILLED')")
    for row in resting:
        if row["client_id"] not in open_ids:
            differences.append(Difference("stale order", row["symbol"],
                                          f"{row['client_id']} is not open on the exchange"))  # fmt: skip
    for symbol, qty in believed.items():
        side = 1 if qty > 0 else -1
        entry = latest_entry(journal, symbol, side)
        closing = "SELL" if side > 0 else "BUY"
        # its own stop: placed for this entry's bar, on the closing side, open now
        stops = [r for r in resting if r["symbol"] == symbol and r["leg"] == Leg.STOP.value
                 and entry is not None and r["t"] == entry["t"] and r["side"] == closing
                 and r["client_id"] in open_ids]  # fmt: skip
        if held.get(symbol, ZERO) == qty and not stops:
            differences.append(Difference("unprotected", symbol,
                                          f"{qty} held with no resting stop"))  # fmt: skip
    return Reconciliation(believed, held, tuple(differences))


async def reconcile(journal: Intents, api: PrivateClient, prefix: str) -> Reconciliation:
    """``compare`` on what the exchange says now."""
    positions = await api.positions()
    orders = await api.open_orders()
    return compare(journal, positions, orders, prefix)
