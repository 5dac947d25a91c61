"""The replay's socket layer: ``http.server`` with HTTP/1.1 keep-alive and
``Content-Length``, so faults can be made on the raw socket.

:class:`HTTPServer` (one thread a connection, every connection tracked so ``stop``
can close them) hands each request to ``_Handler``, which draws the request's fault
(``faults.FaultSpec``), applies the weight rule (429, the 418 ban), asks the application
(``market.Replay``, or for the signed account endpoints its ``accounts``,
``account_api.AccountAPI``) for the answer and sends it with the used-weight header
(and the order counts). The market data answers GET only (405 otherwise); the account
endpoints GET, POST, PUT and DELETE, their parameters in the query and the
form-encoded body.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from asterai.exchange.replay.errors import JSON, ApiError
from asterai.exchange.replay.market import PREFIX, SPOT_EXCHANGE_INFO, Replay, market_path
from asterai.exchange.weights import private_weight

logger = logging.getLogger(__name__)


_5XX_BODIES = {
    500: {"code": -1000, "msg": "An unknown error occured while processing the request."},
    502: {
        "code": -1001,
        "msg": "Internal error; unable to process your request. Please try again.",
    },
    503: {
        "code": -1007,
        "msg": "Timeout waiting for response from backend server. "
        "Send status unknown; execution status unknown.",
    },
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AsterAI-replay/1"
    sys_version = ""
    timeout = 30  # idle keep-alive connections are closed after this many seconds
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm
    # and the client's delayed ACK add ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True

    server: HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    # ------------------------------------------------------------ sending

    def _send(
        self,
        status: int,
        body: bytes,
        *,
        extra: dict[str, str] | None = None,
        truncate: bool = False,
        head: bool = False,
    ) -> None:
        app = self.server.app
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header(app.weight_header, str(app.limiter.used()))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        app.stats._status(status)
        if head:
            return
        if truncate:
            self.wfile.write(body[: len(body) // 2])
            self._kill()
        else:
            self.wfile.write(body)

    def _kill(self) -> None:
        """Close the connection at once (no more bytes, no keep-alive)."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ------------------------------------------------------------ methods

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _body(self) -> str | None:
        """The form-encoded body (None when it cannot be read: the connection closes)."""
        length = self.headers.get("Content-Length")
        try:
            size = int(length) if length else 0
        except ValueError:
            return None
        if size < 0 or size > 1 << 20 or (not size and self.headers.get("Transfer-Encoding")):
            return None
        return self.rfile.read(size).decode("utf-8", "replace") if size else ""

    def _serve(self, method: str) -> None:
        app = self.server.app
        split = urlsplit(self.path)
        path = split.path
        pairs = parse_qsl(split.query, keep_blank_values=True)
        body = "" if method == "GET" else self._body()
        if body is None:
            self.close_connection = True
            self._send(400, JSON({"code": -1100, "msg": "Illegal characters found in a "
                                  "parameter: the body could not be read."}).encode())  # fmt: skip
            return
        pairs += parse_qsl(body, keep_blank_values=True)
        params: dict[str, str] = {}
        duplicated = False
        for key, value in pairs:
            if key in params:
                duplicated = True
            else:
                params[key] = value
        private = app.accounts is not None and private_weight(method, path, params) is not None
        if not private:
            path = market_path(path, app.routes)
            if method != "GET":
                self._not_allowed(read=False)
                return
        name = path[len(PREFIX) :] if path.startswith(PREFIX) else None
        known = private or name in app.routes or path == SPOT_EXCHANGE_INFO
        app.stats._request(split.path if known else "<other>")

        fault, fault_status = app.draw_fault()
        if fault is not None:
            app.stats._fault(fault)
        if fault == "drop":
            logger.debug("fault: dropping %s %s", method, self.path)
            self._kill()
            return
        if fault == "5xx":
            logger.debug("fault: %d for %s %s", fault_status, method, self.path)
            self._send(fault_status, JSON(_5XX_BODIES[fault_status]).encode())
            return
        if fault == "429":
            logger.debug("fault: spurious 429 for %s %s", method, self.path)
            body = {"code": -1003, "msg": app.too_many_msg()}
            self._send(429, JSON(body).encode(), extra={"Retry-After": "1"})
            return

        weight = (private_weight(method, path, params) if private
                  else app.weight_of(path, params))  # fmt: skip
        decision = app.limiter.admit(weight)
        if decision.status == 418:
            msg = (
                f"Way too many requests; IP banned until {decision.banned_until_ms}. "
                "Please use the websocket for live updates to avoid bans."
            )
            logger.debug("418 for %s %s (banned)", method, self.path)
            self._send(
                418,
                JSON({"code": -1003, "msg": msg}).encode(),
                extra={"Retry-After": str(decision.retry_after)},
            )
            return
        if decision.status == 429:
            logger.debug("429 for %s %s (weight %d, used %d)", method, self.path, weight,
                         decision.used)  # fmt: skip
            body = {"code": -1003, "msg": app.too_many_msg()}
            self._send(429, JSON(body).encode(), extra={"Retry-After": str(decision.retry_after)})
            return
        app.stats._served(weight)

        extra: dict[str, str] = {}
        try:
            if duplicated:
                raise ApiError(400, -1101, "Duplicate values for a parameter detected.")
            if private:
                status, answer, extra = app.accounts.handle(
                    method,
                    split.path,
                    split.query,
                    body,
                    self.headers.get("X-MBX-APIKEY"),
                    refuse_margin=fault == "margin",
                )
                body_bytes = JSON(answer).encode()
            else:
                status, body_bytes = app.handle(path, params)
        except ApiError as err:
            status, body_bytes = err.status, err.body()
        except Exception:  # a bug here must not kill the connection thread silently
            logger.exception("replay failed on %s %s", method, self.path)
            status, body_bytes = 500, JSON(_5XX_BODIES[500]).encode()
        if fault == "lost":  # applied, and the answer lost: the client cannot know
            logger.debug("fault: %s %s applied, its answer lost", method, self.path)
            if app.lost_as_drop():
                self._kill()
            else:
                self._send(503, JSON(_5XX_BODIES[503]).encode())
            return
        if fault == "slow":
            logger.debug("fault: delaying %s %s by %g s", method, self.path,
                         app.faults.slow_seconds)  # fmt: skip
            time.sleep(app.faults.slow_seconds)
        if fault == "truncate":
            logger.debug("fault: truncating %s %s", method, self.path)
        self._send(status, body_bytes, extra=extra, truncate=fault == "truncate")

    def _not_allowed(self, read: bool = True) -> None:
        app = self.server.app
        app.stats._request("<non-GET>")
        length = self.headers.get("Content-Length") if read else None
        try:
            size = int(length) if length else 0
        except ValueError:
            size = -1
        if 0 < size <= 1 << 20:
            self.rfile.read(size)
        elif size != 0 or self.headers.get("Transfer-Encoding"):
            self.close_connection = True
        body = {
            "code": -1020,
            "msg": f"This operation is not supported: {self.command} (GET only, but for "
            "the signed account endpoints of a replay with accounts).",
        }
        self._send(405, JSON(body).encode(), extra={"Allow": "GET"}, head=self.command == "HEAD")

    do_PATCH = do_OPTIONS = do_HEAD = _not_allowed


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: Replay) -> None:
        self.app = app
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(conn)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # called by socketserver inside its except block
        logger.debug(
            "connection from %s ended with an error: %r", client_address, sys.exc_info()[1]
        )
