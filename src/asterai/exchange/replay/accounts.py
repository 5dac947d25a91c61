"""What the stand-in exchange's accounts hold, in the exchange's own decimals: a
symbol's filters and recorded market (``Instrument``, built from a recording by
``instruments_of``), the engine's charges (``Costs``), orders, positions and accounts.
The matching engine (``matching.py``) changes them; the private endpoints
(``account_api.py``) show them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import numpy as np

from asterai.exchange.orders import OrderStatus

ZERO = Decimal(0)
ONE = Decimal(1)
DEFAULT_LEVERAGE = 20
MAX_LEVERAGE = 125
CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
ORDER_TYPES = ("MARKET", "LIMIT", "STOP_MARKET", "TAKE_PROFIT_MARKET")
TIME_IN_FORCE = ("GTC", "IOC", "FOK", "GTX")
#: how near the recorded book's time a market order must be to walk it
BOOK_WINDOW_MS = 60_000
#: the share of the equity the maintenance margin reaches when a margin call is sent
MARGIN_CALL_RATIO = Decimal("0.8")


def dec(x: Any) -> Decimal:
    """A number as the exchange's decimal (a float by its shortest repr)."""
    if isinstance(x, Decimal):
        return x
    if isinstance(x, float | np.floating):
        return Decimal(repr(float(x)))
    return Decimal(str(x))


def fmt(x: Decimal, places: int = 8) -> str:
    """A decimal as the exchange writes it: fixed point, trailing zeros dropped."""
    q = x.quantize(Decimal(1).scaleb(-places))
    text = format(q.normalize(), "f")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True, eq=False)
class Instrument:
    """A symbol's filters and its market: the finest recorded bars and the funding."""

    symbol: str
    tick: Decimal
    step: Decimal
    min_qty: Decimal
    min_notional: Decimal
    open_time: np.ndarray  # int64 ms
    close_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    funding_time: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    funding_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: the PERCENT_PRICE filter's multipliers of the mark price (None: not declared)
    price_up: Decimal | None = None
    price_down: Decimal | None = None
    #: the recorded order book, best first ((price, quantity) levels), and its time
    book_bids: tuple[tuple[Decimal, Decimal], ...] = ()
    book_asks: tuple[tuple[Decimal, Decimal], ...] = ()
    book_ms: int | None = None

    def book_at(self, t_ms: int) -> bool:
        """Whether the recorded book is the market at ``t_ms`` (within a minute of it)."""
        return (self.book_ms is not None and bool(self.book_bids) and bool(self.book_asks)
                and abs(t_ms - self.book_ms) <= BOOK_WINDOW_MS)  # fmt: skip

    def bar_at(self, t_ms: int) -> int | None:
        """The bar in progress at ``t_ms`` (open time <= t <= close time)."""
        i = int(np.searchsorted(self.open_time, t_ms, side="right")) - 1
        if i < 0 or t_ms > self.close_time[i]:
            return None
        return i

    def closed_by(self, t_ms: int) -> int | None:
        """The last bar closed before ``t_ms`` (its close time under it; a settlement at
        ``t`` is marked by the bar closing at ``t - 1``)."""
        j = int(np.searchsorted(self.close_time, t_ms, side="left")) - 1
        return j if j >= 0 else None

    def buy_fill(self, price: Decimal, slippage: Decimal) -> Decimal:
        return (price * (ONE + slippage) / self.tick).to_integral_value(ROUND_CEILING) * self.tick

    def sell_fill(self, price: Decimal, slippage: Decimal) -> Decimal:
        return (price * (ONE - slippage) / self.tick).to_integral_value(ROUND_FLOOR) * self.tick


@dataclass(frozen=True)
class Costs:
    """What the engine charges: default commission rates (an account may have its own),
    the slippage of market fills, and the maintenance margin and liquidation fee."""

    maker_fee: Decimal = Decimal("0.0005")
    taker_fee: Decimal = Decimal("0.00075")
    slippage: Decimal = Decimal("0.0005")
    maintenance_margin: Decimal = Decimal("0.01")
    liquidation_fee: Decimal = Decimal("0.01")


