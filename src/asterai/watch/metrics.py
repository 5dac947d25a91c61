"""Prometheus metrics (``prometheus-client``) of a trader and of the signal service.

Each process has its own registry (never the library's global one, so two traders in one
test process, or a trader and its dashboard, do not mix), served as Prometheus' text
format at ``/metrics`` by the watch app (``--watch-port``) and by ``asterai serve``.

A trader's metrics (``TraderMetrics``), labelled by ``account`` (``paper`` or ``live``)
and, where an account has two books, ``book`` (``simulated``: paper trading's account,
or a live account's shadow; ``exchange``: the live account itself):

- ``asterai_bar_close_to_commit_seconds`` (histogram): a bar's close to its journal
  commit, the time the account took to act on it;
- ``asterai_bars_total{late}``; ``asterai_last_bar_close_timestamp_seconds``;
- ``asterai_equity_usdt``, ``asterai_drawdown_ratio`` (below the kernel's peak: the
  highest close since the start, the capital included, as the breaker measures it),
  ``asterai_open_positions``;
- ``asterai_rejections_total{reason}``: orders the strategy's step refused (the
  backtest's reasons) or, on the ``exchange`` book, the exchange (its error code);
- ``asterai_stale`` (1 while the next bar is overdue), ``asterai_controls{control}``
  (kill, paused, breaker, reduce_only: 1 while in force);
- ``asterai_errors_total{kind}``: errors caught and retried, by type (``exchange`` for
  the exchange's);
- ``asterai_exchange_weight_used`` and ``asterai_exchange_weight_budget`` (the request
  weight booked in the rate limiter's window, read when scraped), and for live
  ``asterai_exchange_orders_in_window{window}`` (the order pacer's count).

The service's (``ServiceCollector``) are read from the follower when scraped:
``asterai_service_stale``, ``asterai_service_last_bar_close_timestamp_seconds``,
``asterai_service_close_to_signals_seconds`` (the newest bar's close to its signals),
``asterai_service_errors_total{kind}``, ``asterai_service_polls_total``,
``asterai_service_refused_bars_total`` and the exchange weight.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

#: seconds from a bar's close to its commit: a bar is normally committed within a few
#: seconds; a late one (a restart, a stalled exchange) within minutes or hours
CLOSE_TO_COMMIT_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)
CONTROLS = ("kill", "paused", "breaker", "reduce_only")
#: an exchange error code (``-2019``)
CODE = re.compile(r"-?\d{1,6}")


class TraderMetrics:
    """The metrics of one trader (``account``: ``paper`` or ``live``), in ``registry``."""

    def __init__(self, account: str, registry: CollectorRegistry | None = None) -> None:
        self.account = account
        self.registry = r = registry if registry is not None else CollectorRegistry()
        a = ["account"]
        self.close_to_commit = Histogram(
            "asterai_bar_close_to_commit_seconds", "A bar's close to its journal commit",
            a, buckets=CLOSE_TO_COMMIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.bars = Counter("asterai_bars", "Bars journaled (late: seen after max_delay_s)",
                            [*a, "late"], registry=r)  # fmt: skip
        self.last_bar = Gauge("asterai_last_bar_close_timestamp_seconds",
                              "The close of the newest bar journaled (Unix seconds)", a,
                              registry=r)  # fmt: skip
        book = [*a, "book"]
        self.equity = Gauge("asterai_equity_usdt", "Equity at the newest close", book,
                            registry=r)  # fmt: skip
        self.drawdown = Gauge("asterai_drawdown_ratio",
                              "1 - equity / its peak since the account's start", book,
                              registry=r)  # fmt: skip
        self.open_positions = Gauge("asterai_open_positions", "Positions open", book,
                                    registry=r)  # fmt: skip
        self.rejections = Counter(
            "asterai_rejections", "Orders refused, by reason (the exchange's code on the "
            "exchange book)", [*book, "reason"], registry=r,
        )  # fmt: skip
        self.stale = Gauge("asterai_stale", "1 while the next bar is overdue", a, registry=r)
        self.controls = Gauge("asterai_controls", "1 while a control is in force",
                              [*a, "control"], registry=r)  # fmt: skip
        self.errors = Counter("asterai_errors", "Errors caught and retried, by kind",
                              [*a, "kind"], registry=r)  # fmt: skip
        self.weight_used = Gauge("asterai_exchange_weight_used",
                                 "Request weight booked in the limiter's window", a,
                                 registry=r)  # fmt: skip
        self.weight_budget = Gauge("asterai_exchange_weight_budget",
                                   "The weight the limiter lets through per window", a,
                                   registry=r)  # fmt: skip
        self.orders_window = Gauge("asterai_exchange_orders_in_window",
                                   "Orders counted by the order pacer in each window",
                                   [*a, "window"], registry=r)  # fmt: skip
        self.stale.labels(account).set(0)
        for c in CONTROLS:
            self.controls.labels(account, c).set(0)

    # -- what the trader reports ---------------------------------------------------

    def book(self, book: str, equity: float, open_positions: int, peak: float) -> None:
        """A book's equity, positions and drawdown from ``peak`` (the kernel's: the
        highest equity at a close since the start, the capital included)."""
        self.equity.labels(self.account, book).set(equity)
        self.drawdown.labels(self.account, book).set(1.0 - equity / peak if peak > 0 else 0.0)
        self.open_positions.labels(self.account, book).set(open_positions)

    def bar(self, row: dict[str, Any], step_ms: int, peak: float,
            rejected: Iterable[str]) -> None:  # fmt: skip
        """A bar journaled (its ``bars`` row), the account's peak and the reasons of the
        orders it refused."""
        close_ms = int(row["open_ms"]) + step_ms
        self.close_to_commit.labels(self.account).observe(
            max(int(row["committed_ms"]) - close_ms, 0) / 1000)  # fmt: skip
        self.bars.labels(self.account, "yes" if row["late"] else "no").inc()
        self.last_bar.labels(self.account).set(close_ms / 1000)
        self.book("simulated", float(row["equity"]), int(row["open_positions"]), peak)
        for reason in rejected:
            self.rejections.labels(self.account, "simulated", reason).inc()

    def live_bar(self, row: dict[str, Any], refused: Iterable[str]) -> None:
        """A live close (its ``live_bars`` row) and the exchange's refusals it got (their
        journaled detail, ``-2019: Margin is insufficient``: counted by the code)."""
        self.book("exchange", float(row["equity"]), int(row["open_positions"]),
                  float(row["peak"]))  # fmt: skip
        self.control("paused", bool(row["paused"]))
        self.control("breaker", bool(row["breaker"]))
        self.control("reduce_only", bool(row["reduce_only"]))
        for detail in refused:
            code = detail.split(":", 1)[0].strip()
            # a code, or "other" (free text would make a label value per message)
            code = code if CODE.fullmatch(code) else "other"
            self.rejections.labels(self.account, "exchange", code).inc()

    def control(self, name: str, on: bool) -> None:
        self.controls.labels(self.account, name).set(1 if on else 0)

    def set_stale(self, stale: bool) -> None:
        self.stale.labels(self.account).set(1 if stale else 0)

    def error(self, kind: str) -> None:
        self.errors.labels(self.account, kind).inc()

    def watch_client(self, client: Any) -> None:
        """Read ``client``'s rate limiter (an ``AsterClient``) whenever scraped."""
        limiter = client.limiter
        self.weight_used.labels(self.account).set_function(limiter.used)
        self.weight_budget.labels(self.account).set_function(lambda: limiter.budget)

    def watch_pacer(self, pacer: Any) -> None:
        """Read the order pacer's windows (an ``OrderPacer``) whenever scraped."""
        for window_s, _ in pacer.limits:
            self.orders_window.labels(self.account, f"{window_s:g}s").set_function(
                lambda w=window_s: pacer.in_window(w))  # fmt: skip


