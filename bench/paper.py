"""Benchmark: paper trading's latency, a bar's close to the journal's commit, for 200 symbols.

The market: the replay server in its own process, playing the real recording forward
on a clock this script steps bar by bar, with the exchange's real rate limit (2400
weight a minute). To reach ``--symbols`` symbols it serves renamed copies of the
recorded series (BTCUSDT and ETHUSDT keep their names: the cross-asset features read
them); the copies are the same real bars under other names, a load for the trader, not
a market (their signals mean nothing).

The trader: ``paper.trader.PaperTrader`` in this process, exactly as ``asterai paper``
runs it, trading the default confluence model trained and exported from the recording
(or ``--root``'s export), with its manifest's symbols widened to the copies. It follows
the market twice, each time on a fresh replay and journal: by the kline streams (the
replay's websocket server pushes each bar at its close; REST for what they lack, and
the funding) and by REST polling alone; the ratio of the two is printed. With
``--live``, ``live.trader.LiveTrader`` trades instead, on the replay's account (1,000
USDT), and each bar's whole runs to its live close's end: every decided order
acknowledged by the exchange. For each of
``--bars`` bars the clock is moved past the bar's close; measured from the moment the
replay confirms the close to the moment the journal has committed the bar's orders:
the whole, and its parts (the exchange: the pushes and requests; the live features and
the model; the broker's step with the journal's commit). Target: p99 under 1 s. Also
printed: the journal's size per day of trading (the file after the run, checkpointed,
scaled to 24 bars) and the requests and weight per bar against the server's limit.
Live, an hour passes between two bars and the minute's weight budget is whole again; here
they follow each other at once, so before each bar the script waits (unmeasured) until
the client's limiter has room for a bar's weight, and reports the limiter's waits inside
the measured bars (0: the budget never held a bar back).

With ``--watch``, each mode runs twice on fresh replays: plain, then watched: the
trader's own dashboard and metrics served from its process (``--watch-port``'s app) while
``--pages`` pages poll it as the page does (the status every two seconds, the positions,
trades, equity, events and refusals at each new bar) and a Prometheus scrapes ``/metrics``
every second; the ratio of the close-to-commit times is printed (target: the watched p99
within 10% of the plain one).

    python bench/paper.py                          # 200 symbols, 48 bars, both ways
    python bench/paper.py --mode streams --watch   # the same, plain then watched
    python bench/paper.py --live --mode streams    # the same, trading live on an account
    python bench/paper.py --symbols 50 --bars 24 --mode streams --root /path/to/trained/root
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _recording import bench_parser, recording_missing

TARGET_S = 1.0
HOUR = 3_600_000
KEEP_NAMES = ("BTCUSDT", "ETHUSDT")


def scaled_recording(data: Path, n: int):
    """The recording with its symbols' series copied under new names up to ``n``."""
    from asterai.exchange.replay.recording import load_recording

    rec = load_recording(data)
    names = sorted(rec.symbols)
    klines, funding, symbols = dict(rec.klines), dict(rec.funding), dict(rec.symbols)
    k = 0
    while len(symbols) < n:
        src = names[k % len(names)]
        alias = f"C{k // len(names):02d}{src}" if src not in KEEP_NAMES else None
        k += 1
        if alias is None or alias in symbols:
            continue
        for (s, iv), series in rec.klines.items():
            if s == src:
                klines[(alias, iv)] = replace(series, symbol=alias)
        if src in rec.funding:
            funding[alias] = replace(rec.funding[src], symbol=alias)
        info = rec.symbols[src]
        listed = dict(info.listed, symbol=alias) if info.listed is not None else None
        symbols[alias] = replace(info, symbol=alias, listed=listed)
    return replace(rec, klines=klines, funding=funding, symbols=symbols)


def replay_child(data: str, n: int, play_from: int, conn, accounts: int = 0) -> None:
    """The replay server (real rate limit, kline streams; with ``accounts``, an account
    to trade on) on a stepped clock, steered through ``conn``."""
    from asterai.exchange.replay import ReplayServer

    rec = scaled_recording(Path(data), n)
    with ReplayServer(rec, clock_speed=0, play_from_ms=play_from, streams=True,
                      accounts=accounts, balance="1000") as server:  # fmt: skip
        keys = None
        if accounts:
            c = server.credentials[0]
            keys = (c.user.address, c.api_wallet.address, c.api_wallet.private_key)
        conn.send((server.base_url, server.ws_url, sorted(rec.symbols), keys))
        while True:
            cmd, arg = conn.recv()
            if cmd == "stop":
                return
            if cmd == "advance":
                server.clock.advance(arg)
                conn.send(server.clock.now_ms())


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


