"""The replay's websocket kline streams, as the exchange serves them.

Combined streams at ``/stream?streams=<symbol>@kline_<interval>/...`` (each message
``{"stream": name, "data": payload}``) and raw ones at ``/ws/<name>`` (the payload
alone), at most ``streams.MAX_STREAMS`` a connection; an unknown stream or too many
close the connection with code 1008 and the reason. On a played-forward clock each
subscribed bar is pushed once, when it closes (a lagging symbol's when its lag has
passed), as the exchange's final ``kline`` event (``"x": true``): the recording holds
each bar's final values only, so the updates of a bar still open, which would be its
future, are never sent. Bars closed before a connection opened are not pushed to it
(a stream carries what happens from then on; REST has the history). Fields the
recording lacks (trades, taker-buy quote volume, first and last trade ids) are
``null``. ``drop()`` closes every connection (the exchange dropping its streams).
With accounts, ``/ws/<listenKey>`` is a user-data stream instead (``events.py``).

Built on ``websockets``' threaded server (one thread a connection), beside the REST
server's threads; both read the same recording and clock.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from asterai.exchange.streams import MAX_STREAMS
from asterai.intervals import EXCHANGE_INTERVALS

if TYPE_CHECKING:
    from asterai.exchange.replay.market import Replay
    from asterai.exchange.replay.recording import KlineSeries

logger = logging.getLogger(__name__)

#: how often a connection looks at a running clock (a stepped one wakes it at once)
LOOK_S = 0.05


def kline_event(series: KlineSeries, i: int, event_ms: int) -> dict:
    """Bar ``i`` of ``series`` as the exchange's closed ``kline`` event."""
    row = series.row(i)  # the REST array: unrecorded fields are None
    return {
        "e": "kline",
        "E": int(event_ms),
        "s": series.symbol,
        "k": {
            "t": row[0], "T": row[6], "s": series.symbol, "i": series.interval,
            "f": None, "L": None, "o": row[1], "c": row[4], "h": row[2], "l": row[3],
            "v": row[5], "n": row[8], "x": True, "q": row[7], "V": row[9], "Q": row[10],
            "B": None,
        },
    }  # fmt: skip


class StreamServer:
    """Serves ``app``'s kline streams on ``host:port`` (0: any free port)."""

    def __init__(self, app: Replay, host: str = "127.0.0.1", port: int = 0) -> None:
        if app.play is None:
            raise ValueError("kline streams need a running clock (clock_speed or play_from_ms)")
        self.app = app
        self.host = host
        self.port = port
        self._server = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: set = set()
        self._generation = 0  # bumped by drop(): every connection of an older one closes
        self.pushed = 0

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self) -> StreamServer:
        from websockets.sync.server import serve

        self._server = serve(
            self._handle, self.host, self.port, compression=None, process_request=self._opening
        )
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"asterai-replay-ws:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self.drop()
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def drop(self) -> int:
        """Close every open connection; how many there were."""
        with self._lock:
            self._generation += 1
            conns = list(self._connections)
        for ws in conns:
            ws.close(1011, "the replay dropped its streams")
        return len(conns)

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def _opening(self, connection, request) -> None:
        """Before the handshake's answer: the published time the stream starts after (a
        bar closing while the handshake completes is the stream's, not history); for a
        user-data stream, its account and the events it starts after, fixed here (the
        key may expire before the connection's thread runs: its expiry is then the
        stream's first event, not a refusal)."""
        connection.asterai_since = self.app.now
        connection.asterai_user = self._user_key(request.path)

    def _subscriptions(self, path: str) -> tuple[list[tuple[str, KlineSeries]], bool, str | None]:
        """(stream name, series) per stream asked for, combined or raw, and an error."""
        parts = urlsplit(path)
        if parts.path.rstrip("/") == "/stream":
            names = [n for n in parse_qs(parts.query).get("streams", [""])[0].split("/") if n]
            combined = True
        elif parts.path.startswith("/ws/"):
            names, combined = [parts.path[len("/ws/") :]], False
        else:
            return [], False, f"unknown path {parts.path}: use /stream?streams= or /ws/<stream>"
        if not names:
            return [], combined, "no stream named"
        if len(names) > MAX_STREAMS:
            return [], combined, f"{len(names)} streams: at most {MAX_STREAMS} a connection"
        subs = []
        for name in names:
            symbol, _, kind = name.partition("@")
            interval = kind[len("kline_") :] if kind.startswith("kline_") else None
            series = (
                self.app.rec.series(symbol.upper(), interval)
                if interval in EXCHANGE_INTERVALS and symbol == symbol.lower()
                else None
            )
            if series is None:
                return [], combined, f"Invalid stream: {name}"
            subs.append((name, series))
        return subs, combined, None

    def _user_key(self, path: str) -> tuple[str, str, int] | None:
        """For a user-data stream path (``/ws/<listenKey>`` of a live key): the key, its
        account and how many of the account's events came before (None otherwise)."""
        api = self.app.accounts
        parts = urlsplit(path)
        if api is None or not parts.path.startswith("/ws/"):
            return None
        key = parts.path[len("/ws/") :]
        user = api.user_of_listen_key(key)
        if user is None:
            return None
        return key, user, len(api.engine.accounts[user].events)

    def _pump(self, ws, due) -> None:
        """Send ``due()``'s messages to ``ws`` as the clock moves, until the connection
        closes, the streams are dropped, or ``due()`` says the stream ended (None)."""
        from websockets.exceptions import ConnectionClosed

        with self._lock:
            generation = self._generation
            self._connections.add(ws)
        try:
            while True:
                with self._lock:
                    if self._generation != generation:
                        return
                messages = due()
                if messages is None:
                    ws.close(1000, "the listenKey was closed")
                    return
                for message in messages:
                    ws.send(message)
                    with self._lock:
                        self.pushed += 1
                self.app.play.wait_change(LOOK_S)
                try:  # the client's messages are not answered; a close ends the loop
                    ws.recv(timeout=0)
                except TimeoutError:
                    pass
        except ConnectionClosed:
            return
        finally:
            with self._lock:
                self._connections.discard(ws)

    def _handle(self, ws) -> None:
        opened = getattr(ws, "asterai_user", None)
        if opened is not None:  # the user-data stream (``events.py``) of the key's account
            from asterai.exchange.replay.events import UserStream

            app = self.app
            key, user, since = opened
            stream = UserStream(app.accounts, key, user, since, app.event_faults, app.event_rng,
                                app.event_lock)  # fmt: skip
            self._pump(ws, stream.due)
            return
        subs, combined, error = self._subscriptions(ws.request.path)
        if error is not None:
            ws.close(1008, error[:120])
            return
        app, clock = self.app, self.app.play
        # bars closed before the connection are the history: REST's, not the stream's
        since = getattr(ws, "asterai_since", app.now)
        sent = [app.served_count(s.symbol, s, at=since) for _, s in subs]

        def due() -> list[str]:
            now, out = clock.now_ms(), []
            for k, (name, series) in enumerate(subs):
                have = app.served_count(series.symbol, series)
                for i in range(sent[k], have):
                    payload = kline_event(series, i, now)
                    out.append(json.dumps({"stream": name, "data": payload} if combined
                                          else payload, separators=(",", ":")))  # fmt: skip
                sent[k] = max(sent[k], have)
            return out

        self._pump(ws, due)
