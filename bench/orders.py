"""Benchmark: a bar's close to every decided order acknowledged by the exchange, and the
order-count budget a bar uses.

The exchange: the replay with an account (``ReplayServer(accounts=1)``), over
``--symbols`` renamed copies of the recorded series (``bench/pipeline.py``'s panel: a
load, not a market), its clock stepped a bar at a time. The orders: live trading's own
path (``live.intents`` journal on SQLite, ``live.execute``: exits, then MARKET entries,
each protected at once by a STOP_MARKET and a reduce-only LIMIT), signed V3 over
loopback through the client's weight limiter. Two scenarios:

* the strategy's ceiling, ``--bars`` bars: at each close the positions entered the bar
  before exit and ``max_positions`` (5) new entries open on the next symbols in turn,
  the account read back first (settle, positions), as a live bar's close does; run
  twice in the same run, the orders one by one (the reference) and then in parallel
  (as ``asterai live`` sends them), each request answered ``--latency-ms`` later (a
  network's round trip: the replay is on loopback, in this process);
* every symbol at once, one bar: an entry on each of ``--symbols`` (3 orders each), to
  meet the exchange's order-count limits (300 in 10 s, 1,200 a minute).

Each entry's ATR is taken as 1% of its price (a load: it only places the stop and
target). Reported: per bar, the close to the last order acknowledged (p50, p99); per
order, the close to its acknowledgement; orders per bar against the limits, and the
429s the exchange answered for them (-1015: the client waits and sends again, nothing
was applied); the ceiling's p50 as a ratio to one signed read
(``GET /fapi/v3/balance``) timed in the same run.

    python bench/orders.py                   # 200 symbols, 12 bars
    python bench/orders.py --latency-ms 50   # a 50 ms round trip
    python bench/orders.py --symbols 20 --bars 6
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _recording import bench_parser, recording_missing

HOUR = 3_600_000
MAX_POSITIONS = 5
#: each entry's notional, USDT (above every minimum notional of the panel)
NOTIONAL = 12.0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


async def run(args, recording, work: Path) -> dict:
    from asterai.backtest import kernel
    from asterai.config import ExchangeSettings
    from asterai.exchange.client import AsterClient
    from asterai.exchange.private import PrivateClient
    from asterai.exchange.replay import ReplayServer
    from asterai.exchange.signing import V3Key
    from asterai.exchange.weights import ORDER_LIMITS
    from asterai.live.account import held_positions
    from asterai.live.execute import execute
    from asterai.live.intents import Intents, settle
    from asterai.paper.broker import ENTRY, EXIT

    btc = recording.series("BTCUSDT", "1h")
    start = int(btc.open_time[-args.bars - 3]) + 1000
    with ReplayServer(recording, clock_speed=0, play_from_ms=start, accounts=1,
                      balance="1000000") as server:  # fmt: skip
        engine = server.accounts.engine
        symbols = sorted(engine.instruments)
        tick = np.array([float(engine.instruments[s].tick) for s in symbols])
        step = np.array([float(engine.instruments[s].step) for s in symbols])
        c = server.credentials[0]
        key = V3Key.of(c.user.address, c.api_wallet.private_key, signer=c.api_wallet.address)
        p = kernel.Params(1e6, 0.01, MAX_POSITIONS, 0.00075, 0.0005, 0.0005, 0.5, 2.0, 1.0,
                          24, 5.0, 0.5)  # fmt: skip
        async with AsterClient(server.base_url, ExchangeSettings()) as client:
            api = PrivateClient(client, key)
            reads = []
            for _ in range(20):
                began = time.perf_counter()
                await api.balance()
                reads.append(time.perf_counter() - began)

            def decided(t: int, exits: list[str], entries: list[int]) -> tuple[np.ndarray, object]:
                state = kernel.new_state(len(symbols), 1e6)
                rows = [(symbols.index(s), EXIT, 0.0, 0.0, np.nan, 2) for s in exits]
                for j in entries:
                    inst = engine.instruments[symbols[j]]
                    price = float(inst.open[inst.bar_at(server.now_ms)])
                    state.pend_atr[j] = 0.01 * price
                    rows.append((j, ENTRY, 1.0, NOTIONAL / price, 0.7, -1))
                return np.array(rows, dtype=float).reshape(-1, 6), state

            async def bar(journal, t: int, entries: list[int], account: str = c.user.address,
                          parallel: bool = True) -> tuple[float, list[float]]:  # fmt: skip
                closed = time.time()
                began = time.perf_counter()
                await settle(journal, api)
                held, _ = held_positions(journal, await api.positions())
                orders, state = decided(t, sorted(held), entries)
                before = {r["client_id"] for r in journal.rows()}
                await execute(journal, api, account, t, symbols, orders, state, held,
                              tick, step, p, parallel=parallel)  # fmt: skip
                total = time.perf_counter() - began
                sent = [r for r in journal.rows() if r["client_id"] not in before]
                acks = [r["updated_ms"] / 1000 - closed for r in sent]
                return total, acks

            if args.latency_ms:  # every request answered this much later: a network
                server.set_faults(f"slow=1.0:{args.latency_ms / 1000}")

            async def ceiling_run(name: str, parallel: bool) -> tuple[list, list, list]:
                """``--bars`` bars at the ceiling on their own journal (client ids of
                their own account tag), the positions of the last closed after it."""
                journal = Intents(work / f"{name}.sqlite")
                totals, acks_all, counts = [], [], []
                first = 0 if parallel else 1000
                for k in range(args.bars):
                    t = first + k
                    server.clock.advance(HOUR)
                    entries = [(k * MAX_POSITIONS + i) % len(symbols) for i in range(MAX_POSITIONS)]
                    total, acks = await bar(journal, t, entries, f"{c.user.address}:{name}",
                                            parallel)  # fmt: skip
                    totals.append(total)
                    acks_all += acks
                    counts.append(len(acks))
                    # live, bars are an hour apart: the 10-second order window clears between
                    await asyncio.sleep(max(0.0, ORDER_LIMITS[0][0] / 1000 - total))
                server.clock.advance(HOUR)  # the last entries' positions closed
                await bar(journal, first + args.bars, [], f"{c.user.address}:{name}", parallel)
                journal.close()
                return totals, acks_all, counts

            limited = client.stats.rate_limited
            one_by_one, _, _ = await ceiling_run("sequential", parallel=False)
            ceiling, per_order, counts = await ceiling_run("ceiling", parallel=True)
            limited_ceiling = client.stats.rate_limited - limited
            server.set_faults(None)
            server.clock.advance(HOUR)
            journal = Intents(work / "every.sqlite")
            limited = client.stats.rate_limited
            every = list(range(len(symbols)))
            every_total, every_acks = await bar(journal, args.bars + 10, every)
            limited_every = client.stats.rate_limited - limited
            journal.close()
    limit_10s, limit_1m = ORDER_LIMITS[0][1], ORDER_LIMITS[1][1]
    read = pct(reads, 50)
    return {
        "symbols": len(symbols), "bars": args.bars, "latency_ms": args.latency_ms,
        "signed_read_p50_ms": round(read, 2),
        "ceiling": {
            "close_to_all_acknowledged_ms": {"p50": round(pct(ceiling, 50), 1),
                                             "p99": round(pct(ceiling, 99), 1)},
            "one_by_one_ms": {"p50": round(pct(one_by_one, 50), 1),
                              "p99": round(pct(one_by_one, 99), 1)},
            "parallel_over_one_by_one_p50": round(pct(ceiling, 50) / pct(one_by_one, 50), 2),
            "close_to_each_acknowledged_ms": {"p50": round(pct(per_order, 50), 1),
                                              "p99": round(pct(per_order, 99), 1)},
            "p50_over_one_read": round(pct(ceiling, 50) / read, 1),
            "orders_per_bar": {"max": max(counts), "mean": round(float(np.mean(counts)), 1)},
            "share_of_10s_limit": round(max(counts) / limit_10s, 3),
            "share_of_1m_limit": round(max(counts) / limit_1m, 3),
            "429s_waited": limited_ceiling,
        },
        "every_symbol": {
            "orders": len(every_acks),
            "close_to_all_acknowledged_ms": round(every_total * 1000, 1),
            "close_to_each_acknowledged_ms": {"p50": round(pct(every_acks, 50), 1),
                                              "p99": round(pct(every_acks, 99), 1)},
            "over_10s_limit": round(len(every_acks) / limit_10s, 2),
            "429s_waited": limited_every,
        },
    }  # fmt: skip


def main() -> int:
    parser = bench_parser(__doc__, panel=False)
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument(
        "--bars", type=int, default=12,
        help="bars at the strategy's ceiling (10 s apart: the order window clears)",
    )  # fmt: skip
    parser.add_argument(
        "--latency-ms", type=float, default=0.0,
        help="answer every request of the ceiling runs this much later (the replay's slow "
        "fault): a network's round trip, which loopback lacks",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if recording_missing(args):
        return 2
    from pipeline import RECORDING_NOW_MS, write_panel

    from asterai.exchange.replay.recording import load_recording

    work = Path(tempfile.mkdtemp(prefix="asterai-bench-orders-"))
    write_panel(args.data, work / "panel", args.symbols, months=1)
    recording = load_recording(work / "panel", now_ms=RECORDING_NOW_MS)
    out = asyncio.run(run(args, recording, work))
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
