"""Benchmark: collection throughput and weight-budget use against the replay server.

Runs AsterAI's collector on the real recording (../shared/aster-real) served by
the replay server with a shortened weight window, and beside it, against the same
server in the same run, the collection the seed guide describes (sequential
requests of 1500-bar pages paced at 15 requests per minute against a limit of
2400 weight per minute, i.e. at 15/2400 requests per unit of weight budget). It
prints bars per second, weight per bar and the share of the server's weight
budget used, and the ratios between the two.

The server window is shortened but keeps the real exchange's *rate*: the default
40 weight per 1 s window is 2400 per minute. Two budget shares are printed:

- overall: weight sent / (limit x (elapsed / window + 1)), the first window's
  budget being available at once; it counts the last, partial window, where the
  collection ran out of work rather than budget, so it understates steady use;
- steady: the weight sent in the full windows of the run (windows of the server's
  length counted from the first request; the last, partial one left out) over
  limit x their number. The target (>= 90 %, zero 429s) applies to this one.

    python bench/collect.py                    # default: 3 rounds of every symbol
    python bench/collect.py --rounds 5 --json out.json
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _recording import bench_parser, recording_missing

from asterai.config import load_settings
from asterai.data.collector import collect
from asterai.data.store import read_series, to_epoch_ms
from asterai.exchange.client import AsterClient
from asterai.exchange.replay import ReplayServer
from asterai.exchange.replay.recording import load_recording
from asterai.intervals import interval_ms, last_closed_open_time
from asterai.paths import DataPaths

GUIDE_REQUESTS_PER_MINUTE = 15
GUIDE_PAGE = 1500
REAL_LIMIT_PER_MINUTE = 2400


def ours(server: ReplayServer, symbols: list[str], rounds: int, concurrency: int) -> dict:
    """AsterAI's collector: ``rounds`` full collections into fresh data roots, one client.

    One client for all rounds, as in one long collection of many symbols: the
    recording holds a month, so several rounds stand in for a longer history.
    """
    roots = [Path(tempfile.mkdtemp(prefix="asterai-bench-")) for _ in range(rounds)]
    bars = 0

    async def run() -> AsterClient:
        nonlocal bars
        first = load_settings(
            roots[0], base_url=server.base_url, exchange={"concurrency": concurrency}
        )
        async with AsterClient(server.base_url, first.exchange) as client:
            for root in roots:
                settings = load_settings(
                    root, base_url=server.base_url, exchange={"concurrency": concurrency}
                )
                report = await collect(settings, symbols=symbols, client=client)
                if not report.ok:
                    raise SystemExit(f"collection failed: {report.to_json()['series']}")
                bars += report.to_json()["totals"]["bars_collected"]
            return client

    started = time.perf_counter()
    client = asyncio.run(run())
    elapsed = time.perf_counter() - started
    return {
        "bars": bars,
        "weight": client.stats.weight,
        "requests": client.stats.requests,
        "rate_limited_429": client.stats.rate_limited,
        "elapsed_s": elapsed,
        "root": roots[0],
        "sends": client.stats.sends,
    }


def steady_share(sends: list[tuple[float, int]], window: float, limit: int) -> float | None:
    """Weight sent in the run's full windows over ``limit`` x their number."""
    if not sends:
        return None
    t0 = sends[0][0]
    full = int((sends[-1][0] - t0) // window)
    if full < 1:
        return None
    used = sum(w for t, w in sends if t - t0 < full * window)
    return used / (limit * full)


def guide_way(base_url: str, symbols: list[str], intervals: list[str], pace_s: float) -> dict:
    """The seed guide's collection: sequential 1500-bar pages, paced requests."""
    bars = weight = requests = limited = 0
    frames: dict[tuple[str, str], np.ndarray] = {}
    started = time.perf_counter()
    next_at = started
    with httpx.Client(base_url=base_url, timeout=30) as http:

        def get(path: str, params: dict) -> httpx.Response:
            nonlocal next_at, requests, weight, limited
            time.sleep(max(0.0, next_at - time.perf_counter()))
            next_at = time.perf_counter() + pace_s
            reply = http.get(path, params=params)
            requests += 1
            weight += 10 if path.endswith("klines") else 1
            limited += reply.status_code == 429
            reply.raise_for_status()
            return reply

        now = get("/fapi/v1/time", {}).json()["serverTime"]
        for symbol in symbols:
            for interval in intervals:
                last_closed = last_closed_open_time(now, interval)
                start, opens = 0, []
                while True:
                    rows = get(
                        "/fapi/v1/klines",
                        {
                            "symbol": symbol,
                            "interval": interval,
                            "startTime": start,
                            "limit": GUIDE_PAGE,
                        },
                    ).json()
                    opens += [r[0] for r in rows if r[0] <= last_closed]
                    if len(rows) < GUIDE_PAGE:
                        break
                    start = rows[-1][0] + interval_ms(interval)
                frames[(symbol, interval)] = np.array(opens, dtype=np.int64)
                bars += len(opens)
    # the last request's pacing interval belongs to the run: the next could not start earlier
    elapsed = max(time.perf_counter(), next_at) - started
    return {
        "bars": bars,
        "weight": weight,
        "requests": requests,
        "rate_limited_429": limited,
        "elapsed_s": elapsed,
        "open_times": frames,
    }


def main() -> int:
    parser = bench_parser(__doc__, panel=False)
    parser.add_argument("--window-seconds", type=int, default=1)
    parser.add_argument(
        "--weight-limit", type=int, default=40, help="per window (default 40/s = 2400/min)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="full collections for our side")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--guide-symbols", default="BTCUSDT,ETHUSDT", help="subset for the slow reference"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if recording_missing(args):
        return 2

    recording = load_recording(args.data)
    symbols = sorted({s for s, _ in recording.klines})
    intervals = ["1h", "4h", "1d"]
    limit_per_s = args.weight_limit / args.window_seconds
    # the guide's pace, scaled to this server's budget: 15 requests per 2400 weight
    pace_s = REAL_LIMIT_PER_MINUTE / GUIDE_REQUESTS_PER_MINUTE / limit_per_s

    with ReplayServer(
        recording, window_seconds=args.window_seconds, weight_limit=args.weight_limit
    ) as server:
        mine = ours(server, symbols, args.rounds, args.concurrency)
        server_429_ours = server.stats.sent_429
        time.sleep(args.window_seconds)  # let the window drain before the reference starts
        guide_symbols = args.guide_symbols.split(",")
        ref = guide_way(server.base_url, guide_symbols, intervals, pace_s)

    # the reference must have collected exactly the bars we did
    for (symbol, interval), opens in ref["open_times"].items():
        got = to_epoch_ms(
            read_series(DataPaths.at(mine["root"]).klines(symbol, interval), "klines").frame[
                "open_time"
            ]
        )
        if not np.array_equal(got, opens):
            print(
                f"MISMATCH: {symbol} {interval} differs between the two collections",
                file=sys.stderr,
            )
            return 1

    def derived(run: dict) -> dict:
        windows = run["elapsed_s"] / args.window_seconds + 1
        sends = run.get("sends")
        return {
            "bars_per_s": run["bars"] / run["elapsed_s"],
            "weight_per_bar": run["weight"] / run["bars"],
            "budget_share": run["weight"] / (args.weight_limit * windows),
            "steady_budget_share": steady_share(sends, args.window_seconds, args.weight_limit)
            if sends
            else None,
        }

    a, b = derived(mine), derived(ref)
    result = {
        "server": {
            "window_seconds": args.window_seconds,
            "weight_limit": args.weight_limit,
            "symbols": len(symbols),
            "intervals": intervals,
        },
        "asterai": {k: v for k, v in mine.items() if k not in ("root", "sends")}
        | a
        | {"server_429": server_429_ours},
        "guide_reference": {k: v for k, v in ref.items() if k != "open_times"}
        | b
        | {"symbols": guide_symbols, "pace_s": pace_s},
        "ratios": {
            "bars_per_s": a["bars_per_s"] / b["bars_per_s"],
            "weight_per_bar": a["weight_per_bar"] / b["weight_per_bar"],
            "budget_share": a["budget_share"] / b["budget_share"],
        },
    }
    w = args.weight_limit
    print(
        f"replay server: {w} weight per {args.window_seconds} s window "
        f"(= {w * 60 // args.window_seconds} per minute), {len(symbols)} symbols x {len(intervals)} intervals"
    )
    print(
        f"{'':18}{'bars':>8}{'requests':>10}{'weight':>8}{'seconds':>9}{'bars/s':>10}{'weight/bar':>12}"
        f"{'budget overall':>16}{'steady':>8}{'429s':>6}"
    )
    for name, run, d in (("asterai", mine, a), ("guide (15 rpm)", ref, b)):
        steady = (
            "" if d["steady_budget_share"] is None else f"{100 * d['steady_budget_share']:.1f}%"
        )
        print(
            f"{name:18}{run['bars']:>8}{run['requests']:>10}{run['weight']:>8}{run['elapsed_s']:>9.2f}"
            f"{d['bars_per_s']:>10.1f}{d['weight_per_bar']:>12.5f}{100 * d['budget_share']:>15.1f}%"
            f"{steady:>8}{run['rate_limited_429']:>6}"
        )
    r = result["ratios"]
    print(
        f"ratio asterai / guide: bars/s x{r['bars_per_s']:.1f}, weight per bar x{r['weight_per_bar']:.2f}, "
        f"budget used x{r['budget_share']:.1f}"
    )
    target = (a["steady_budget_share"] or 0) >= 0.90 and server_429_ours == 0
    print(
        f"target (steady use >= 90% of the weight budget, zero 429s): {'MET' if target else 'NOT MET'}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
