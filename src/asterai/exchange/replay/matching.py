"""The stand-in exchange's matching engine, order by order.

Written as an exchange works, not as a call into the backtest's kernel: it is the
second implementation that checks the first. Its market is the recording played
forward (``Instrument``: a symbol's filters, its finest recorded bars and its funding
settlements); its clock is the replay's. Prices and quantities are ``Decimal`` (the
exchange's strings, exact), never floats.

The rules (the documented ones where the recording can carry them):

- **Filters at placement.** Price on the tick (-4014) and within the PERCENT_PRICE
  band of the price of the moment where one is declared (-4016, -4024), quantity on
  the lot step
  (-1111) and at least the minimum (-4004), notional at least the minimum unless
  reduce-only (-4164), the combination of parameters the type needs (-1102, -1106,
  -4137, -4138), a client order id unique among open orders (-4116) and matching
  ``^[.A-Z:/a-z0-9_-]{1,36}$`` (-4015).
- **Margin.** One-way mode, cross margin by default (isolated accepted per symbol),
  leverage per symbol (default 20). An order that adds exposure needs its initial
  margin (notional / leverage) out of the available balance (wallet + unrealised PnL
  - the initial margin of positions and of open orders that add exposure): -2019
  otherwise. Reduce-only orders that would add exposure are refused (-2022), and expire
  if, when they trigger, the position no longer lets them reduce.
- **Market orders** fill at once at the price of their moment: against the recorded
  order book when the clock stands at its moment (within a minute: a replay frozen at
  the recording), level by level, a trade each; otherwise at the open of the bar in
  progress (the finest recorded), plus the configured slippage against the trader,
  rounded to the tick against him; taker fee. In a bar without volume (a closed
  market) nothing fills: -2020.
- **Resting orders** are matched as each bar closes, against its range; an order
  resting from inside a bar is taken to have rested for all of it (bars are the finest
  record: the bot's stop and target, placed a moment after the open, are matched as
  the backtest matches them). ``STOP_MARKET`` (a SELL when the low reaches the stop, a
  BUY when the high does) fills at the stop, or at the open when the bar opened
  through it after the order was placed, with the slippage: a taker.
  ``TAKE_PROFIT_MARKET`` likewise when the price reaches it from the other side.
  ``LIMIT`` fills at its price as a maker when the bar trades at least one tick
  through it (a bare touch is not a fill: the queue); a LIMIT marketable at placement
  takes at once at the market fill, never worse than its price (a taker), and a GTX
  one is refused (-5022); a stop or take-profit that the price of the moment has
  already passed is refused (-2021). When a bar reaches a symbol's stop and target both, the stop
  goes first (the worse outcome, as the labels and the backtest assume).
- **Funding** at each recorded settlement: a position pays ``qty x mark x rate``
  (long pays a positive rate), the mark being the close of the bar that ends there.
- **Margin call** (``MARGIN_CALL``, once a bar at most) when the maintenance margin at
  the bar's worst prices reaches ``MARGIN_CALL_RATIO`` of the equity there.
- **Liquidation** (cross), once every bar closing at a moment is matched: when the
  wallet plus the unrealised PnL at each position's
  worst price of a bar falls to ``maintenance_margin`` x the notional there, every
  position is closed at those prices less the slippage, paying the taker and the
  liquidation fees (client id ``autoclose-...``).

Every change is recorded as the exchange reports it: the order's status through
``orders.advance``, user trades, income (``REALIZED_PNL``, ``COMMISSION``,
``FUNDING_FEE``, ``INSURANCE_CLEAR``) and the user-data events (``reports.py``) in each
account's ``events``, which the stream delivers.
"""

from __future__ import annotations

import threading
from decimal import Decimal

import numpy as np

from asterai.exchange.orders import OrderStatus, advance
from asterai.exchange.replay.accounts import (
    CLIENT_ID_RE,
    MARGIN_CALL_RATIO,
    ORDER_TYPES,
    TIME_IN_FORCE,
    ZERO,
    Account,
    Costs,
    Instrument,
    Order,
    dec,
    fmt,
)
from asterai.exchange.replay.errors import ApiError, mandatory
from asterai.exchange.replay.reports import (
    Fill,
    balance_event,
    income_record,
    margin_call_event,
    order_event,
    trade_record,
)

