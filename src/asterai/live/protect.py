"""Protection that rests on the exchange: a position's stop and target are orders on
the exchange, not prices in the process, so a process that dies leaves every position
protected (STYLE.md, "Protection rests on the exchange").

Right after an entry fills: its stop as a close-all ``STOP_MARKET`` (triggered on the
traded price, as the backtest triggers it) and its target as a reduce-only ``LIMIT``
at the target (the backtest's maker fill). If the exchange refuses the stop (the price
has already passed it: -2021), the position is closed at market at once: a position
is never left without one. When one leg fills, the other is cancelled (``settle_legs``);
a time limit, a signal, the breaker or the kill switch close at market, reduce-only,
after cancelling both.
"""

from __future__ import annotations

from dataclasses import dataclass

from asterai.exchange.errors import APIError
from asterai.exchange.private import PrivateClient
from asterai.live.intents import Intent, Intents, Leg, State, client_id, send

#: the exchange's code for a cancel of an order it no longer has open
CANCEL_REJECTED = (-2011, -2013)


@dataclass(frozen=True, slots=True)
class Position:
    """A position the bot opened: what protects it is named by its entry's bar."""

    account: str
    t: int  # the entry's bar
    symbol: str
    side: int  # +1 long, -1 short
    quantity: str
    stop: str
    target: str

    @property
    def closing_side(self) -> str:
        return "SELL" if self.side > 0 else "BUY"

    def leg(self, leg: Leg, t: int | None = None, attempt: int = 1) -> str:
        return client_id(self.account, self.t if t is None else t, self.symbol, leg, attempt)


def _attempt(journal: Intents, pos: Position, leg: Leg) -> int:
    """The next attempt's number for a leg of ``pos`` (1: none yet)."""
    return len(journal.rows("symbol = ? AND t = ? AND leg = ?", (pos.symbol, pos.t, leg.value))) + 1


async def protect(journal: Intents, api: PrivateClient, pos: Position,
                  legs: tuple[Leg, ...] | None = None) -> dict[Leg, State]:  # fmt: skip
    """Place the stop and the target of ``pos`` (those not journaled yet: a bar redone
    after a crash places nothing twice), or place the ``legs`` named again (the next
    attempt); a refused stop closes it at market. Each leg's last state."""
    out: dict[Leg, State] = {}
    if legs is None:
        for leg in (Leg.STOP, Leg.TARGET):
            row = journal.latest(pos.symbol, pos.t, leg)
            if row is not None:
                out[leg] = State(row["state"])
        legs = tuple(leg for leg in (Leg.STOP, Leg.TARGET) if leg not in out)
        if out.get(Leg.STOP) is State.REJECTED:
            return out
    if Leg.STOP in legs:
        k = _attempt(journal, pos, Leg.STOP)
        stop = Intent(pos.leg(Leg.STOP, attempt=k), pos.t, pos.symbol, Leg.STOP,
                      pos.closing_side, "STOP_MARKET", stop_price=pos.stop,
                      close_position=True)  # fmt: skip
        out[Leg.STOP] = await send(journal, api, stop)
        if out[Leg.STOP] is State.REJECTED:
            out[Leg.EXIT] = await close_at_market(journal, api, pos, pos.t)
            return out
    if Leg.TARGET in legs:
        k = _attempt(journal, pos, Leg.TARGET)
        target = Intent(pos.leg(Leg.TARGET, attempt=k), pos.t, pos.symbol, Leg.TARGET,
                        pos.closing_side, "LIMIT", quantity=pos.quantity, price=pos.target,
                        reduce_only=True)  # fmt: skip
        out[Leg.TARGET] = await send(journal, api, target)
    return out


async def cancel_leg(journal: Intents, api: PrivateClient, cid: str, symbol: str) -> State:
    """Cancel a resting leg; one the exchange no longer has open is asked for instead
    (it filled or expired meanwhile)."""
    try:
        reply = await api.cancel(symbol, client_id=cid)
    except APIError as err:
        if err.code not in CANCEL_REJECTED:
            raise
        reply = await api.order(symbol, client_id=cid)
    journal.advance(cid, State(reply["status"]), executed=str(reply.get("executedQty")),
                    avg_price=str(reply.get("avgPrice")))  # fmt: skip
    return journal.state(cid)


async def settle_legs(journal: Intents, api: PrivateClient, pos: Position) -> State | None:
    """After a bar: each resting leg asked for; when one has filled, the other is
    cancelled. The leg that closed the position (None while it is open)."""
    legs = {}
    states = {}
    for leg in (Leg.STOP, Leg.TARGET):
        row = journal.latest(pos.symbol, pos.t, leg)
        if row is None:
            continue
        cid = legs[leg] = row["client_id"]
        state = State(row["state"])
        if state.resting:
            reply = await api.order(pos.symbol, client_id=cid)
            journal.advance(cid, State(reply["status"]), executed=str(reply.get("executedQty")),
                            avg_price=str(reply.get("avgPrice")))  # fmt: skip
            state = journal.state(cid)
        states[leg] = state
    done = next((leg for leg, s in states.items() if s is State.FILLED), None)
    if done is None:
        return None
    for leg, state in states.items():
        if leg is not done and state.resting:
            await cancel_leg(journal, api, legs[leg], pos.symbol)
    return State.FILLED


async def close_at_market(journal: Intents, api: PrivateClient, pos: Position, t: int) -> State:
    """Close ``pos`` at market, reduce-only (a time limit, a signal, the breaker, the kill
    switch, a refused stop); its resting legs cancelled once the exit has filled, never
    before (a crash or a failed exit in between would leave the position unprotected;
    a close-all stop left resting expires on its own once the position is flat)."""
    exit_ = Intent(pos.leg(Leg.EXIT, t), t, pos.symbol, Leg.EXIT, pos.closing_side, "MARKET",
                   quantity=pos.quantity, reduce_only=True)  # fmt: skip
    state = await send(journal, api, exit_)
    if state is not State.FILLED:
        return state
    for row in journal.rows("symbol = ? AND t = ? AND leg IN (?, ?) AND state IN "
                            "('NEW', 'PARTIALLY_FILLED')",
                            (pos.symbol, pos.t, Leg.STOP.value, Leg.TARGET.value)):  # fmt: skip
        await cancel_leg(journal, api, row["client_id"], pos.symbol)
    return state