class Watchers:
    """The trader's dashboard served from this process as ``--watch-port`` serves it,
    ``pages`` browsers polling it and a Prometheus scraping it, each in a thread."""

    TOKEN = "bench-token-" + "0" * 32

    def __init__(self, trader, pages: int) -> None:
        import threading

        import uvicorn

        from asterai.watch.serve import TraderServer, attach_metrics, trader_app

        attach_metrics(trader, "paper")
        config = uvicorn.Config(trader_app(trader, "paper", self.TOKEN), host="127.0.0.1",
                                port=0, log_level="warning", access_log=False)  # fmt: skip
        self.server = TraderServer(config)
        self.pages = pages
        self.stop = threading.Event()
        self.requests = 0
        self.threads = [threading.Thread(target=self.server.run, daemon=True)]

    def __enter__(self) -> Watchers:
        import threading

        self.threads[0].start()
        while not self.server.started:
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        for k in range(self.pages):
            self.threads.append(threading.Thread(target=self.page, args=(k,), daemon=True))
        self.threads.append(threading.Thread(target=self.scrape, daemon=True))
        for t in self.threads[1:]:
            t.start()
        return self

    def page(self, k: int) -> None:
        import httpx

        seen = None
        with httpx.Client(base_url=self.url, timeout=30,
                          headers={"Authorization": f"Bearer {self.TOKEN}"}) as c:  # fmt: skip
            time.sleep(2.0 * k / max(self.pages, 1))  # the pages' polls spread out
            while not self.stop.is_set():
                bars = c.get("/api/v1/status").json().get("bars")
                self.requests += 1
                if bars != seen:
                    for path in ("positions", "trades?limit=200", "equity",
                                 "rejections?limit=100", "events?limit=100"):  # fmt: skip
                        c.get(f"/api/v1/{path}")
                        self.requests += 1
                    seen = bars
                self.stop.wait(2.0)

    def scrape(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=30,
                          headers={"Authorization": f"Bearer {self.TOKEN}"}) as c:  # fmt: skip
            while not self.stop.is_set():
                c.get("/metrics")
                self.requests += 1
                self.stop.wait(1.0)

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads[1:]:
            t.join(30)
        self.server.should_exit = True
        self.threads[0].join(30)


async def run(trader, conn, bars: int, pages: int = 0) -> dict[str, list[float]]:
    import contextlib

    with Watchers(trader, pages) if pages else contextlib.nullcontext() as watchers:
        times = await _run(trader, conn, bars)
    if watchers is not None:
        times["watch_requests"] = [watchers.requests]
    return times


async def _run(trader, conn, bars: int) -> dict[str, list[float]]:
    from asterai.exchange.client import AsterClient

    f = trader.follower
    times: dict[str, list[float]] = {
        k: [] for k in ("whole", "poll", "features", "trade", "spacing", "weight", "requests",
                        "limiter_waits", "live", "orders")
    }  # fmt: skip
    live = hasattr(trader, "live_bar")
    inner = f._publish

    def timed_publish(after):
        t0 = time.perf_counter()
        inner(after)
        times["features"].append(time.perf_counter() - t0)

    f._publish = timed_publish
    settings = trader.plan.settings
    async with AsterClient(settings.base_url, settings.exchange) as client:
        if trader.metrics is not None:
            trader.metrics.watch_client(client)
        if live:
            await trader.preflight(client)
        await trader.cycle(client)  # the warm-up and the first bar (and the streams opened)
        opened = time.monotonic()
        while f.streams is not None and not f.streams.live:
            if time.monotonic() - opened > 60:
                raise RuntimeError(f"the kline streams did not open: {f.streams.state}")
            await asyncio.sleep(0.05)
        times["features"].clear()
        lim = client.limiter
        need = 0
        for _ in range(bars):
            # live, an hour passes between two bars and the minute's budget is whole
            # again; here they follow at once: wait (unmeasured) until it covers a bar
            t_wait = time.perf_counter()
            while need and lim.used() + min(1.25 * need, lim.budget) > lim.budget:
                await asyncio.sleep(0.25)
            times["spacing"].append(time.perf_counter() - t_wait)
            sent, waits = lim.stats.weight_sent, lim.stats.waits
            requests = lim.stats.requests
            conn.send(("advance", HOUR))
            conn.recv()  # the bar has closed on the exchange's clock
            t0 = time.perf_counter()
            await f.follow(client)  # the pushed bars (REST for what they lack), or a poll
            t1 = time.perf_counter()
            trader._check_kill_file()
            done = trader._trade_new()
            t2 = time.perf_counter()
            assert len(done) == 1, done
            if live:  # the live close: settle, reconcile, decide, every order acknowledged
                row = await trader.live_bar(int(trader.state.last["open_ms"]))
                times["orders"].append(row["orders"])
                times["live"].append(time.perf_counter() - t2)
                t2 = time.perf_counter()
            times["whole"].append(t2 - t0)
            times["poll"].append(t1 - t0 - times["features"][-1])
            times["trade"].append(t2 - t1)
            times["weight"].append(lim.stats.weight_sent - sent)
            times["requests"].append(lim.stats.requests - requests)
            times["limiter_waits"].append(lim.stats.waits - waits)
            need = max(need, lim.stats.weight_sent - sent)
            print(
                f"bar {len(times['whole'])}: {times['whole'][-1] * 1000:.0f} ms, "
                f"{times['requests'][-1]} requests, weight {times['weight'][-1]}",
                file=sys.stderr, flush=True,
            )  # fmt: skip
        times["budget"] = [lim.budget]
        times["pushed"] = [f.streams.state.pushed if f.streams is not None else 0]
    await f.close_streams()
    if live:
        await trader.close_user_stream()
    return times


