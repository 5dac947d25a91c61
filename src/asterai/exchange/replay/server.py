"""The replay server: :class:`ReplayServer` (one replay of a recording, started and
stopped, with its REST server and, played forward, its kline streams) and
:func:`serve` (the ``asterai replay`` command)."""

from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Self

from asterai.exchange.replay.account_api import AccountAPI
from asterai.exchange.replay.accounts import Costs, instruments_of
from asterai.exchange.replay.auth import Credentials
from asterai.exchange.replay.clock import PlayClock
from asterai.exchange.replay.events import EventFaults
from asterai.exchange.replay.faults import FaultSpec
from asterai.exchange.replay.http import HTTPServer
from asterai.exchange.replay.market import Replay
from asterai.exchange.replay.matching import Engine
from asterai.exchange.replay.recording import Recording, load_recording
from asterai.exchange.replay.stats import ReplayStats
from asterai.exchange.weights import DEFAULT_WEIGHT_LIMIT

logger = logging.getLogger(__name__)


class ReplayServer:
    """Serve ``recording`` over HTTP on ``host:port`` (port 0: any free port).

    ``window_seconds``/``weight_limit``: the REQUEST_WEIGHT rule enforced and
    declared (60 s and 2400 like the real exchange; a shortened window must be
    a whole number of seconds). ``faults``: see :class:`FaultSpec`; drawn from
    ``random.Random(seed)`` (seed 0 when ``None``) so runs are reproducible.
    ``ban_after``: further requests tolerated in a window after a 429 before a
    418 ban of ``ban_seconds`` (default: two windows). ``clock_speed``: a running
    clock (``/fapi/v1/time`` advances from the recording's time at that many times
    wall time) for following the market past the recording's end, where no new bar
    comes: what the signal service sees when the exchange sends nothing new. The bar
    still open at the recording's time is then never served.

    ``play_from_ms``: play the recording forward as if live from that time: the clock
    starts there and runs at ``clock_speed`` (default 1; 0: it moves only when told,
    ``clock.advance``), bars close on it and the klines and funding endpoints serve only
    what has closed (never an open bar: the recording holds each bar's final values
    only). ``clock.pause()`` stalls the feed (the time goes on, no bar closes) until
    ``clock.resume()``; ``set_faults("drop=1")`` drops every connection.

    ``streams``: also serve the exchange's websocket kline streams (a played-forward
    clock only) at ``ws_url``, each bar pushed when it closes
    (``streams.py``); ``drop_streams()`` closes their connections.

    ``accounts``: an exchange to trade against too: that many throwaway accounts of
    ``balance`` USDT each (``credentials``; more with ``new_account``), the signed
    account endpoints under ``/fapi/v1`` (V1 keys) and ``/fapi/v3`` (API wallets),
    orders matched over the recording as the clock plays (``matching.py``, charging
    ``costs``), and with ``streams`` the user-data stream at ``ws_url/ws/<listenKey>``
    (its events faulted by ``event_faults``: ``events.EventFaults``).
    """

    def __init__(
        self,
        recording: Recording,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        window_seconds: float = 60.0,
        weight_limit: int = DEFAULT_WEIGHT_LIMIT,
        faults: FaultSpec | str | None = None,
        seed: int | None = None,
        ban_after: int = 3,
        ban_seconds: float | None = None,
        clock_speed: float | None = None,
        play_from_ms: int | None = None,
        streams: bool = False,
        accounts: int | None = None,
        balance: Decimal | str = "1000",
        costs: Costs | None = None,
        event_faults: EventFaults | str | None = None,
    ) -> None:
        if streams and play_from_ms is None and clock_speed is None:
            raise ValueError("kline streams need a running clock (clock_speed or play_from_ms)")
        if clock_speed is not None and not (
            clock_speed > 0 or (clock_speed == 0 and play_from_ms is not None)
        ):
            raise ValueError(
                f"clock_speed must be > 0 (0 only with play_from_ms), got {clock_speed!r}"
            )
        if play_from_ms is not None and not play_from_ms <= recording.now_ms:
            raise ValueError(
                f"play_from_ms {play_from_ms} lies after the recording's end ({recording.now_ms})"
            )
        if not (isinstance(window_seconds, (int, float)) and window_seconds > 0):
            raise ValueError(f"window_seconds must be > 0, got {window_seconds!r}")
        if window_seconds != 60 and (window_seconds < 1 or window_seconds != int(window_seconds)):
            raise ValueError(
                f"a shortened rate window must be a whole number of seconds >= 1 "
                f"(it is declared as SECOND x intervalNum), got {window_seconds!r}"
            )
        if int(weight_limit) != weight_limit or weight_limit < 1:
            raise ValueError(f"weight_limit must be a positive integer, got {weight_limit!r}")
        if ban_after < 0:
            raise ValueError(f"ban_after must be >= 0, got {ban_after!r}")
        if isinstance(faults, str):
            faults = FaultSpec.parse(faults)
        self.recording = recording
        self.host = host
        self.port = port
        self.window_seconds = float(window_seconds)
        self.weight_limit = int(weight_limit)
        self.faults = faults or FaultSpec()
        self.seed = seed
        self._app = Replay(
            recording,
            self.window_seconds,
            self.weight_limit,
            self.faults,
            seed,
            ban_after,
            float(ban_seconds) if ban_seconds is not None else 2 * self.window_seconds,
            clock_speed,
            play_from_ms,
        )
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.streams = streams
        self._ws = None
        #: the throwaway accounts made at the start (``accounts``), their keys
        self.credentials: list[Credentials] = []
        if accounts is not None:
            if accounts < 0:
                raise ValueError(f"accounts must be >= 0, got {accounts!r}")
            engine = Engine(instruments_of(recording), costs or Costs(), self._app.now)
            self._app.accounts = AccountAPI(engine, lambda: self._app.now)
            self._app.event_faults = (EventFaults.parse(event_faults)
                                      if isinstance(event_faults, str | None) else event_faults)  # fmt: skip
            self.credentials = [self.new_account(balance) for _ in range(accounts)]

    @property
    def accounts(self) -> AccountAPI:
        """The signed account endpoints and their engine (a replay with ``accounts``)."""
        if self._app.accounts is None:
            raise RuntimeError("this replay has no accounts: start it with accounts=N")
        return self._app.accounts

    def new_account(self, balance: Decimal | str = "1000") -> Credentials:
        """A funded throwaway account (``balance`` USDT): its user's and API wallet's
        addresses and keys, and a V1 key and secret."""
        return self.accounts.open_account(Decimal(str(balance)))

    @property
    def stats(self) -> ReplayStats:
        return self._app.stats

    @property
    def now_ms(self) -> int:
        """What the served data stands at (with a running clock: what has closed)."""
        return self._app.now

    @property
    def clock(self) -> PlayClock:
        """The running clock (``clock_speed`` or ``play_from_ms``)."""
        if self._app.play is None:
            raise RuntimeError("this replay's clock is frozen: start it with clock_speed")
        return self._app.play

    @property
    def ws_url(self) -> str:
        """The kline streams' base URL (``ws://host:port``; started with ``streams``)."""
        if self._ws is None:
            raise RuntimeError("this replay serves no streams: start it with streams=True")
        return self._ws.url

    def drop_streams(self) -> int:
        """Close every kline stream connection (the exchange dropping them); how many."""
        return self._ws.drop() if self._ws is not None else 0

    @property
    def stream_connections(self) -> int:
        return self._ws.connections if self._ws is not None else 0

    def set_faults(self, faults: FaultSpec | str | None) -> None:
        """Switch the faults while serving (``"drop=1"``: every connection dropped, an
        exchange that stops answering)."""
        if isinstance(faults, str):
            faults = FaultSpec.parse(faults)
        self.faults = faults or FaultSpec()
        self._app.faults = self.faults

    @property
    def weight_header(self) -> str:
        """Name of the used-weight response header, e.g. ``X-MBX-USED-WEIGHT-1M``."""
        return self._app.weight_header

    @property
    def rate_limit(self) -> dict[str, Any]:
        """The REQUEST_WEIGHT entry declared in ``exchangeInfo.rateLimits``."""
        return dict(self._app.rate_limit)

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the replay server is not started; call start() first")
        host, port = self._httpd.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._httpd = HTTPServer((self.host, self.port), self._app)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"asterai-replay:{self.port}",
            daemon=True,
        )
        self._thread.start()
        if self.streams:
            from asterai.exchange.replay.streams import StreamServer

            self._ws = StreamServer(self._app, self.host).start()
        logger.info(
            "replay of %s (%s layout, clock %d) serving at %s",
            self.recording.folder,
            self.recording.layout,
            self._app.now,
            self.base_url,
        )
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        if self._ws is not None:
            self._ws.stop()
            self._ws = None
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None
        logger.info("replay server stopped: %s", self.stats.snapshot())

    def wait(self) -> None:
        """Block until the server stops (``KeyboardInterrupt`` passes through)."""
        thread = self._thread
        while thread is not None and thread.is_alive():
            thread.join(0.5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def account_lines(n: int, creds: Credentials, balance: Decimal | str, server: ReplayServer) -> str:
    """How a throwaway account is printed: everything a client needs to sign for it
    (these keys exist in this replay only)."""
    lines = [
        f"account {n}: {balance} USDT (replay keys, never real ones)",
        f"  user (main wallet)   {creds.user.address}",
        f"  user private key     {creds.user.private_key}",
        f"  API wallet (signer)  {creds.api_wallet.address}",
        f"  API wallet key       {creds.api_wallet.private_key}",
        f"  V1 API key           {creds.api_key}",
        f"  V1 API secret        {creds.api_secret}",
        f"  REST                 {server.base_url}  (/fapi/v3 signed by the API wallet, "
        "/fapi/v1 by the V1 key)",
    ]
    if server.streams:
        lines.append(f"  user-data stream     {server.ws_url}/ws/<listenKey>  (POST "
                     "/fapi/v3/listenKey)")  # fmt: skip
    return "\n".join(lines)


def serve(
    folder: Path | str,
    host: str = "127.0.0.1",
    port: int = 0,
    window_seconds: float = 60.0,
    weight_limit: int = DEFAULT_WEIGHT_LIMIT,
    faults: FaultSpec | str | None = None,
    now_ms: int | None = None,
    *,
    seed: int | None = None,
    play_from_ms: int | None = None,
    speed: float | None = None,
    accounts: int | None = None,
    balance: Decimal | str = "1000",
    event_faults: EventFaults | str | None = None,
) -> None:
    """Load ``folder`` and serve it until Ctrl-C (for the ``asterai replay`` command).
    ``play_from_ms``/``speed``: play it forward as if live (see ``ReplayServer``), with
    the kline streams.

    Prints the base URL on stdout; raises ``RecordingError``/``ValueError`` for
    a bad folder, fault spec or window before anything is served.
    """
    recording = load_recording(folder, now_ms)
    server = ReplayServer(
        recording,
        host=host,
        port=port,
        window_seconds=window_seconds,
        weight_limit=weight_limit,
        faults=faults,
        seed=seed,
        clock_speed=speed if speed is not None or play_from_ms is None else 1.0,
        play_from_ms=play_from_ms,
        streams=play_from_ms is not None,
        accounts=accounts,
        balance=balance,
        event_faults=event_faults,
    )
    server.start()
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(recording.now_ms / 1000))
    if play_from_ms is not None:
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(play_from_ms / 1000))
        print(
            f"playing forward from {start} UTC at {server.clock.speed:g}x "
            f"(the recording ends at {when} UTC)",
            flush=True,
        )
    print(
        f"AsterAI replay of {recording.folder} ({recording.layout} layout, "
        f"{len(recording.symbols)} symbols, clock {recording.now_ms} = {when} UTC, "
        f"weight limit {server.weight_limit} per {server.window_seconds:g} s, "
        f"faults: {server.faults})",
        flush=True,
    )
    print(f"serving at {server.base_url}  (Ctrl-C stops)", flush=True)
    if server.streams:
        print(f"kline streams at {server.ws_url}  (--ws-url {server.ws_url})", flush=True)
    for n, creds in enumerate(server.credentials, 1):
        print(account_lines(n, creds, balance, server), flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        snap = server.stats.snapshot()
        print(
            f"stopped after {snap['requests']} requests, weight {snap['weight']}, "
            f"{snap['sent_429']} x 429, {snap['sent_418']} x 418, faults {snap['faults']}",
            flush=True,
        )
