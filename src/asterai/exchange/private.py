"""Aster's private endpoints from the client's side: signed requests that never send
an order twice blindly.

``PrivateClient`` signs each attempt afresh (``exchange.signing``: V3 by default, V1
for old keys) and sends it through the public client's one path (the weight limiter,
the ban; ``AsterClient.send_once``). What it does on a failure depends on whether the
request changes the account:

- **Reads** (orders, positions, balance, trades, income) and **cancels** (a second
  cancel of the same order is refused, -2011: harmless) are retried like the public
  requests: 5xx, dropped connections and timeouts with backoff within
  ``exchange.retry_budget_s``, a 429 after its ``Retry-After``.
- **New orders** are sent once. A 429 is a refusal (nothing was applied): waited out
  and sent again. Any failure after the request may have reached the exchange (a
  timeout, a dropped connection, a 5xx such as 503 with -1007 "execution status
  unknown") raises ``OutcomeUnknown``: the order may or may not exist, and only asking
  the exchange by its client id (``order(symbol, client_id=...)``) settles it, as the
  documentation says ("It is important to NOT treat this as a failure operation").

Secrets stay in the key objects; nothing here logs them (the signed query string
carries the signature, never the key).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from asterai.exchange.client import AsterClient
from asterai.exchange.errors import (
    APIError,
    ExchangeError,
    RateLimited,
    RetriesExhausted,
    TemporaryError,
)
from asterai.exchange.signing import Nonces, V1Key, V3Key, sign_v1, sign_v3
from asterai.exchange.weights import ORDER_LIMITS, V1_VERSIONS, V3_ONLY, private_weight

log = logging.getLogger(__name__)

#: answers that do not say whether a new order was applied: -1006/-1007 (the
#: documentation's "execution status unknown"), -1000/-1001 (an unknown or internal
#: error), -4116 (its client id is already an open order's: it may be this one). Any
#: other code is a refusal before anything was applied (a filter, the margin, the
#: signature, the clock); an error without a code (a proxy's 4xx) is unknown too.
UNKNOWN_CODES = (-1000, -1001, -1006, -1007, -4116)


class OutcomeUnknown(ExchangeError):
    """A request that changes the account was sent and nothing says whether it was
    applied: ask the exchange (by the order's client id) before anything else."""

    def __init__(self, what: str, cause: BaseException) -> None:
        super().__init__(f"{what}: outcome unknown ({cause}); ask the exchange, never resend")
        self.what = what
        self.cause = cause


class OrderPacer:
    """The account's order-count limits (``weights.ORDER_LIMITS``: 300 orders in 10 s,
    1,200 a minute), kept on this side: a new order waits until every window has room
    (at ``share`` of each limit), so a burst is spread out instead of refused with
    -1015 and a minute's wait. A sliding window of the orders' times, each counted from
    when it was let go until its answer came (the exchange counts it on arrival,
    somewhere in between); hand-written because the weight limiter counts weight per
    IP, and these count orders per account."""

    def __init__(self, share: float = 0.9, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:  # fmt: skip
        self.limits = [(ms / 1000, max(1, int(n * share))) for ms, n, _ in ORDER_LIMITS]
        self._sent: list[list[float]] = []  # [let go, answered] of each order
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self.waited_s = 0.0

    async def acquire(self) -> list[float]:
        """Wait for room; the order's cell (``done`` it once answered)."""
        async with self._lock:
            while True:
                now = self._clock()
                longest = max(w for w, _ in self.limits)
                self._sent = [c for c in self._sent if c[1] > now - longest]
                wait = 0.0
                for window, n in self.limits:
                    ends = sorted(c[1] for c in self._sent if c[1] > now - window)
                    if len(ends) >= n:
                        wait = max(wait, ends[len(ends) - n] + window - now)
                if wait <= 0:
                    cell = [now, float("inf")]  # in flight: counted in every window
                    self._sent.append(cell)
                    return cell
                # (an order still in flight ends the wait when answered: looked at often)
                wait = min(wait, 0.25)
                self.waited_s += wait
                await self._sleep(wait)

    def done(self, cell: list[float]) -> None:
        cell[1] = self._clock()

    def in_window(self, window_s: float) -> int:
        """Orders counted now in a window of ``window_s`` seconds (for the metrics)."""
        now = self._clock()
        return sum(1 for c in self._sent if c[1] > now - window_s)


class PrivateClient:
    """Signed requests for one account (``key``) over ``client``'s connection."""

    def __init__(self, client: AsterClient, key: V3Key | V1Key, *,
                 nonces: Nonces | None = None, recv_window_ms: int | None = None,
                 pacer: OrderPacer | None = None) -> None:  # fmt: skip
        self.client = client
        self.key = key
        self.nonces = nonces or Nonces()
        self.recv_window_ms = recv_window_ms
        self.pacer = pacer or OrderPacer()

    @property
    def version(self) -> str:
        return "v3" if isinstance(self.key, V3Key) else "v1"

    def path(self, endpoint: str) -> str:
        version = self.version
        if version == "v1":
            if endpoint in V3_ONLY:
                raise ValueError(f"{endpoint} is served under /fapi/v3 only: sign with V3")
            version = V1_VERSIONS.get(endpoint, "v1")
        return f"/fapi/{version}/{endpoint}"

    def _signed(self, params: dict[str, Any]) -> str:
        if isinstance(self.key, V3Key):
            return sign_v3(params, self.key, self.nonces())
        return sign_v1(params, self.key, int(time.time() * 1000), self.recv_window_ms)

    async def call(self, method: str, endpoint: str, params: dict[str, Any] | None = None,
                   *, changes: bool = False) -> Any:  # fmt: skip
        """The JSON answer of a signed request; ``changes``: it changes the account (a
        new order): sent once, ``OutcomeUnknown`` when its fate is unknown."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        path = self.path(endpoint)
        weight = private_weight(method, path, {k: str(v) for k, v in params.items()}) or 1
        what = f"{method} {path}"
        settings = self.client.settings
        first_failure: float | None = None
        attempt = 0
        while True:

            def signed() -> dict[str, Any]:
                # signed once the limiter lets it go: its timestamp or nonce fresh on arrival
                total = self._signed(params)
                headers = {}
                if isinstance(self.key, V1Key):
                    headers["X-MBX-APIKEY"] = self.key.api_key
                if method in ("GET", "DELETE"):
                    return {"headers": headers, "params": httpx.QueryParams(total)}
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                return {"headers": headers, "content": total.encode()}

            try:
                reply = await self.client.send_once(method, path, weight, prepare=signed)
                return reply.data
            except RateLimited as err:  # refused before anything was applied
                self.client.limiter.pause(err.retry_after)
                first_failure = first_failure or time.monotonic()
                if time.monotonic() - first_failure + err.retry_after > settings.retry_budget_s:
                    raise RetriesExhausted(what, attempt + 1, err) from err
                log.warning("%s: 429, waiting %.2f s", what, err.retry_after)
                await asyncio.sleep(err.retry_after)
            except APIError as err:
                if changes and (err.code is None or err.code in UNKNOWN_CODES):
                    raise OutcomeUnknown(what, err) from err
                raise
            except TemporaryError as err:
                if changes:
                    raise OutcomeUnknown(what, err) from err
                first_failure = first_failure or time.monotonic()
                attempt += 1
                delay = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (attempt - 1))
                spent = time.monotonic() - first_failure
                if attempt > settings.max_retries or spent + delay > settings.retry_budget_s:
                    raise RetriesExhausted(what, attempt, err, spent) from err
                log.warning("%s: %s; retry %d in %.2f s", what, err, attempt, delay)
                await asyncio.sleep(delay)

    # -- orders ---------------------------------------------------------------------

    async def new_order(self, **params: Any) -> dict:
        """Place an order (``symbol``, ``side``, ``type``, ``quantity``,
        ``newClientOrderId``, ...): sent once (``OutcomeUnknown``: ask by client id)."""
        cell = await self.pacer.acquire()
        try:
            return await self.call("POST", "order", _strings(params), changes=True)
        finally:
            self.pacer.done(cell)

    async def order(self, symbol: str, *, client_id: str | None = None,
                    order_id: int | None = None) -> dict:  # fmt: skip
        """An order as the exchange has it (APIError -2013: it does not exist)."""
        return await self.call("GET", "order", {"symbol": symbol, "orderId": order_id,
                                                "origClientOrderId": client_id})  # fmt: skip

    async def cancel(self, symbol: str, *, client_id: str | None = None,
                     order_id: int | None = None) -> dict:  # fmt: skip
        return await self.call("DELETE", "order", {"symbol": symbol, "orderId": order_id,
                                                   "origClientOrderId": client_id})  # fmt: skip

    async def cancel_all(self, symbol: str) -> dict:
        return await self.call("DELETE", "allOpenOrders", {"symbol": symbol})

    async def open_orders(self, symbol: str | None = None) -> list[dict]:
        return await self.call("GET", "openOrders", {"symbol": symbol})

    # -- the account ----------------------------------------------------------------

    async def positions(self, symbol: str | None = None) -> list[dict]:
        return await self.call("GET", "positionRisk", {"symbol": symbol})

    async def balance(self) -> list[dict]:
        return await self.call("GET", "balance")

    async def set_leverage(self, symbol: str, leverage: int) -> dict:
        return await self.call("POST", "leverage", {"symbol": symbol, "leverage": leverage})

    async def user_trades(self, symbol: str, **params: Any) -> list[dict]:
        return await self.call("GET", "userTrades", {"symbol": symbol, **params})

    async def listen_key(self) -> str:
        """A user-data stream key (the account's live one, extended, if it has one)."""
        return (await self.call("POST", "listenKey"))["listenKey"]

    async def keep_alive(self) -> None:
        await self.call("PUT", "listenKey")


def _strings(params: dict[str, Any]) -> dict[str, Any]:
    """Booleans as the exchange writes them; None left out."""
    return {k: ("true" if v else "false") if isinstance(v, bool) else v
            for k, v in params.items() if v is not None}  # fmt: skip
