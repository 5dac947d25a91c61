"""Benchmark: the whole pipeline on the recording, stage by stage, and the download floor.

Runs every stage of ``asterai pipeline`` in order against the replay server of the real
recording, with the real exchange's limit (2400 weight per minute), in a fresh data
root, and prints each stage's wall time. Then it plans the collection of a
``--symbols`` x ``--months`` panel of 1h, 4h and 1d bars with the collector's own page
plan and weights, and prints the floor that limit sets on downloading it: no client
can collect it faster without crossing the limit.

    python bench/pipeline.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _recording import DEFAULT_DATA

from asterai.config import load_settings
from asterai.data.collector import plan_pages
from asterai.exchange.recording import load_recording
from asterai.exchange.replay import ReplayServer
from asterai.exchange.weights import DEFAULT_WEIGHT_LIMIT, OPTIMAL_KLINE_PAGE, klines_weight
from asterai.intervals import DAY_MS, INTERVAL_MS
from asterai.pipeline.runner import REGISTRY, STAGES


def download_floor(symbols: int, months: int, intervals=("1h", "4h", "1d")) -> tuple[int, float]:
    """Weight of the collector's plan for the panel, and the minutes the limit implies."""
    end = 1_760_000_000_000
    start = end - months * 30 * DAY_MS
    weight = 0
    for interval in intervals:
        step = INTERVAL_MS[interval]
        pages = plan_pages(start - start % step, end - end % step, step, OPTIMAL_KLINE_PAGE)
        weight += sum(klines_weight(p.limit) for p in pages) + 1  # + the first-kline probe
    weight += 1 + months  # funding: at most 1000 rows a request (8-hourly: 90 per month)
    total = weight * symbols
    return total, total / DEFAULT_WEIGHT_LIMIT


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("ASTERAI_REAL_DATA", DEFAULT_DATA))
    )
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--months", type=int, default=6)
    args = parser.parse_args()
    if not (args.data / "klines").is_dir():
        print(f"no recording at {args.data}; set ASTERAI_REAL_DATA or --data", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="asterai-bench-pipeline-"))
    total = 0.0
    print(
        f"the whole pipeline on the recording (replay server, {DEFAULT_WEIGHT_LIMIT} weight/min):"
    )
    with ReplayServer(load_recording(args.data)) as server:
        settings = load_settings(root, base_url=server.base_url)
        for name in STAGES:
            started = time.perf_counter()
            result = REGISTRY[name].run(settings, {"symbols": None, "progress": False})
            seconds = time.perf_counter() - started
            total += seconds
            print(
                f"  {name:<30} {seconds:7.1f} s  {'ok' if result.ok else 'FAILED'}: {result.summary[:90]}"
            )
    print(f"  {'all stages':<30} {total:7.1f} s")
    weight, minutes = download_floor(args.symbols, args.months)
    print(
        f"\n{args.symbols} symbols x {args.months} months of 1h/4h/1d: the collector's plan costs "
        f"{weight:,} weight; at {DEFAULT_WEIGHT_LIMIT} a minute the download takes at least "
        f"{minutes:.1f} minutes (the guide quotes 4 to 8 hours for the whole run)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
