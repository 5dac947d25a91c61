"""The decided orders, sent: exits first (their legs cancelled, then reduce-only at
market), then entries (MARKET, strongest first), each entry's stop and target placed
on the exchange from its own fill (``barriers.place``: the backtest's placement, from
the price the exchange filled at, the ATR the decision used).

Every order is an intent journaled before it is sent (``live.intents``); nothing here
retries a new order: an unknown outcome is settled by asking at the next settle.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

import numpy as np

from asterai.backtest import kernel
from asterai.barriers import place
from asterai.exchange.private import PrivateClient
from asterai.live.account import Held
from asterai.live.intents import Intent, Intents, Leg, State, client_id, send
from asterai.live.protect import Position, close_at_market, protect
from asterai.paper.broker import ENTRY, EXIT


@dataclass(frozen=True, slots=True)
class Sent:
    """What came of one decided order."""

    symbol: str
    leg: Leg
    state: State
    fill: Decimal | None = None
    protection: dict | None = None


def on_step(value: float, step: float) -> str:
    """A quantity as the exchange takes it: on the lot step, rounded down, written out."""
    unit = Decimal(repr(step))
    q = (Decimal(repr(value)) / unit).to_integral_value(ROUND_FLOOR) * unit
    return format(q.normalize(), "f")


def on_tick(value: float, tick: float) -> str:
    """A price already on the tick (``barriers.place``'s), written as the exchange's
    decimals (the float's shortest form, quantized to the tick)."""
    return format(Decimal(repr(value)).quantize(Decimal(repr(tick)).normalize()), "f")


async def execute(journal: Intents, api: PrivateClient, account: str, t: int, symbols: list[str],
                  orders: np.ndarray, state: kernel.State, held: dict[str, Held],
                  tick: np.ndarray, step: np.ndarray, p: kernel.Params,
                  parallel: bool = True) -> list[Sent]:  # fmt: skip
    """Send the ``orders`` decided at the close of bar ``t`` (``broker.ORDER_FIELDS``),
    for the bar that opens next (``t + 1``): every exit at once, then every entry at
    once, each followed by its own protection (in flight together, as many as the
    client's connection slots allow, paced under the account's order-count limits by
    ``PrivateClient``'s pacer; launched in the order decided, strongest first).
    ``parallel=False``: one after the other (the benchmark's reference)."""

    async def exit_(row: np.ndarray) -> Sent | None:
        symbol = symbols[int(row[0])]
        h = held.get(symbol)
        if h is None:
            return None  # not the bot's, or closed meanwhile
        pos = Position(account, h.entry_t, symbol, h.side, format(h.qty.normalize(), "f"),
                       "", "")  # fmt: skip
        return Sent(symbol, Leg.EXIT, await close_at_market(journal, api, pos, t + 1))

    async def entry(row: np.ndarray) -> Sent:
        j = int(row[0])
        symbol, side = symbols[j], int(row[2])
        qty = on_step(float(row[3]), float(step[j]))
        intent = Intent(client_id(account, t + 1, symbol, Leg.ENTRY), t + 1, symbol, Leg.ENTRY,
                        "BUY" if side > 0 else "SELL", "MARKET", qty,
                        atr=float(state.pend_atr[j]))  # fmt: skip
        state_ = await send(journal, api, intent)
        if state_ is not State.FILLED:
            return Sent(symbol, Leg.ENTRY, state_)
        done = journal.rows("client_id = ?", (intent.client_id,))[0]
        pos = planned(account, done, float(tick[j]), p)
        return Sent(symbol, Leg.ENTRY, state_, Decimal(done["avg_price"]),
                    await protect(journal, api, pos))  # fmt: skip

    if parallel:
        exits = await asyncio.gather(*(exit_(row) for row in orders[orders[:, 1] == EXIT]))
        entries = await asyncio.gather(*(entry(row) for row in orders[orders[:, 1] == ENTRY]))
    else:
        exits = [await exit_(row) for row in orders[orders[:, 1] == EXIT]]
        entries = [await entry(row) for row in orders[orders[:, 1] == ENTRY]]
    return [x for x in exits if x is not None] + list(entries)


def planned(account: str, entry: object, tick: float, p: kernel.Params) -> Position:
    """An entry's position as its stop and target protect it: placed from its fill (the
    journaled average price) with the ATR journaled at the decision (``barriers.place``,
    the kernel's placement), for the quantity filled."""
    side = 1 if entry["side"] == "BUY" else -1
    fill = float(Decimal(entry["avg_price"]))
    stop, target = place(fill, float(side), float(entry["atr"]), p.tp_atr, p.sl_atr, tick)
    qty = format(Decimal(entry["executed"]).normalize(), "f")
    return Position(account, int(entry["t"]), entry["symbol"], side, qty, on_tick(stop, tick),
                    on_tick(target, tick))  # fmt: skip


async def ensure_protected(journal: Intents, api: PrivateClient, account: str,
                           positions: list[dict], tick: dict[str, float],
                           p: kernel.Params) -> list[str]:  # fmt: skip
    """Protect every filled entry the exchange still holds whose stop does not rest on
    the exchange: never placed (its fill learnt late: a lost answer settled, a crash
    between the fill and the stop), or placed and gone without filling (never reached
    the exchange, cancelled by hand), or sent and not found when asked (lost on the
    way, or not arrived yet). After every settle. The symbols protected.

    Placing a stop again cannot add exposure (close-position: a second one expires
    with the position), so a stop that is not resting is replaced at once, with the
    next attempt's client id; the target likewise (reduce-only)."""
    held = {x["symbol"]: Decimal(x["positionAmt"]) for x in positions}
    done = []
    for entry in journal.rows("leg = ? AND executed IS NOT NULL AND state IN "
                              "('FILLED', 'PARTIALLY_FILLED', 'CANCELED', 'EXPIRED')",
                              (Leg.ENTRY.value,)):  # fmt: skip
        if not Decimal(entry["executed"]) or entry["atr"] is None:
            continue
        side = 1 if entry["side"] == "BUY" else -1
        if held.get(entry["symbol"], Decimal(0)) * side <= 0:
            continue  # closed meanwhile, or not on this side any more
        later = journal.rows("symbol = ? AND leg = ? AND t > ? AND executed IS NOT NULL",
                             (entry["symbol"], Leg.ENTRY.value, entry["t"]))  # fmt: skip
        if any(Decimal(r["executed"]) for r in later):
            continue  # a later entry holds the position now
        missing = []
        for leg in (Leg.STOP, Leg.TARGET):
            row = journal.latest(entry["symbol"], int(entry["t"]), leg)
            if row is None or row["state"] in ("NOT_PLACED", "CANCELED", "EXPIRED", "REJECTED"):
                missing.append(leg)
            elif row["state"] in ("SENT", "UNKNOWN") and row["misses"]:
                missing.append(leg)  # asked for and not found: placed again now
        if Leg.STOP not in missing:
            stop = journal.latest(entry["symbol"], int(entry["t"]), Leg.STOP)
            if stop["state"] == "FILLED":
                continue  # stopped out: the position left is not this entry's
        if not missing:
            continue
        pos = planned(account, entry, tick[entry["symbol"]], p)
        await protect(journal, api, pos, tuple(missing))
        done.append(entry["symbol"])
    return done