def main() -> int:
    parser = bench_parser(__doc__, panel=False)
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--bars", type=int, default=48)
    parser.add_argument("--root", type=Path, default=None, help="a data root with an export")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--live", action="store_true",
        help="trade live (``asterai live``'s LiveTrader) on the replay's account instead: "
        "the whole is then a bar's close to every decided order acknowledged",
    )  # fmt: skip
    parser.add_argument(
        "--mode", choices=["streams", "rest", "both"], default="both",
        help="follow the market by the kline streams, by REST polling, or both in turn "
        "(each on its own replay; the ratio printed)",
    )  # fmt: skip
    parser.add_argument(
        "--watch", action="store_true",
        help="each mode plain, then watched: the trader's dashboard and /metrics served from "
        "its process, --pages pages polling it and a scraper; the ratio printed",
    )  # fmt: skip
    parser.add_argument("--pages", type=int, default=5,
                        help="with --watch: browsers polling the dashboard")  # fmt: skip
    args = parser.parse_args()
    if recording_missing(args):
        return 2
    if args.watch and args.live:
        parser.error("--watch measures paper trading (the same app serves live)")
    from live import trained_root

    work = Path(tempfile.mkdtemp(prefix="asterai-bench-paper-"))
    source = args.root or trained_root(args.data, work)
    modes = ["streams", "rest"] if args.mode == "both" else [args.mode]
    if args.watch:
        results = {}
        for m in modes:
            results[m] = measure(m, args, Path(source), work / m)
            results[f"{m} watched"] = measure(m, args, Path(source), work / f"{m}-w",
                                              pages=args.pages)  # fmt: skip
        for m in modes:
            a, b = results[f"{m} watched"], results[m]
            print(
                f"watched / plain ({m}, {args.pages} pages every 2 s and a scrape a second, "
                f"{a['watch_requests']} requests served): close -> journal commit p50 "
                f"{a['whole_p50_s'] * 1000:.0f} vs {b['whole_p50_s'] * 1000:.0f} ms "
                f"({a['whole_p50_s'] / b['whole_p50_s']:.3f}x), p99 "
                f"{a['whole_p99_s'] * 1000:.0f} vs {b['whole_p99_s'] * 1000:.0f} ms "
                f"({a['whole_p99_s'] / b['whole_p99_s']:.3f}x)"
            )
        modes = []
    else:
        results = {m: measure(m, args, Path(source), work / m) for m in modes}
    for m, out in results.items():
        if out["live"]:
            print(
                f"live trading ({m}), {out['symbols']} symbols, {args.bars} bars: close -> "
                f"every order acknowledged p50 {out['whole_p50_s'] * 1000:.0f} ms, p99 "
                f"{out['whole_p99_s'] * 1000:.0f} ms; the live close alone (settle, reconcile, "
                f"decide, send) p50 {out['live_close_p50_s'] * 1000:.0f} ms, p99 "
                f"{out['live_close_p99_s'] * 1000:.0f} ms; orders a bar: at most "
                f"{out['orders_per_bar_max']}, mean {out['orders_per_bar_mean']:.1f}"
            )
        print(
            f"paper trading ({m}), {out['symbols']} symbols, {args.bars} bars: close -> "
            f"journal commit p50 {out['whole_p50_s'] * 1000:.0f} ms, p99 "
            f"{out['whole_p99_s'] * 1000:.0f} ms ({out['p99_over_target']:.2f}x the "
            f"{TARGET_S:g} s target)\n"
            f"  parts (p50): the exchange ({'pushed bars, REST for what they lack' if out['mode'] == 'streams' else 'REST poll'}) "
            f"{out['poll_p50_s'] * 1000:.0f} ms, live features + model "
            f"{out['features_and_model_p50_s'] * 1000:.0f} ms, broker step + journal commit "
            f"{out['trade_and_commit_p50_s'] * 1000:.1f} ms\n"
            f"  exchange: {out['requests_per_bar_p50']:.0f} requests a bar (p50), at most "
            f"{out['weight_per_bar_max']} weight = "
            f"{out['weight_per_bar_max'] / out['weight_budget_per_minute']:.2f}x the minute's "
            f"budget of {out['weight_budget_per_minute']}; limiter waits in the measured bars: "
            f"{out['limiter_waits_in_measured_bars']}; bars pushed: {out['pushed']}\n"
            f"  journal: {out['journal_bytes_per_day'] / 1e6:.2f} MB per day of trading"
        )
    if set(results) == {"streams", "rest"}:
        a, b = results["streams"], results["rest"]
        print(
            f"streams / REST polling, same replay and model: p50 "
            f"{a['whole_p50_s'] / b['whole_p50_s']:.3f}x, p99 "
            f"{a['whole_p99_s'] / b['whole_p99_s']:.3f}x, requests a bar "
            f"{a['requests_per_bar_p50']:.0f} vs {b['requests_per_bar_p50']:.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def measure(mode: str, args, source: Path, root: Path, pages: int = 0) -> dict:
    """One run of ``--bars`` bars, the trader following by ``mode`` (``pages``: watched
    by that many pages, ``Watchers``)."""
    import pandas as pd

    from asterai.config import load_settings
    from asterai.data.discovery import run_discovery
    from asterai.paper.trader import PaperTrader, prepare
    from asterai.paths import DataPaths

    for part in ("models/confluence/onnx", "asterai.toml"):
        if (source / part).is_dir():
            shutil.copytree(source / part, root / part)
        elif (source / part).exists():
            root.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / part, root / part)
    # start where every recorded symbol but the late listings has two weeks behind it
    start = int(pd.Timestamp("2025-10-01T04:00:01Z").value // 1_000_000)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=replay_child,
                       args=(str(args.data), args.symbols, start, child, int(args.live)))  # fmt: skip
    proc.start()
    try:
        url, ws_url, names, keys = parent.recv()
        manifest_path = root / "models/confluence/onnx/manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["service"]["symbols"] = names  # the copies, as if trained on them
        manifest_path.write_text(json.dumps(manifest, indent=2))
        settings = load_settings(
            root, base_url=url, ws_url=ws_url if mode == "streams" else "off",
            paper={"daily_loss_limit": 0.0},
        )  # fmt: skip
        run_discovery(settings)  # the copies' filters, from the replay's exchangeInfo
        if args.live:
            from asterai.exchange.signing import V3Key
            from asterai.live.keys import LiveKeys
            from asterai.live.trader import LiveTrader

            key = V3Key.of(keys[0], keys[2], signer=keys[1])
            trader = LiveTrader(prepare(settings), LiveKeys(key), note="bench", clock_rate=0,
                                retry_s=1.0)  # fmt: skip
        else:
            trader = PaperTrader(prepare(settings), clock_rate=0, retry_s=1.0)
        t0 = time.perf_counter()
        times = asyncio.run(run(trader, parent, args.bars, pages))
        total = time.perf_counter() - t0
        trader.close()
        parent.send(("stop", None))
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    paths = DataPaths.at(root)
    size = (paths.live_journal if args.live else paths.paper_journal).stat().st_size
    p99 = pct(times["whole"], 99)
    extra = {}
    if args.live:
        extra = {"live_close_p50_s": pct(times["live"], 50), "live_close_p99_s":
                 pct(times["live"], 99), "orders_per_bar_max": max(times["orders"]),
                 "orders_per_bar_mean": float(np.mean(times["orders"]))}  # fmt: skip
    if pages:
        extra["watch_requests"] = int(times["watch_requests"][0])
    return {
        **extra,
        "live": bool(args.live),
        "mode": mode,
        "symbols": len(names),
        "bars": args.bars,
        "whole_p50_s": pct(times["whole"], 50),
        "whole_p99_s": p99,
        "whole_max_s": max(times["whole"]),
        "poll_p50_s": pct(times["poll"], 50),
        "features_and_model_p50_s": pct(times["features"], 50),
        "trade_and_commit_p50_s": pct(times["trade"], 50),
        "target_s": TARGET_S,
        "p99_over_target": p99 / TARGET_S,
        "journal_bytes_per_day": size / (args.bars + 1) * 24,
        "requests_per_bar_p50": pct(times["requests"], 50),
        "weight_per_bar_max": max(times["weight"]),
        "weight_budget_per_minute": times["budget"][0],
        "limiter_waits_in_measured_bars": int(sum(times["limiter_waits"])),
        "pushed": times["pushed"][0],
        "run_s": total,
    }


if __name__ == "__main__":
    sys.exit(main())
