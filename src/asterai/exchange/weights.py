"""Request weights, as the Aster API documentation states them: the public endpoints'
and the private (signed) ones'.

The client plans with these numbers and the replay server charges them, so
both sides read the same table.
"""

from __future__ import annotations

# Defined on the ground floor so settings can default to it; it follows from
# klines_weight below (499 bars for weight 2).
from asterai.limits import OPTIMAL_KLINE_PAGE as OPTIMAL_KLINE_PAGE

KLINES_MAX_LIMIT = 1500
KLINES_DEFAULT_LIMIT = 500
FUNDING_MAX_LIMIT = 1000
FUNDING_DEFAULT_LIMIT = 100
TRADES_MAX_LIMIT = 1000
TRADES_DEFAULT_LIMIT = 500
DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
DEPTH_DEFAULT_LIMIT = 500

#: The REQUEST_WEIGHT limit the real exchange declares in exchangeInfo.
DEFAULT_WEIGHT_LIMIT = 2400
DEFAULT_ORDER_LIMIT = 1200


def klines_weight(limit: int) -> int:
    """Weight of ``GET /fapi/v1/klines`` for a given ``limit``."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def depth_weight(limit: int) -> int:
    """Weight of ``GET /fapi/v1/depth`` for a given ``limit``."""
    if limit <= 50:
        return 2
    if limit <= 100:
        return 5
    if limit <= 500:
        return 10
    return 20


def ticker_24hr_weight(has_symbol: bool) -> int:
    return 1 if has_symbol else 40


def endpoint_weight(path: str, params: dict[str, object]) -> int:
    """Weight the exchange charges for ``path`` with ``params`` (public endpoints)."""
    name = path.rsplit("/fapi/v1/", 1)[-1]
    if name == "klines":
        return klines_weight(int(params.get("limit", KLINES_DEFAULT_LIMIT)))
    if name == "depth":
        return depth_weight(int(params.get("limit", DEPTH_DEFAULT_LIMIT)))
    if name == "ticker/24hr":
        return ticker_24hr_weight("symbol" in params)
    if name == "ticker/price":
        return 1 if "symbol" in params else 2
    return 1


#: (method, endpoint name) -> weight, as documented (``shared/reference``)
ACCOUNT_WEIGHTS: dict[tuple[str, str], int] = {
    ("POST", "order"): 1, ("GET", "order"): 1, ("DELETE", "order"): 1,
    ("POST", "batchOrders"): 5, ("DELETE", "batchOrders"): 1,
    ("DELETE", "allOpenOrders"): 1, ("POST", "countdownCancelAll"): 10,
    ("GET", "openOrder"): 1, ("GET", "openOrders"): 1, ("GET", "allOrders"): 5,
    ("GET", "balance"): 5, ("GET", "account"): 5, ("GET", "accountWithJoinMargin"): 5,
    ("POST", "leverage"): 1, ("POST", "marginType"): 1,
    ("POST", "positionSide/dual"): 1, ("GET", "positionSide/dual"): 30,
    ("GET", "positionRisk"): 5, ("GET", "userTrades"): 5, ("GET", "income"): 30,
    ("GET", "leverageBracket"): 1, ("GET", "commissionRate"): 20,
    ("POST", "listenKey"): 1, ("PUT", "listenKey"): 1, ("DELETE", "listenKey"): 1,
}  # fmt: skip
#: where the V1 documentation puts an endpoint under another version
V1_VERSIONS = {"balance": "v2", "positionRisk": "v2", "account": "v4"}
#: endpoints only under /fapi/v3
V3_ONLY = {"accountWithJoinMargin"}


def private_weight(method: str, path: str, params: dict[str, str]) -> int | None:
    """The weight of a private request, None when ``path`` is not one."""
    parts = path.strip("/").split("/", 2)
    if len(parts) < 3 or parts[0] != "fapi":
        return None
    name = parts[2]
    w = ACCOUNT_WEIGHTS.get((method, name))
    if (method, name) == ("GET", "openOrders") and not params.get("symbol"):
        return 40
    return w


#: the order-count limits per account (Binance's, which Aster's documentation follows)
ORDER_LIMITS = ((10_000, 300, "X-MBX-ORDER-COUNT-10S"), (60_000, 1200, "X-MBX-ORDER-COUNT-1M"))
