"""Watching a trader from its own process (``asterai paper|live --watch-port N``): the
dashboard over its data root with what only the process knows (its streams, its last
error) and its Prometheus metrics at ``/metrics``, served by uvicorn in the trader's
event loop; and its alerts, sent from the same loop. Neither can stop the trading: the
server and the alerter are tasks of their own, whose failures are logged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from asterai.watch.alerts import Alerter, alert_urls
from asterai.watch.app import create_app
from asterai.watch.metrics import TraderMetrics
from asterai.watch.views import Source

log = logging.getLogger(__name__)


def feed_of(trader: Any) -> dict[str, Any]:
    """What a running trader knows of its market feed and its errors."""
    out: dict[str, Any] = {}
    streams = trader.follower.streams
    if streams is not None:
        st = streams.state
        out["streams open"] = f"{st.connected}/{st.connections}"
        out["bars pushed"] = st.pushed
        out["reconnects"] = st.reconnects
    else:
        out["market"] = "REST polling after each close"
    out["exchange errors"] = trader.state.exchange_errors
    if trader.state.last_error:
        out["last error"] = trader.state.last_error
    if trader.state.kill_requested_ms is not None and not trader.state.stopped:
        out["kill switch"] = f"asked ({trader.state.kill_source}): flattening"
    return out


def attach_metrics(trader: Any, kind: str) -> TraderMetrics:
    """The trader's metrics, fed by it from now on."""
    trader.metrics = TraderMetrics(kind)
    return trader.metrics


def trader_app(trader: Any, kind: str, token: str) -> Any:
    """The dashboard of ``trader``'s own account (``kind``), with its metrics."""
    metrics = trader.metrics or attach_metrics(trader, kind)
    settings = trader.plan.settings

    def feed(src: Source) -> dict[str, Any] | None:
        return feed_of(trader) if src.kind == kind else None

    def now_ms() -> int:
        return trader.follower.clock.now_ms() or int(time.time() * 1000)

    return create_app(
        [settings.data_root], token=token, always=(kind,), registry=metrics.registry,
        feed=feed, now_ms=now_ms,
        live_settings=(settings.live.min_paper_days, settings.live.tracking_tolerance),
    )  # fmt: skip


class TraderServer(uvicorn.Server):
    """uvicorn, leaving SIGTERM and SIGINT to the trader (its stop finishes the bar being
    traded first); uvicorn would take them over while it serves."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def watch_while(trader: Any, kind: str, work: asyncio.Task, *, host: str | None,
                      port: int | None, token: str | None) -> None:  # fmt: skip
    """Serve the trader's dashboard (``port`` set) and send its alerts (where
    ``ASTERAI_ALERT_URLS`` names targets) until ``work`` is done."""
    tasks = []
    server = None
    if port is not None:
        config = uvicorn.Config(trader_app(trader, kind, token), host=host or "127.0.0.1",
                                port=port, log_level="warning", access_log=False)  # fmt: skip
        server = TraderServer(config)
        tasks.append(asyncio.create_task(server.serve()))
    stop = asyncio.Event()
    urls = alert_urls()
    if urls:
        w = trader.plan.settings.watch
        alerter = Alerter(trader.journal_path, urls, account=kind,
                          interval_s=w.alert_interval_s, error_streak=w.error_streak)  # fmt: skip
        tasks.append(asyncio.create_task(alerter.run(stop, w.poll_s)))
    if not tasks:
        return
    await asyncio.wait([work], return_when=asyncio.ALL_COMPLETED)
    stop.set()
    if server is not None:
        server.should_exit = True
    done, pending = await asyncio.wait(tasks, timeout=10)
    for t in pending:
        t.cancel()
    for t in done:
        with contextlib.suppress(asyncio.CancelledError):
            if t.exception() is not None:
                log.warning("watch: %s", t.exception())
