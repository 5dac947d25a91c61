"""The account the strategy's step sees, from the exchange.

Before each bar's decisions the live trader rebuilds the kernel's account
(``kernel.State``) from what the exchange reports, not from a simulation: for each of
the bot's positions its side, size and entry price from ``positionRisk``, its stop and
target from the legs resting on the exchange (their intents), the bar it was entered
at from its entry's intent. A position the bot did not open (``reconcile``: foreign) is
not the bot's: the step sees that symbol flat and never trades it while it is held.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from asterai.backtest import kernel
from asterai.live.intents import Intents, Leg
from asterai.live.reconcile import believed_positions, latest_entry

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Held:
    """One of the bot's positions as the exchange and the journal know it."""

    symbol: str
    side: int  # +1 long, -1 short
    qty: Decimal
    entry_price: Decimal
    stop: Decimal | None  # None: no resting stop (reconcile reports it)
    target: Decimal | None
    entry_t: int


def held_positions(journal: Intents, positions: list[dict]) -> tuple[dict[str, Held], set[str]]:
    """The bot's positions, and the symbols it must not trade. A position is the bot's
    only when the journal's belief (its filled intents, ``reconcile``) is exactly what
    the exchange holds; anything else on a symbol (opened by hand, added to by hand,
    closed by a liquidation the journal did not see) is someone else's or disputed: not
    traded until a person looks (``reconcile`` names it)."""
    believed = believed_positions(journal)
    mine: dict[str, Held] = {}
    foreign: set[str] = set()
    for p in positions:
        amount = Decimal(p["positionAmt"])
        symbol = p["symbol"]
        if believed.get(symbol, ZERO) != amount:
            foreign.add(symbol)
            continue
        if not amount:
            continue
        side = 1 if amount > 0 else -1
        entry = latest_entry(journal, symbol, side)
        if entry is None:
            foreign.add(symbol)
            continue
        legs = {r["leg"]: r for r in journal.rows(
            "symbol = ? AND t = ? AND state IN ('NEW', 'PARTIALLY_FILLED')",
            (symbol, entry["t"]))}  # fmt: skip
        stop = legs.get(Leg.STOP.value)
        target = legs.get(Leg.TARGET.value)
        mine[symbol] = Held(
            symbol, side, abs(amount), Decimal(p["entryPrice"]),
            Decimal(stop["stop_price"]) if stop is not None else None,
            Decimal(target["price"]) if target is not None else None,
            int(entry["t"]),
        )  # fmt: skip
    return mine, foreign


def load_positions(state: kernel.State, symbols: list[str], held: dict[str, Held]) -> None:
    """Write ``held`` into ``state``'s position fields (every other symbol flat); the
    rest of the account (cash, peak, pauses, the orders decided) is the caller's."""
    for j, symbol in enumerate(symbols):
        h = held.get(symbol)
        if h is None:
            state.side[j] = state.qty[j] = state.entry_px[j] = 0.0
            state.stop[j] = state.target[j] = 0.0
            continue
        state.side[j] = float(h.side)
        state.qty[j] = float(h.qty)
        state.entry_px[j] = float(h.entry_price)
        state.stop[j] = float(h.stop) if h.stop is not None else np.nan
        state.target[j] = float(h.target) if h.target is not None else np.nan
        state.entry_t[j] = h.entry_t
