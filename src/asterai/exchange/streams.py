"""Aster's websocket kline streams: each closed bar pushed at its close.

Polling 200 symbols' klines after every close is 200 requests a bar, at the client's
few requests in flight; the exchange's own documentation recommends its websocket
streams for live data. ``KlineStreams`` keeps the combined streams
(``/stream?streams=<symbol>@kline_<interval>/...``, at most ``MAX_STREAMS`` a
connection, as the exchange allows) open, reconnecting with a jittered, doubling
backoff, and hands each **closed** kline (``k.x`` true; the updates of a bar still
open are ignored) to a callback, in the REST kline format so one parser reads both.

The stream only adds speed: the REST history stays the reference. The follower takes
a pushed bar only when it extends the symbol's held bars by exactly one step, asks
REST for anything a reconnect or a lost message left out, and drops a bar it already
holds, so a reconnect neither misses nor repeats a bar (``deploy.follow``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from asterai.exchange.client import parse_klines
from asterai.exchange.errors import ExchangeError

log = logging.getLogger(__name__)

#: streams one connection may listen to (the exchange's rule)
MAX_STREAMS = 200


def stream_name(symbol: str, interval: str) -> str:
    """The exchange's name of a kline stream (symbols in lower case)."""
    return f"{symbol.lower()}@kline_{interval}"


def closed_kline(message: Any) -> tuple[str, str, dict[str, np.ndarray], int] | None:
    """(symbol, interval, the bar as ``parse_klines`` columns, event time) of a combined
    stream message carrying a closed kline; None for anything else (an open bar's
    update, a subscription's answer)."""
    data = message.get("data") if isinstance(message, dict) else None
    if not isinstance(data, dict) or data.get("e") != "kline":
        return None
    k = data.get("k")
    if not isinstance(k, dict) or k.get("x") is not True:
        return None
    row = [k.get(f) for f in ("t", "o", "h", "l", "c", "v", "T", "q", "n", "V", "Q", "B")]
    try:
        cols = parse_klines([row])
    except ExchangeError as err:
        raise ExchangeError(f"a kline stream sent a malformed bar: {str(k)[:160]}") from err
    return str(k.get("s") or data.get("s")), str(k.get("i")), cols, int(data.get("E") or 0)


@dataclass(slots=True)
class StreamState:
    connected: int = 0  # connections open now
    connections: int = 0  # connections wanted
    reconnects: int = 0
    pushed: int = 0  # closed klines received
    last_error: str | None = None


class KlineStreams:
    """The closed klines of ``pairs`` ((symbol, interval)) from ``ws_url``, handed to
    ``on_closed(symbol, interval, cols, event_ms)`` as they come."""

    def __init__(
        self,
        ws_url: str,
        pairs: list[tuple[str, str]],
        on_closed: Callable[[str, str, dict[str, np.ndarray], int], None],
        *,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        open_timeout_s: float = 10.0,
    ) -> None:
        self.ws_url = ws_url.rstrip("/")
        names = [stream_name(s, iv) for s, iv in pairs]
        self.groups = [names[i : i + MAX_STREAMS] for i in range(0, len(names), MAX_STREAMS)]
        self.on_closed = on_closed
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.open_timeout_s = open_timeout_s
        self.state = StreamState(connections=len(self.groups))
        self._open: set[int] = set()

    @property
    def live(self) -> bool:
        """Every connection is open."""
        return bool(self.groups) and self.state.connected == len(self.groups)

    def url(self, group: int) -> str:
        return f"{self.ws_url}/stream?streams={'/'.join(self.groups[group])}"

    async def run(self, stop: asyncio.Event) -> None:
        """Keep every connection open until ``stop`` is set."""
        tasks = [asyncio.create_task(self._keep(g, stop)) for g in range(len(self.groups))]
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _keep(self, group: int, stop: asyncio.Event) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidURI

        failures = 0
        while not stop.is_set():
            try:
                async with connect(
                    self.url(group), open_timeout=self.open_timeout_s, max_size=2**22,
                    ping_interval=60, ping_timeout=60,
                ) as ws:  # fmt: skip
                    failures = 0
                    self._open.add(group)
                    self.state.connected = len(self._open)
                    async for raw in ws:
                        got = closed_kline(json.loads(raw))
                        if got is not None:
                            self.state.pushed += 1
                            self.on_closed(*got)
            except asyncio.CancelledError:
                raise
            except InvalidURI as err:
                self.state.last_error = f"invalid websocket URL {self.ws_url!r}: {err}"
                log.error("%s", self.state.last_error)
                return
            except Exception as err:  # noqa: BLE001  a stream must outlive any one failure
                self.state.last_error = f"{type(err).__name__}: {err}"
                log.warning("kline stream %d: %s", group, self.state.last_error)
            finally:
                if group in self._open:
                    self._open.discard(group)
                    self.state.connected = len(self._open)
            if stop.is_set():
                return
            failures += 1
            self.state.reconnects += 1
            delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (failures - 1))
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