#: the largest price and quantity taken (the derived filters declare no maximum): far
#: beyond any real one, and within what the decimals are computed to
MAX_PRICE = Decimal("1e12")
MAX_QTY = Decimal("1e12")
#: the exchange's other order types, which the replay does not match
UNMATCHED_TYPES = ("STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET")


class Engine:
    """Accounts trading the ``instruments``, their resting orders matched as the
    clock passes each bar's close (``advance``). Thread-safe: one lock."""

    def __init__(self, instruments: dict[str, Instrument], costs: Costs, start_ms: int) -> None:
        self.instruments = instruments
        self.costs = costs
        self.done_ms = int(start_ms)  # bars closed and settlements up to here are applied
        self.accounts: dict[str, Account] = {}
        self.lock = threading.RLock()
        self._next_order = 1
        self._next_trade = 1

    # -- accounts -------------------------------------------------------------------

    def open_account(self, user: str, balance: Decimal) -> Account:
        with self.lock:
            acc = Account(user, dec(balance), self.costs.maker_fee, self.costs.taker_fee)
            self.accounts[user] = acc
            return acc

    def instrument(self, symbol: str | None) -> Instrument:
        if not symbol:
            raise ApiError(
                400,
                -1102,
                "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            )
        inst = self.instruments.get(symbol)
        if inst is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return inst

    def price_now(self, inst: Instrument, now: int) -> Decimal | None:
        """The price of the moment, which marks positions too: the open of the bar in
        progress (the last price the recording knows at that moment), else the last
        close."""
        i = inst.bar_at(now)
        if i is not None:
            return dec(inst.open[i])
        j = int(np.searchsorted(inst.close_time, now, side="right")) - 1
        return dec(inst.close[j]) if j >= 0 else None

    def unrealized(self, acc: Account, symbol: str, now: int) -> Decimal:
        pos = acc.positions.get(symbol)
        if pos is None or not pos.qty:
            return ZERO
        mark = self.price_now(self.instruments[symbol], now)
        return ZERO if mark is None else pos.qty * (mark - pos.entry)

    def position_margin(self, acc: Account, now: int) -> Decimal:
        total = ZERO
        for symbol, pos in acc.positions.items():
            if pos.qty:
                mark = self.price_now(self.instruments[symbol], now) or pos.entry
                total += abs(pos.qty) * mark / acc.lev(symbol)
        return total

    def order_margin(self, acc: Account, now: int) -> Decimal:
        """The initial margin held by open orders that would add exposure."""
        total = ZERO
        for o in acc.open_orders():
            if o.reduce_only or o.close_position:
                continue
            price = o.price or o.stop_price or self.price_now(self.instruments[o.symbol], now)
            total += (o.qty - o.executed) * (price or ZERO) / acc.lev(o.symbol)
        return total

    def upnl(self, acc: Account, now: int) -> Decimal:
        """The account's unrealised PnL at the price of the moment."""
        return sum((self.unrealized(acc, s, now) for s in acc.positions), ZERO)

    def available(self, acc: Account, now: int) -> Decimal:
        held = self.position_margin(acc, now) + self.order_margin(acc, now)
        return acc.wallet + self.upnl(acc, now) - held

    def liquidation_price(self, acc: Account, symbol: str, now: int) -> Decimal:
        """The price of ``symbol`` at which the account would be liquidated, the other
        positions held at the price of the moment (0: no position, or none reachable)."""
        pos = acc.positions.get(symbol)
        if pos is None or not pos.qty:
            return ZERO
        rest = acc.wallet
        for other, held in acc.positions.items():
            if other != symbol and held.qty:
                mark = self.price_now(self.instruments[other], now) or held.entry
                rest += held.qty * (mark - held.entry) - self.maintenance(held.qty, mark)
        # wallet + q (p - e) = rate |q| p, solved for p
        rate = self.costs.maintenance_margin
        return max(ZERO, (pos.qty * pos.entry - rest) / (pos.qty - rate * abs(pos.qty)))

    def maintenance(self, qty: Decimal, price: Decimal) -> Decimal:
        """The maintenance margin of ``qty`` at ``price``."""
        return abs(qty) * price * self.costs.maintenance_margin

    # -- orders ---------------------------------------------------------------------

    def new_order(self, acc: Account, params: dict[str, str], now: int) -> Order:
        """Place an order (``POST /fapi/v*/order``'s parameters, as strings)."""
        with self.lock:
            self.advance(now)
            order = self._validated(acc, params, now)
            inst = self.instruments[order.symbol]
            i = inst.bar_at(now)
            market = None if i is None else self._market_price(inst, dec(inst.open[i]), order.side)
            if order.type == "MARKET" and (i is None or inst.volume[i] <= 0):
                raise ApiError(400, -2020, "Unable to fill.")  # a closed market: nothing recorded
            crosses = (
                order.type == "LIMIT"
                and market is not None
                and (market <= order.price if order.side == "BUY" else market >= order.price)
            )
            if crosses and order.time_in_force == "GTX":
                raise ApiError(400, -5022, "Due to the order could not be executed as maker, the "
                             "Post Only order will be rejected. The order will not be "
                             "recorded in the order history")  # fmt: skip
            event = order_event(order, "NEW", now)  # fails before anything is stored
            acc.orders[order.order_id] = order
            acc.events.append(event)
            if order.type == "MARKET" and inst.book_at(now):
                self._walk_book(acc, order, inst, now)
            elif order.type == "MARKET" or crosses:  # takes at once: a taker
                self._trade(acc, order, market, now, maker=False)
            elif order.type == "LIMIT" and order.time_in_force in ("IOC", "FOK"):
                self._finish(acc, order, OrderStatus.EXPIRED, now)
            return order

    def _validated(self, acc: Account, p: dict[str, str], now: int) -> Order:
        inst = self.instrument(p.get("symbol"))
        side = p.get("side")
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1117, "Invalid side.") if side else mandatory("side")
        kind = p.get("type")
        if kind in UNMATCHED_TYPES:
            raise ApiError(400, -1020, f"This operation is not supported: the replay does not "
                           f"match {kind} orders (MARKET, LIMIT, STOP_MARKET, TAKE_PROFIT_MARKET).")  # fmt: skip
        if kind not in ORDER_TYPES:
            raise ApiError(400, -1116, "Invalid orderType.") if kind else mandatory("type")
        if p.get("positionSide", "BOTH") != "BOTH":
            raise ApiError(400, -4061, "Order's position side does not match user's setting.")
        reduce_only = _flag(p, "reduceOnly")
        close_position = _flag(p, "closePosition")
        qty = _decimal(p, "quantity")
        price = _decimal(p, "price")
        stop = _decimal(p, "stopPrice")
        tif = p.get("timeInForce")
        if kind == "LIMIT":
            for name, value in (("timeInForce", tif), ("quantity", qty), ("price", price)):
                if value is None:
                    raise mandatory(name)
            if tif not in TIME_IN_FORCE:
                raise ApiError(400, -1115, "Invalid timeInForce.")
        elif tif is not None and kind == "MARKET":
            raise ApiError(400, -1106, "Parameter 'timeInForce' sent when not required.")
        if kind in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            if stop is None:
                raise mandatory("stopPrice")
            if close_position:
                if qty is not None:
                    raise ApiError(
                        400, -4137, "Quantity must be zero with closePosition equals true"
                    )
                if "reduceOnly" in p:
                    raise ApiError(
                        400, -4138, "Reduce only must be true with closePosition equals true"
                    )
            elif qty is None:
                raise mandatory("quantity")
        elif close_position:
            raise ApiError(400, -1106, "Parameter 'closePosition' sent when not required.")
        if kind == "MARKET" and qty is None:
            raise mandatory("quantity")
        if kind != "LIMIT" and price is not None:
            raise ApiError(400, -1106, "Parameter 'price' sent when not required.")
        if price is not None and price > MAX_PRICE:
            raise ApiError(400, -4002, "Price greater than max price.")
        if stop is not None and stop > MAX_PRICE:
            raise ApiError(400, -4007, "Stop price greater than max price.")
        for value in (price, stop):
            if value is not None:
                if value <= 0:
                    raise ApiError(400, -4001, "Price less than 0.")
                if value % inst.tick:
                    raise ApiError(400, -4014, "Price not increased by tick size.")
        if qty is not None:
            if qty <= 0:
                raise ApiError(400, -4003, "Quantity less than zero.")
            if qty > MAX_QTY:
                raise ApiError(400, -4005, "Quantity greater than max quantity.")
            if _places(qty) > _places(inst.step):
                raise ApiError(400, -1111, "Precision is over the maximum defined for this asset.")
            if qty % inst.step:
                raise ApiError(400, -4023, "Qty not increased by step size.")
            if qty < inst.min_qty:
                raise ApiError(400, -4004, "Quantity less than min quantity.")
        client_id = p.get("newClientOrderId")
        if client_id is not None:
            if not CLIENT_ID_RE.match(client_id):
                raise ApiError(400, -4015, "Client order id is not valid.")
            if any(o.client_id == client_id for o in acc.open_orders()):
                raise ApiError(400, -4116, "ClientOrderId is duplicated.")
        sign = 1 if side == "BUY" else -1
        ref = price or stop or self.price_now(inst, now)
        if ref is None:
            raise ApiError(400, -1000, f"No market for {inst.symbol} at this time in the replay.")
        if qty is not None and not reduce_only and qty * ref < inst.min_notional:
            raise ApiError(
                400,
                -4164,
                f"Order's notional must be no smaller than {fmt(inst.min_notional)} (unless "
                "you choose reduce only)",
            )
        mark = self.price_now(inst, now)
        if price is not None and mark is not None:  # the PERCENT_PRICE band, if declared
            if inst.price_up is not None and price > mark * inst.price_up:
                raise ApiError(400, -4016, "Price is higher than mark price multiplier cap.")
            if inst.price_down is not None and price < mark * inst.price_down:
                raise ApiError(400, -4024, "Price is lower than mark price multiplier floor.")
        if stop is not None:  # a stop or take-profit the price of the moment has passed
            rising = (kind == "STOP_MARKET") == (side == "BUY")
            last = self.price_now(inst, now)
            if last is not None and (last >= stop if rising else last <= stop):
                raise ApiError(400, -2021, "Order would immediately trigger.")
        held = acc.positions.get(inst.symbol)
        pos = held.qty if held is not None else ZERO
        if reduce_only and (pos * sign >= 0 or (qty is not None and qty > abs(pos))):
            raise ApiError(400, -2022, "ReduceOnly Order is rejected.")
        if qty is not None and not reduce_only and not close_position:
            adds = max(ZERO, qty - max(ZERO, -pos * sign))  # what goes beyond closing
            need = adds * ref / acc.lev(inst.symbol)
            if need > 0 and need > self.available(acc, now):
                raise ApiError(400, -2019, "Margin is insufficient.")
        oid = self._next_order
        self._next_order += 1
        return Order(
            order_id=oid, client_id=client_id or f"asterreplay{oid}", symbol=inst.symbol,
            side=side, type=kind, time_in_force=tif or "GTC", qty=qty or ZERO,
            price=price or ZERO, stop_price=stop or ZERO, reduce_only=reduce_only,
            close_position=close_position, placed_ms=now, update_ms=now,
        )  # fmt: skip

    def _walk_book(self, acc: Account, order: Order, inst: Instrument, now: int) -> None:
        """A market order against the recorded book (the clock at its moment): each
        level taken in turn at its price, a trade each (``PARTIALLY_FILLED`` until the
        last); what the recorded depth lacks fills at its last level with the slippage."""
        levels = inst.book_asks if order.side == "BUY" else inst.book_bids
        left = order.qty
        for price, size in levels:
            if left <= 0:
                break
            take = min(left, size)
            self._trade(acc, order, price, now, maker=False, qty=take)
            left -= take
        if left > 0:
            rest = self._market_price(inst, levels[-1][0], order.side)
            self._trade(acc, order, rest, now, maker=False, qty=left)

    def _market_price(self, inst: Instrument, price: Decimal, side: str) -> Decimal:
        slip = self.costs.slippage
        return inst.buy_fill(price, slip) if side == "BUY" else inst.sell_fill(price, slip)

    def cancel(self, acc: Account, symbol: str | None, now: int, order_id: str | None = None,
               client_id: str | None = None) -> Order:  # fmt: skip
        with self.lock:
            self.advance(now)
            order = self.find(acc, symbol, order_id, client_id)
            if not order.status.is_open:
                raise ApiError(400, -2011, "Unknown order sent.")
            self._finish(acc, order, OrderStatus.CANCELED, now)
            return order

    def cancel_all(self, acc: Account, symbol: str | None, now: int) -> list[Order]:
        with self.lock:
            self.advance(now)
            inst = self.instrument(symbol)
            out = acc.open_orders(inst.symbol)
            for order in out:
                self._finish(acc, order, OrderStatus.CANCELED, now)
            return out

    def find(self, acc: Account, symbol: str | None, order_id: str | None,
             client_id: str | None) -> Order:  # fmt: skip
        inst = self.instrument(symbol)
        if order_id is None and client_id is None:
            raise ApiError(400, -1102, "Either orderId or origClientOrderId must be sent.")
        order = None
        if order_id is not None:
            try:
                order = acc.orders.get(int(order_id))
            except ValueError:
                raise ApiError(400, -1102, "Parameter 'orderId' was malformed.") from None
        else:
            order = acc.by_client_id(inst.symbol, client_id)
        if order is None or order.symbol != inst.symbol:
            raise ApiError(400, -2013, "Order does not exist.")
        return order

    # -- time -----------------------------------------------------------------------

    def advance(self, now: int) -> None:
        """Apply every bar that closed, and every funding settlement, after the last
        ``advance`` and up to ``now``, in time order."""
        with self.lock:
            if now <= self.done_ms:
                return
            due: list[tuple[int, int, str, int]] = []  # (time, kind, symbol, index)
            for symbol, inst in self.instruments.items():
                lo = int(np.searchsorted(inst.close_time, self.done_ms, side="right"))
                hi = int(np.searchsorted(inst.close_time, now, side="right"))
                due.extend((int(inst.close_time[i]), 0, symbol, i) for i in range(lo, hi))
                lo = int(np.searchsorted(inst.funding_time, self.done_ms, side="right"))
                hi = int(np.searchsorted(inst.funding_time, now, side="right"))
                due.extend((int(inst.funding_time[i]), 1, symbol, i) for i in range(lo, hi))
            self.done_ms = now
            by_time: dict[int, list[tuple[int, str, int]]] = {}
            for t, kind, symbol, i in sorted(due):
                by_time.setdefault(t, []).append((kind, symbol, i))
            # at each moment: every bar closing there matched, then the settlements, then
            # (once the whole market has moved) each account's margin
            for t, happened in by_time.items():
                for kind, symbol, i in happened:
                    for acc in self.accounts.values():
                        if kind == 0:
                            self._bar_closed(acc, self.instruments[symbol], i, t)
                        else:
                            self._funding(acc, self.instruments[symbol], i, t)
                if any(kind == 0 for kind, _, _ in happened):
                    for acc in self.accounts.values():
                        self._liquidation(acc, t)

    def _bar_closed(self, acc: Account, inst: Instrument, i: int, t: int) -> None:
        """Match ``acc``'s resting orders of ``inst`` against bar ``i`` (closing at ``t``):
        stops first, then take-profits and limits."""
        resting = [o for o in acc.open_orders(inst.symbol) if o.placed_ms <= t]
        if not resting:
            return
        o_, h, lo = dec(inst.open[i]), dec(inst.high[i]), dec(inst.low[i])
        opened = int(inst.open_time[i])
        first = sorted(resting, key=lambda o: (o.type != "STOP_MARKET", o.order_id))
        for order in first:
            if not order.status.is_open:
                continue  # cancelled or expired by an earlier fill in this bar
            buying = order.side == "BUY"
            if order.type in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
                stop = order.stop_price
                rising = order.type == "STOP_MARKET" if buying else order.type != "STOP_MARKET"
                if not (h >= stop if rising else lo <= stop):
                    continue
                through = (o_ >= stop if rising else o_ <= stop) and order.placed_ms < opened
                at = o_ if through else stop
                self._trigger(acc, order, self._market_price(inst, at, order.side), t, False)
            elif order.type == "LIMIT":
                beyond = order.price - inst.tick if buying else order.price + inst.tick
                if lo <= beyond if buying else h >= beyond:
                    self._trigger(acc, order, order.price, t, True)

    def _trigger(self, acc: Account, order: Order, price: Decimal, t: int, maker: bool) -> None:
        """A resting order reached: filled, or expired when reduce-only (or close-all)
        and the position no longer lets it reduce."""
        pos = acc.position(order.symbol).qty
        if order.close_position:
            if pos * order.sign >= 0:
                self._finish(acc, order, OrderStatus.EXPIRED, t)
                return
            order.qty = abs(pos)
        elif order.reduce_only:
            if pos * order.sign >= 0:
                self._finish(acc, order, OrderStatus.EXPIRED, t)
                return
            if order.qty - order.executed > abs(pos):  # the position shrank meanwhile:
                self._trade(acc, order, price, t, maker=maker, qty=abs(pos))  # what reduces,
                self._finish(acc, order, OrderStatus.EXPIRED, t)  # and the rest expires
                return
        self._trade(acc, order, price, t, maker=maker)

    def _funding(self, acc: Account, inst: Instrument, k: int, t: int) -> None:
        pos = acc.positions.get(inst.symbol)
        if pos is None or not pos.qty:
            return
        j = inst.closed_by(t)
        if j is None:
            return
        mark = dec(inst.close[j])
        fee = -(pos.qty * mark * dec(inst.funding_rate[k]))
        acc.wallet += fee
        acc.income.append(income_record(acc, inst.symbol, "FUNDING_FEE", fee, t))
        acc.events.append(balance_event(acc, "FUNDING_FEE", t))

    def _liquidation(self, acc: Account, t: int) -> None:
        """Cross margin, once the market has moved at ``t``: a margin call when the
        maintenance margin at each position's worst price of its bar reaches
        ``MARGIN_CALL_RATIO`` of the equity there; at the equity itself, every open order
        cancelled and every position closed at those prices less the slippage, paying
        the taker and the liquidation fees. A loss beyond the wallet is the insurance
        fund's (the wallet stops at zero); the account trades on with what is left."""
        worst: dict[str, Decimal] = {}
        equity, maintenance = acc.wallet, ZERO
        for symbol, pos in acc.positions.items():
            if not pos.qty:
                continue
            inst = self.instruments[symbol]
            i = inst.closed_by(t + 1)
            if i is None:
                continue
            price = dec(inst.low[i]) if pos.qty > 0 else dec(inst.high[i])
            worst[symbol] = price
            equity += pos.qty * (price - pos.entry)
            maintenance += self.maintenance(pos.qty, price)
        if not worst:
            return
        if equity > maintenance:
            if maintenance >= MARGIN_CALL_RATIO * equity and acc.margin_call_ms != t:
                acc.margin_call_ms = t
                acc.events.append(margin_call_event(acc, worst, self.costs.maintenance_margin, t))
            return
        acc.liquidations += 1
        for o in acc.open_orders():
            self._finish(acc, o, OrderStatus.CANCELED, t)
        for symbol, price in worst.items():
            pos = acc.positions[symbol]
            side = "SELL" if pos.qty > 0 else "BUY"
            oid = self._next_order
            self._next_order += 1
            order = Order(oid, f"autoclose-{oid}", symbol, side, "MARKET", "IOC", abs(pos.qty),
                          ZERO, ZERO, True, False, t, update_ms=t)  # fmt: skip
            acc.orders[oid] = order
            fill = self._market_price(self.instruments[symbol], price, side)
            fee = abs(pos.qty) * fill * self.costs.liquidation_fee
            self._trade(acc, order, fill, t, maker=False)
            acc.wallet -= fee
            acc.income.append(income_record(acc, symbol, "INSURANCE_CLEAR", -fee, t))
        if acc.wallet < 0:  # bankrupt: the insurance fund takes the rest of the loss
            covered, acc.wallet = -acc.wallet, ZERO
            acc.income.append(income_record(acc, "", "INSURANCE_CLEAR", covered, t))
            acc.events.append(balance_event(acc, "INSURANCE_CLEAR", t))

    # -- fills ----------------------------------------------------------------------

    def _trade(self, acc: Account, order: Order, price: Decimal, t: int, maker: bool,
               qty: Decimal | None = None) -> None:  # fmt: skip
        """Fill ``qty`` of ``order`` (default: what is left) at ``price``: the position,
        the realised PnL, the commission, the user trade, the income and the events."""
        qty = order.qty - order.executed if qty is None else qty
        pos = acc.position(order.symbol)
        signed = qty * order.sign
        realized = ZERO
        if pos.qty and pos.qty * signed < 0:  # reduces (and may flip)
            closing = min(abs(pos.qty), qty)
            realized = closing * (price - pos.entry) * (1 if pos.qty > 0 else -1)
            rest = pos.qty + signed
            if rest == 0:
                pos.entry = ZERO
            elif rest * pos.qty < 0:  # flipped: the rest opens at this price
                pos.entry = price
            pos.qty = rest
        else:
            total = pos.qty + signed
            pos.entry = (abs(pos.qty) * pos.entry + qty * price) / abs(total)
            pos.qty = total
        pos.realized += realized
        rate = acc.maker_fee if maker else acc.taker_fee
        commission = qty * price * rate
        acc.wallet += realized - commission
        order.executed += qty
        order.cum_quote += qty * price
        done = OrderStatus.FILLED if order.executed >= order.qty else OrderStatus.PARTIALLY_FILLED
        order.status = advance(order.status, done, f"order {order.order_id}")
        order.update_ms = t
        trade_id = self._next_trade
        self._next_trade += 1
        fill = Fill(qty, price, commission, trade_id, maker, realized)
        acc.trades.append(trade_record(order, fill, t))
        if realized:
            acc.income.append(income_record(acc, order.symbol, "REALIZED_PNL", realized, t,
                                            trade_id))  # fmt: skip
        acc.income.append(income_record(acc, order.symbol, "COMMISSION", -commission, t, trade_id))
        acc.events.append(order_event(order, "TRADE", t, fill))
        upnl = self.unrealized(acc, order.symbol, t)
        acc.events.append(balance_event(acc, "ORDER", t, (order.symbol, pos, upnl)))

    def _finish(self, acc: Account, order: Order, status: OrderStatus, t: int) -> None:
        order.status = advance(order.status, status, f"order {order.order_id}")
        order.update_ms = t
        acc.events.append(order_event(order, status.value, t))


def _flag(p: dict[str, str], name: str) -> bool:
    value = p.get(name)
    if value is None:
        return False
    if value.lower() not in ("true", "false"):
        raise ApiError(400, -1130, f"Invalid data sent for a parameter: '{name}'.")
    return value.lower() == "true"


def _decimal(p: dict[str, str], name: str) -> Decimal | None:
    value = p.get(name)
    if value is None:
        return None
    try:
        out = Decimal(value.strip())
    except ArithmeticError:
        raise ApiError(400, -1102, f"Mandatory parameter '{name}' was malformed.") from None
    if not out.is_finite():
        raise ApiError(400, -1102, f"Mandatory parameter '{name}' was malformed.")
    return out


def _places(x: Decimal) -> int:
    """The decimal places ``x`` is written with (trailing zeros not counted)."""
    return max(0, -int(x.normalize().as_tuple().exponent))