class ServiceCollector(Collector):
    """The signal service's metrics, read from its ``Follower`` at each scrape."""

    def __init__(self, follower: Any) -> None:
        self.follower = follower

    def collect(self) -> Iterator[Any]:
        f = self.follower
        st = f.state
        health = f.health()
        yield GaugeMetricFamily("asterai_service_stale", "1 while the data is stale or "
                                "the service is starting", value=1 if health["stale"] else 0)
        snap = st.snapshot
        if snap is not None:
            close_ms = snap.bar_open_ms + f.step
            yield GaugeMetricFamily("asterai_service_last_bar_close_timestamp_seconds",
                                    "The newest bar's close (Unix seconds)",
                                    value=close_ms / 1000)  # fmt: skip
            yield GaugeMetricFamily("asterai_service_close_to_signals_seconds",
                                    "The newest bar's close to its signals (the exchange's "
                                    "clock)", value=max(snap.computed_at_ms - close_ms, 0) / 1000)
        errors = CounterMetricFamily("asterai_service_errors", "Errors caught and retried",
                                     labels=["kind"])  # fmt: skip
        errors.add_metric(["exchange"], st.exchange_errors)
        errors.add_metric(["unexpected"], st.unexpected_errors)
        yield errors
        yield CounterMetricFamily("asterai_service_polls", "Polls of the exchange",
                                  value=st.polls)  # fmt: skip
        yield CounterMetricFamily("asterai_service_refused_bars", "Bars refused as malformed",
                                  value=st.refused_bars)  # fmt: skip
        client = getattr(f, "client", None)
        if client is not None:
            yield GaugeMetricFamily("asterai_exchange_weight_used",
                                    "Request weight booked in the limiter's window",
                                    value=client.limiter.used())  # fmt: skip
            yield GaugeMetricFamily("asterai_exchange_weight_budget",
                                    "The weight the limiter lets through per window",
                                    value=client.limiter.budget)  # fmt: skip


def service_registry(follower: Any) -> CollectorRegistry:
    """A registry with the service's metrics (``follower`` None: an empty one)."""
    registry = CollectorRegistry()
    if follower is not None:
        registry.register(ServiceCollector(follower))
    return registry