@dataclass(eq=False)
class Order:
    order_id: int
    client_id: str
    symbol: str
    side: str  # BUY or SELL
    type: str
    time_in_force: str
    qty: Decimal  # ZERO for closePosition
    price: Decimal
    stop_price: Decimal
    reduce_only: bool
    close_position: bool
    placed_ms: int
    status: OrderStatus = OrderStatus.NEW
    executed: Decimal = ZERO
    cum_quote: Decimal = ZERO
    update_ms: int = 0

    @property
    def sign(self) -> int:
        return 1 if self.side == "BUY" else -1

    @property
    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed if self.executed else ZERO

    def as_json(self) -> dict[str, Any]:
        """The order as the exchange's order endpoints answer it."""
        return {
            "orderId": self.order_id, "symbol": self.symbol, "status": self.status.value,
            "clientOrderId": self.client_id, "price": fmt(self.price),
            "avgPrice": fmt(self.avg_price), "origQty": fmt(self.qty),
            "executedQty": fmt(self.executed), "cumQty": fmt(self.executed),
            "cumQuote": fmt(self.cum_quote), "timeInForce": self.time_in_force,
            "type": self.type, "origType": self.type, "reduceOnly": self.reduce_only,
            "closePosition": self.close_position, "side": self.side,
            "positionSide": "BOTH", "stopPrice": fmt(self.stop_price),
            "workingType": "CONTRACT_PRICE", "priceProtect": False,
            "time": self.placed_ms, "updateTime": self.update_ms or self.placed_ms,
        }  # fmt: skip


@dataclass
class Position:
    qty: Decimal = ZERO  # signed: positive long, negative short
    entry: Decimal = ZERO
    realized: Decimal = ZERO  # accumulated, before fees (the stream's "cr")


@dataclass(eq=False)
class Account:
    """One user's futures account (USDT)."""

    user: str
    wallet: Decimal
    maker_fee: Decimal
    taker_fee: Decimal
    leverage: dict[str, int] = field(default_factory=dict)
    margin_type: dict[str, str] = field(default_factory=dict)  # CROSSED or ISOLATED
    dual_side: bool = False
    positions: dict[str, Position] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)
    trades: list[dict[str, Any]] = field(default_factory=list)
    income: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    liquidations: int = 0
    margin_call_ms: int | None = None  # the bar close of the last MARGIN_CALL sent

    def lev(self, symbol: str) -> int:
        return self.leverage.get(symbol, DEFAULT_LEVERAGE)

    def position(self, symbol: str) -> Position:
        return self.positions.setdefault(symbol, Position())

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        return [o for o in self.orders.values()
                if o.status.is_open and (symbol is None or o.symbol == symbol)]  # fmt: skip

    def by_client_id(self, symbol: str, client_id: str) -> Order | None:
        """The newest order of ``symbol`` with ``client_id``."""
        found = [o for o in self.orders.values() if o.symbol == symbol and o.client_id == client_id]
        return found[-1] if found else None


def instruments_of(
    recording: Any, default_min_notional: Decimal = Decimal(5)
) -> dict[str, Instrument]:
    """Each recorded symbol with a known tick and lot step, on its finest recorded bars:
    the filters its recorded ``exchangeInfo`` entry declares (``LOT_SIZE`` minQty,
    ``MIN_NOTIONAL`` notional), else the lot step and ``default_min_notional`` (the
    strategy's own default)."""
    from asterai.intervals import INTERVAL_MS

    out = {}
    for symbol, info in recording.symbols.items():
        if not info.tick_size or not info.step_size:
            continue
        intervals = sorted(recording.intervals(symbol), key=lambda iv: INTERVAL_MS[iv])
        if not intervals:
            continue
        bars = recording.series(symbol, intervals[0])
        listed = info.listed or {}
        filters = {
            f.get("filterType"): f for f in listed.get("filters") or [] if isinstance(f, dict)
        }
        step = Decimal(info.step_size)
        funding = recording.funding.get(symbol)
        book = recording.orderbooks.get(symbol) or {}

        out[symbol] = Instrument(
            symbol=symbol, tick=Decimal(info.tick_size), step=step,
            min_qty=Decimal(str(filters.get("LOT_SIZE", {}).get("minQty", step))),
            min_notional=Decimal(str(filters.get("MIN_NOTIONAL", {}).get(
                "notional", default_min_notional))),
            open_time=bars.open_time, close_time=bars.close_time, open=bars.open,
            high=bars.high, low=bars.low, close=bars.close, volume=bars.volume,
            price_up=_multiplier(filters, "multiplierUp"),
            price_down=_multiplier(filters, "multiplierDown"),
            book_bids=_levels(book, "bids"), book_asks=_levels(book, "asks"),
            book_ms=int(book["E"]) if book.get("E") is not None else None,
            **({} if funding is None else {"funding_time": funding.funding_time,
                                           "funding_rate": funding.funding_rate}),
        )  # fmt: skip
    return out


def _levels(book: dict, side: str) -> tuple[tuple[Decimal, Decimal], ...]:
    """A recorded book side as (price, quantity) decimals, best first."""
    return tuple((Decimal(str(p)), Decimal(str(q))) for p, q in book.get(side) or [])


def _multiplier(filters: dict, key: str) -> Decimal | None:
    value = (filters.get("PERCENT_PRICE") or {}).get(key)
    return None if value is None else Decimal(str(value))
