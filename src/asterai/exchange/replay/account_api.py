"""The stand-in exchange's private endpoints: signed requests onto the matching engine.

``AccountAPI.handle`` takes a request as the HTTP layer received it (method, path,
query string, body, the API-key header) and answers ``(status, body, headers)`` as
Aster does: the V3 paths (``/fapi/v3/...``, signed by an API wallet) and the V1 ones
(``/fapi/v1``, and ``/fapi/v2``/``/fapi/v4`` where the documentation puts them, HMAC
signed), each with its documented weight (``ACCOUNT_WEIGHTS``, for the IP limiter)
and, for new orders, the account's order counts (``X-MBX-ORDER-COUNT-10S`` and
``-1M``, on this machine's clock; past the limits a 429 with -1015).

The user-data stream's side lives here too: listen keys (valid 60 minutes of the
exchange's clock, extended by a keep-alive, one per account) and each account's
events, which the stream server reads from ``Account.events``. ``countdownCancelAll``
deadlines are checked whenever the engine is advanced (``tick``).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from asterai.exchange.replay.accounts import MAX_LEVERAGE, ZERO, Account, Position, fmt
from asterai.exchange.replay.auth import Auth
from asterai.exchange.replay.errors import ApiError
from asterai.exchange.replay.matching import Engine
from asterai.exchange.weights import ACCOUNT_WEIGHTS, ORDER_LIMITS, V1_VERSIONS, V3_ONLY

LISTEN_KEY_MS = 60 * 60_000
MAX_BATCH = 5


class AccountAPI:
    """Signed requests for the accounts of ``engine``; ``clock`` is the exchange's (ms)."""

    def __init__(self, engine: Engine, clock: Callable[[], int], auth: Auth | None = None) -> None:
        self.engine = engine
        self.clock = clock
        #: order counts, listen keys and countdowns run on this machine's clock, as the
        #: IP's weight does: a client sends, keeps alive and renews at its own pace,
        #: whatever the replay's speed
        self.wall_ms: Callable[[], int] = lambda: int(time.time() * 1000)
        self.auth = auth or Auth()
        self.listen_keys: dict[str, tuple[str, int]] = {}  # key -> (user, expires: wall ms)
        self.countdowns: dict[tuple[str, str], int] = {}  # (user, symbol) -> wall deadline
        self._orders_sent: dict[str, deque[int]] = {}
        self._lock = threading.RLock()

    def open_account(self, balance: Decimal):
        """A funded throwaway account: its credentials."""
        creds = self.auth.create()
        self.engine.open_account(creds.user.address, balance)
        return creds

    # -- time -----------------------------------------------------------------------

    def tick(self, now: int | None = None) -> None:
        """Fire the countdowns and listen-key expiries whose (wall-clock) time has come,
        at the exchange's time the engine stands at; then advance the engine to ``now``
        (the exchange's clock)."""
        now = self.clock() if now is None else now
        wall = self.wall_ms()
        with self._lock:
            at = self.engine.done_ms
            for key, deadline in sorted(self.countdowns.items(), key=lambda kv: kv[1]):
                if deadline <= wall:
                    user, symbol = key
                    del self.countdowns[key]
                    self.engine.cancel_all(self.engine.accounts[user], symbol, at)
            for key, (user, expires) in list(self.listen_keys.items()):
                if expires <= wall:
                    del self.listen_keys[key]
                    self.engine.accounts[user].events.append(
                        {"e": "listenKeyExpired", "E": at, "listenKey": key})  # fmt: skip
            self.engine.advance(now)

    # -- the entry point ------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, body: str,
               api_key: str | None = None, refuse_margin: bool = False,
               ) -> tuple[int, Any, dict[str, str]]:  # fmt: skip
        """``(HTTP status, JSON body, extra headers)`` of a private request;
        ``refuse_margin``: the ``margin`` fault, new orders refused with -2019 once the
        request is authenticated (nothing applied)."""
        parts = path.strip("/").split("/", 2)
        version, name = parts[1], parts[2]
        # V1 signs the query string and the body concatenated, as documented; V3 what is
        # sent with an "&" between them (parsed as one: no split can change a value)
        joint = "&" if version == "v3" else ""
        total = query + joint + body if query and body else query or body
        params = dict(parse_qsl(query, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        try:
            if (method, name) not in ACCOUNT_WEIGHTS:
                raise ApiError(404, -1000, f"Unknown endpoint {method} {path}.")
            expected = "v3" if name in V3_ONLY else V1_VERSIONS.get(name, "v1")
            if version != "v3" and version != expected:
                raise ApiError(404, -1000, f"Unknown endpoint {method} {path}.")
            if name == "listenKey" and version != "v3":
                user = self.auth.user_of_key(api_key)
            elif version == "v3":
                user = self.auth.user_v3(total, params)
            else:
                user = self.auth.user_v1(total, params, api_key)
            acc = self.engine.accounts[user]
            with self._lock:
                now = self.clock()
                self.tick(now)
                headers: dict[str, str] = {}
                if name in ("order", "batchOrders") and method == "POST":
                    count = len(_batch(params)) if name == "batchOrders" else 1
                    headers = self._count_orders(user, self.wall_ms(), count)
                if refuse_margin and method == "POST" and name == "order":
                    raise ApiError(400, -2019, "Margin is insufficient.")
                self._refuse_margin = refuse_margin
                answer = getattr(self, "_" + name.replace("/", "_"))(method, acc, params, now)
                return 200, answer, headers
        except ApiError as err:
            return err.status, {"code": err.code, "msg": err.msg}, {}

    def _count_orders(self, user: str, now: int, count: int) -> dict[str, str]:
        sent = self._orders_sent.setdefault(user, deque())
        longest = max(w for w, _, _ in ORDER_LIMITS)
        while sent and sent[0] <= now - longest:
            sent.popleft()
        headers = {}
        for window, limit, header in ORDER_LIMITS:
            used = sum(1 for t in sent if t > now - window)
            if used + count > limit:
                raise ApiError(429, -1015, f"Too many new orders; current limit is {limit} orders "
                             f"per {window // 1000} s.")  # fmt: skip
            headers[header] = str(used + count)
        sent.extend([now] * count)
        return headers

    # -- orders ---------------------------------------------------------------------

    def _order(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        if method == "POST":
            resp = p.get("newOrderRespType", "ACK")
            if resp not in ("ACK", "RESULT"):
                raise ApiError(400, -1136, "Invalid newOrderRespType.")
            if acc.dual_side:
                raise ApiError(400, -1020, "This operation is not supported. (the replay trades in "
                             "one-way mode only)")  # fmt: skip
            order = self.engine.new_order(acc, _order_params(p), now)
            return _as_answered(order, resp)
        if method == "DELETE":
            return self.engine.cancel(acc, p.get("symbol"), now, p.get("orderId"),
                                      p.get("origClientOrderId")).as_json()  # fmt: skip
        return self.engine.find(acc, p.get("symbol"), p.get("orderId"),
                                p.get("origClientOrderId")).as_json()  # fmt: skip

    def _batchOrders(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        out: list[Any] = []
        if method == "POST":
            for one in _batch(p):
                try:
                    if self._refuse_margin:
                        raise ApiError(400, -2019, "Margin is insufficient.")
                    resp = one.get("newOrderRespType", "ACK")
                    order = self.engine.new_order(acc, _order_params(one), now)
                    out.append(_as_answered(order, resp))
                except ApiError as err:
                    out.append({"code": err.code, "msg": err.msg})
            return out
        ids = _json_list(p, "orderIdList") or _json_list(p, "origClientOrderIdList")
        if not ids:
            raise ApiError(400, -1102, "Mandatory parameter 'orderIdList' or 'origClientOrderIdList' "
                         "was not sent, was empty/null, or malformed.")  # fmt: skip
        by_id = "orderIdList" in p
        for x in ids:
            try:
                o = self.engine.cancel(acc, p.get("symbol"), now, str(x) if by_id else None,
                                       None if by_id else str(x))  # fmt: skip
                out.append(o.as_json())
            except ApiError as err:
                out.append({"code": err.code, "msg": err.msg})
        return out

    def _allOpenOrders(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        self.engine.cancel_all(acc, p.get("symbol"), now)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def _countdownCancelAll(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        inst = self.engine.instrument(p.get("symbol"))
        ms = _int(p, "countdownTime", required=True)
        if ms < 0:
            raise ApiError(400, -1102, "Mandatory parameter 'countdownTime' was malformed.")
        if ms == 0:
            self.countdowns.pop((acc.user, inst.symbol), None)
        else:
            self.countdowns[(acc.user, inst.symbol)] = self.wall_ms() + ms
        return {"symbol": inst.symbol, "countdownTime": str(ms)}

    def _openOrder(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        order = self.engine.find(acc, p.get("symbol"), p.get("orderId"),
                                 p.get("origClientOrderId"))  # fmt: skip
        if not order.status.is_open:
            raise ApiError(400, -2013, "Order does not exist.")
        return order.as_json()

    def _openOrders(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        symbol = self.engine.instrument(p["symbol"]).symbol if p.get("symbol") else None
        return [o.as_json() for o in acc.open_orders(symbol)]

    def _allOrders(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        inst = self.engine.instrument(p.get("symbol"))
        rows = [o for o in acc.orders.values() if o.symbol == inst.symbol]
        if p.get("orderId"):
            first = _int(p, "orderId")
            rows = [o for o in rows if o.order_id >= first]
        rows = _in_time(rows, p, lambda o: o.placed_ms)
        return [o.as_json() for o in rows[: _limit(p, 500, 1000)]]

    # -- the account ----------------------------------------------------------------

    def _balance(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        upnl = self.engine.upnl(acc, now)
        avail = self.engine.available(acc, now)
        return [{
            "accountAlias": acc.user[2:10], "asset": "USDT", "balance": fmt(acc.wallet),
            "crossWalletBalance": fmt(acc.wallet), "crossUnPnl": fmt(upnl),
            "availableBalance": fmt(avail), "maxWithdrawAmount": fmt(max(avail, ZERO)),
            "marginAvailable": True, "updateTime": now,
        }]  # fmt: skip

    def _account(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        eng = self.engine
        upnl = eng.upnl(acc, now)
        pim, oim = eng.position_margin(acc, now), eng.order_margin(acc, now)
        avail = eng.available(acc, now)
        maint = sum((eng.maintenance(pos.qty, eng.price_now(eng.instruments[s], now) or ZERO)
                     for s, pos in acc.positions.items()), ZERO)  # fmt: skip
        money = {
            "totalInitialMargin": fmt(pim + oim), "totalMaintMargin": fmt(maint),
            "totalWalletBalance": fmt(acc.wallet), "totalUnrealizedProfit": fmt(upnl),
            "totalMarginBalance": fmt(acc.wallet + upnl),
            "totalPositionInitialMargin": fmt(pim), "totalOpenOrderInitialMargin": fmt(oim),
            "totalCrossWalletBalance": fmt(acc.wallet), "totalCrossUnPnl": fmt(upnl),
            "availableBalance": fmt(avail), "maxWithdrawAmount": fmt(max(avail, ZERO)),
        }  # fmt: skip
        asset = {
            "asset": "USDT", "walletBalance": fmt(acc.wallet), "unrealizedProfit": fmt(upnl),
            "marginBalance": fmt(acc.wallet + upnl), "maintMargin": fmt(maint),
            "initialMargin": fmt(pim + oim), "positionInitialMargin": fmt(pim),
            "openOrderInitialMargin": fmt(oim), "crossWalletBalance": fmt(acc.wallet),
            "crossUnPnl": fmt(upnl), "availableBalance": fmt(avail),
            "maxWithdrawAmount": fmt(max(avail, ZERO)), "marginAvailable": True,
            "updateTime": now,
        }  # fmt: skip
        positions = []
        for symbol in sorted(eng.instruments):  # every symbol, as the documentation says
            pos = acc.positions.get(symbol) or Position()
            mark = eng.price_now(eng.instruments[symbol], now) or ZERO
            positions.append({
                "symbol": symbol, "initialMargin": fmt(abs(pos.qty) * mark / acc.lev(symbol)),
                "maintMargin": fmt(eng.maintenance(pos.qty, mark)),
                "unrealizedProfit": fmt(eng.unrealized(acc, symbol, now)),
                "positionInitialMargin": fmt(abs(pos.qty) * mark / acc.lev(symbol)),
                "openOrderInitialMargin": "0", "leverage": str(acc.lev(symbol)),
                "isolated": acc.margin_type.get(symbol) == "ISOLATED",
                "entryPrice": fmt(pos.entry), "maxNotional": "1000000",
                "positionSide": "BOTH", "positionAmt": fmt(pos.qty), "updateTime": now,
            })  # fmt: skip
        return {"feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True,
                "updateTime": now, **money, "assets": [asset], "positions": positions}  # fmt: skip

    _accountWithJoinMargin = _account

    def _positionRisk(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        eng = self.engine
        symbols = [eng.instrument(p["symbol"]).symbol] if p.get("symbol") else sorted(
            eng.instruments)  # fmt: skip
        out = []
        for symbol in symbols:
            pos = acc.positions.get(symbol)
            qty, entry = (pos.qty, pos.entry) if pos else (ZERO, ZERO)
            mark = eng.price_now(eng.instruments[symbol], now) or ZERO
            out.append({
                "entryPrice": fmt(entry),
                "marginType": "isolated" if acc.margin_type.get(symbol) == "ISOLATED" else "cross",
                "isAutoAddMargin": "false", "isolatedMargin": "0", "leverage": str(acc.lev(symbol)),
                "liquidationPrice": fmt(eng.liquidation_price(acc, symbol, now)),
                "markPrice": fmt(mark), "maxNotionalValue": "1000000",
                "positionAmt": fmt(qty), "symbol": symbol,
                "unRealizedProfit": fmt(eng.unrealized(acc, symbol, now)),
                "positionSide": "BOTH", "updateTime": now,
            })  # fmt: skip
        return out

    def _leverage(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        inst = self.engine.instrument(p.get("symbol"))
        lev = _int(p, "leverage", required=True)
        if not 1 <= lev <= MAX_LEVERAGE:
            raise ApiError(400, -4028, "Invalid leverage")
        acc.leverage[inst.symbol] = lev
        return {"leverage": lev, "maxNotionalValue": "1000000", "symbol": inst.symbol}

    def _marginType(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        inst = self.engine.instrument(p.get("symbol"))
        kind = p.get("marginType")
        if kind not in ("ISOLATED", "CROSSED"):
            raise ApiError(400, -1130, "Invalid data sent for a parameter: 'marginType'.") if kind else ApiError(400, -1102, "Mandatory parameter 'marginType' was not sent, was empty/null, or "
                "malformed.")  # fmt: skip
        if acc.margin_type.get(inst.symbol, "CROSSED") == kind:
            raise ApiError(400, -4046, "No need to change margin type.")
        if acc.open_orders(inst.symbol):
            raise ApiError(400, -4047, "Margin type cannot be changed if there exists open orders.")
        if (acc.positions.get(inst.symbol) or Position()).qty:
            raise ApiError(400, -4048, "Margin type cannot be changed if there exists position.")
        acc.margin_type[inst.symbol] = kind
        return {"code": 200, "msg": "success"}

    def _positionSide_dual(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        if method == "GET":
            return {"dualSidePosition": acc.dual_side}
        value = (p.get("dualSidePosition") or "").lower()
        if value not in ("true", "false"):
            raise ApiError(400, -1102, "Mandatory parameter 'dualSidePosition' was not sent, was "
                         "empty/null, or malformed.")  # fmt: skip
        if (value == "true") == acc.dual_side:
            raise ApiError(400, -4059, "No need to change position side.")
        if acc.open_orders():
            raise ApiError(
                400, -4067, "Position side cannot be changed if there exists open orders."
            )
        if any(pos.qty for pos in acc.positions.values()):
            raise ApiError(400, -4068, "Position side cannot be changed if there exists position.")
        acc.dual_side = value == "true"
        return {"code": 200, "msg": "success"}

    def _userTrades(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        inst = self.engine.instrument(p.get("symbol"))
        rows = [t for t in acc.trades if t["symbol"] == inst.symbol]
        if p.get("fromId"):
            first = _int(p, "fromId")
            rows = [t for t in rows if t["id"] >= first]
        rows = _in_time(rows, p, lambda t: t["time"])
        return rows[: _limit(p, 500, 1000)]

    def _income(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        rows = acc.income
        if p.get("symbol"):
            rows = [r for r in rows if r["symbol"] == p["symbol"]]
        if p.get("incomeType"):
            rows = [r for r in rows if r["incomeType"] == p["incomeType"]]
        rows = _in_time(rows, p, lambda r: r["time"])
        return rows[: _limit(p, 100, 1000)]

    def _leverageBracket(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        eng = self.engine
        symbols = [eng.instrument(p["symbol"]).symbol] if p.get("symbol") else sorted(
            eng.instruments)  # fmt: skip
        rate = float(eng.costs.maintenance_margin)
        out = [
            {
                "symbol": s,
                "brackets": [
                    {
                        "bracket": 1,
                        "initialLeverage": MAX_LEVERAGE,
                        "notionalCap": 1_000_000,
                        "notionalFloor": 0,
                        "maintMarginRatio": rate,
                        "cum": 0.0,
                    }
                ],
            }
            for s in symbols
        ]
        return out[0] if p.get("symbol") else out

    def _commissionRate(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        inst = self.engine.instrument(p.get("symbol"))
        return {"symbol": inst.symbol, "makerCommissionRate": fmt(acc.maker_fee),
                "takerCommissionRate": fmt(acc.taker_fee)}  # fmt: skip

    # -- the user-data stream's keys ------------------------------------------------

    def _listenKey(self, method: str, acc: Account, p: dict[str, str], now: int) -> Any:
        mine = next((k for k, (u, _) in self.listen_keys.items() if u == acc.user), None)
        if method == "POST":
            key = mine or secrets.token_hex(32)
            self.listen_keys[key] = (acc.user, self.wall_ms() + LISTEN_KEY_MS)
            return {"listenKey": key}
        if mine is None:
            raise ApiError(400, -1125, "This listenKey does not exist.")
        if method == "PUT":
            self.listen_keys[mine] = (acc.user, self.wall_ms() + LISTEN_KEY_MS)
        else:
            del self.listen_keys[mine]
        return {}

    def user_of_listen_key(self, key: str) -> str | None:
        """The account a live listen key streams, None once it expired or was closed."""
        with self._lock:
            self.tick()
            entry = self.listen_keys.get(key)
            return entry[0] if entry else None

    def expire_listen_key(self, user: str) -> bool:
        """Expire the account's listen key now (a fault): ``listenKeyExpired`` is sent."""
        with self._lock:
            for key, (u, _) in list(self.listen_keys.items()):
                if u == user:
                    self.listen_keys[key] = (u, self.wall_ms())
                    self.tick()
                    return True
            return False


def _order_params(p: dict[str, str]) -> dict[str, str]:
    skip = {"nonce", "user", "signer", "signature", "timestamp", "recvWindow",
            "newOrderRespType"}  # fmt: skip
    return {k: v for k, v in p.items() if k not in skip}


def _batch(p: dict[str, str]) -> list[dict[str, str]]:
    orders = _json_list(p, "batchOrders")
    if orders is None:
        raise ApiError(400, -1102, "Mandatory parameter 'batchOrders' was not sent, was empty/null, "
                     "or malformed.")  # fmt: skip
    if not 1 <= len(orders) <= MAX_BATCH or not all(isinstance(o, dict) for o in orders):
        raise ApiError(400, -4082, "Invalid number of batch place orders.")
    return [{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in o.items()}
            for o in orders]  # fmt: skip


def _json_list(p: dict[str, str], name: str) -> list | None:
    text = p.get(name)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        try:  # the documentation's own example quotes with single quotes
            value = json.loads(text.replace("'", '"'))
        except ValueError:
            raise ApiError(400, -1102, f"Mandatory parameter '{name}' was malformed.") from None
    return value if isinstance(value, list) else None


def _limit(p: dict[str, str], default: int, most: int) -> int:
    try:
        n = int(p.get("limit", default))
    except ValueError:
        raise ApiError(400, -1102, "Mandatory parameter 'limit' was malformed.") from None
    return max(1, min(n, most))


def _in_time(rows: list, p: dict[str, str], when: Callable[[Any], int]) -> list:
    if p.get("startTime"):
        start = _int(p, "startTime")
        rows = [r for r in rows if when(r) >= start]
    if p.get("endTime"):
        end = _int(p, "endTime")
        rows = [r for r in rows if when(r) <= end]
    return rows


def _int(p: dict[str, str], name: str, required: bool = False) -> int:
    """An integer parameter; -1102 naming it when it is absent (and required) or not one."""
    value = p.get(name)
    if value is None and not required:
        return 0
    try:
        return int(str(value))
    except ValueError:
        raise ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was "
                       "empty/null, or malformed.") from None  # fmt: skip


def _as_answered(order, resp: str) -> dict:
    """A new order's answer: as placed for ``ACK`` (what happened next comes by the
    stream), as it stands for ``RESULT``."""
    out = order.as_json()
    if resp == "ACK":
        out.update(status="NEW", executedQty="0", cumQty="0", cumQuote="0", avgPrice="0")
    return out
