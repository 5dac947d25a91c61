"""What the stand-in exchange reports of an account, in the exchange's own shapes: the
user-data events (``ORDER_TRADE_UPDATE``, ``ACCOUNT_UPDATE``, ``MARGIN_CALL``), the user
trades (``userTrades``) and the income records (``income``). The matching engine
(``matching.py``) makes them as it changes an account."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from asterai.exchange.replay.accounts import ZERO, Account, Order, Position, fmt


@dataclass(frozen=True, slots=True)
class Fill:
    """One trade of an order: its quantity, price, commission, id, side of the book and
    the PnL it realised."""

    qty: Decimal
    price: Decimal
    commission: Decimal
    trade_id: int
    maker: bool
    realized: Decimal


def order_event(order: Order, execution: str, t: int, fill: Fill | None = None) -> dict:
    """``ORDER_TRADE_UPDATE``: the order as it stands, and its last fill if it had one."""
    qty, price, trade_id, maker, realized = (
        (fill.qty, fill.price, fill.trade_id, fill.maker, fill.realized)
        if fill is not None
        else (ZERO, ZERO, 0, False, ZERO)
    )
    o: dict[str, Any] = {
        "s": order.symbol, "c": order.client_id, "S": order.side, "o": order.type,
        "f": order.time_in_force, "q": fmt(order.qty), "p": fmt(order.price),
        "ap": fmt(order.avg_price), "sp": fmt(order.stop_price), "x": execution,
        "X": order.status.value, "i": order.order_id, "l": fmt(qty),
        "z": fmt(order.executed), "L": fmt(price), "T": t, "t": trade_id,
        "b": "0", "a": "0", "m": maker, "R": order.reduce_only,
        "wt": "CONTRACT_PRICE", "ot": order.type, "ps": "BOTH",
        "cp": order.close_position, "rp": fmt(realized),
    }  # fmt: skip
    if fill is not None:
        o.update(N="USDT", n=fmt(fill.commission))
    return {"e": "ORDER_TRADE_UPDATE", "E": t, "T": t, "o": o}


def balance_event(acc: Account, reason: str, t: int,
                  position: tuple[str, Position, Decimal] | None = None) -> dict:  # fmt: skip
    """``ACCOUNT_UPDATE``: the wallet, and (``position``: symbol, position, unrealised
    PnL) the position that changed; a funding fee on a cross position has none."""
    data: dict[str, Any] = {
        "m": reason,
        "B": [{"a": "USDT", "wb": fmt(acc.wallet), "cw": fmt(acc.wallet), "bc": "0"}],
        "P": [],
    }
    if position is not None:
        symbol, pos, upnl = position
        data["P"].append({
            "s": symbol, "pa": fmt(pos.qty), "ep": fmt(pos.entry), "cr": fmt(pos.realized),
            "up": fmt(upnl), "mt": "cross", "iw": "0", "ps": "BOTH",
        })  # fmt: skip
    return {"e": "ACCOUNT_UPDATE", "E": t, "T": t, "a": data}


def margin_call_event(acc: Account, worst: dict[str, Decimal], rate: Decimal, t: int) -> dict:
    """``MARGIN_CALL``: each position at the bar's worst price, and its maintenance."""
    positions = []
    for symbol, price in worst.items():
        pos = acc.positions[symbol]
        positions.append({
            "s": symbol, "ps": "BOTH", "pa": fmt(pos.qty), "mt": "CROSSED", "iw": "0",
            "mp": fmt(price), "up": fmt(pos.qty * (price - pos.entry)),
            "mm": fmt(abs(pos.qty) * price * rate),
        })  # fmt: skip
    return {"e": "MARGIN_CALL", "E": t, "cw": fmt(acc.wallet), "p": positions}


def trade_record(order: Order, fill: Fill, t: int) -> dict:
    """A user trade (``userTrades``)."""
    return {
        "symbol": order.symbol, "id": fill.trade_id, "orderId": order.order_id,
        "side": order.side, "price": fmt(fill.price), "qty": fmt(fill.qty),
        "realizedPnl": fmt(fill.realized), "marginAsset": "USDT",
        "quoteQty": fmt(fill.qty * fill.price), "commission": fmt(fill.commission),
        "commissionAsset": "USDT", "time": t, "positionSide": "BOTH",
        "buyer": order.side == "BUY", "maker": fill.maker,
    }  # fmt: skip


def income_record(acc: Account, symbol: str, kind: str, amount: Decimal, t: int,
                  trade_id: int | None = None) -> dict:  # fmt: skip
    """An income record (``income``): realised PnL, commission, funding, insurance."""
    return {
        "symbol": symbol, "incomeType": kind, "income": fmt(amount), "asset": "USDT",
        "info": kind, "time": t, "tranId": len(acc.income) + 1,
        "tradeId": "" if trade_id is None else str(trade_id),
    }  # fmt: skip
