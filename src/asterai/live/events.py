"""The user-data stream between bars: the exchange telling the account's order updates
as they happen, so a filled stop cancels its target (and a target its stop) at once,
not at the next close.

REST stays the reference: every close settles, reconciles and reads the account back
whatever the stream said (``trader.live_bar``). The stream only brings news sooner,
and every event goes through the journal's ``advance``, which takes a report only when
it is news by the order-state table (STYLE.md, "Order states are data"): an event
delivered twice, or late behind a newer one (the exchange warns its payloads "are not
guaranteed to be in order during heavy periods"), or lost, changes nothing the next
close would not set right.

``UserStream`` keeps one connection to ``{ws}/ws/{listenKey}``: the key from ``POST
listenKey``, extended every ``keepalive_s`` (the exchange's keys expire after 60
minutes without it); on ``listenKeyExpired``, a closed connection or any error, a new
key and a new connection after a jittered, doubling backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asterai.exchange.private import PrivateClient

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StreamState:
    connected: bool = False
    connections: int = 0
    events: int = 0  # ORDER_TRADE_UPDATE events received
    expired: int = 0  # listenKeyExpired received
    keepalives: int = 0
    last_error: str | None = None


class UserStream:
    """The account's order updates, each handed to ``on_order(o, event_ms)`` (the
    event's ``o`` object)."""

    def __init__(self, api: PrivateClient, ws_url: str,
                 on_order: Callable[[dict[str, Any], int], Awaitable[None]], *,
                 keepalive_s: float = 1800.0, backoff_s: tuple[float, float] = (0.5, 30.0),
                 open_timeout_s: float = 10.0) -> None:  # fmt: skip
        self.api = api
        self.ws_url = ws_url.rstrip("/")
        self.on_order = on_order
        self.keepalive_s = keepalive_s
        self.backoff_s = backoff_s
        self.open_timeout_s = open_timeout_s
        self.state = StreamState()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the stream until ``stop`` is set."""
        from websockets.asyncio.client import connect

        failures = 0
        while not stop.is_set():
            keeper: asyncio.Task | None = None
            try:
                key = await self.api.listen_key()
                async with connect(f"{self.ws_url}/ws/{key}", open_timeout=self.open_timeout_s,
                                   ping_interval=60, ping_timeout=60) as ws:  # fmt: skip
                    failures = 0
                    self.state.connected = True
                    self.state.connections += 1
                    keeper = asyncio.create_task(self._keep_alive())
                    async for raw in ws:
                        message = json.loads(raw)
                        kind = message.get("e")
                        if kind == "listenKeyExpired":
                            self.state.expired += 1
                            log.info("user-data stream: the listen key expired; a new one")
                            break
                        if kind == "ORDER_TRADE_UPDATE":
                            self.state.events += 1
                            await self.on_order(message["o"], int(message.get("E", 0)))
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - the stream outlives any one failure
                self.state.last_error = f"{type(err).__name__}: {err}"
                log.warning("user-data stream: %s", self.state.last_error)
            finally:
                self.state.connected = False
                if keeper is not None:
                    keeper.cancel()
            if stop.is_set():
                return
            failures += 1
            delay = min(self.backoff_s[1], self.backoff_s[0] * 2 ** (failures - 1))
            try:
                await asyncio.wait_for(stop.wait(), delay * (0.5 + random.random() / 2))
            except TimeoutError:
                pass

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            try:
                await self.api.keep_alive()
                self.state.keepalives += 1
            except Exception as err:  # noqa: BLE001 - the next connection gets a new key
                self.state.last_error = f"keepalive: {type(err).__name__}: {err}"
                log.warning("user-data stream: %s", self.state.last_error)
