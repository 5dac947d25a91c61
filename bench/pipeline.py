"""Benchmark: the complete pipeline, stage by stage, on the recording and on a big panel.

1. The recording: ``asterai pipeline`` (the runner itself, with its hashing and
   manifest) against the replay server of the real recording with the real exchange's
   limit (2400 weight per minute), in a fresh data root, default settings; each stage's
   wall time; then the same command again, which finds every stage current.
2. A ``--symbols`` x ``--months`` panel served by the replay server with the same
   limit: the recording's tradeable symbols tiled back in time under new names
   (BTCUSDT and ETHUSDT keep theirs), written in the recording's layout to a temp
   folder (never into the project). The pipeline runs discovery, the probe, the
   collection and the gate on it, timed, next to the download floor the limit sets (a
   fixed one-minute window: the first 2400 weight go at once, the rest wait for later
   windows). The gate then refuses the panel, rightly: tiled copies are duplicates of
   each other (``cross.find_duplicates``), and the seams where a copy meets the next
   fall at different places in the 1h, 4h and 1d files, so the timeframes disagree. The later stages on a panel of
   this size are timed by ``bench/features.py``, ``bench/train.py`` and
   ``bench/backtest.py``, which bypass the gate; their figures are in docs/benchmarks.md.

3. With ``--faults SPEC``: the pipeline on the recording again, once per seed
   (``--seeds``), against a replay server that injects those faults; per seed the
   faults served, the client's retries and 429s, the time lost against the clean run,
   and whether every collected series and the final metrics equal the clean run's.

    python bench/pipeline.py                      # recording + 200 x 6 months
    python bench/pipeline.py --symbols 20 --months 1
    python bench/pipeline.py --skip-panel
    python bench/pipeline.py --skip-panel --faults "5xx=0.1,429=0.05,slow=0.05:0.5,truncate=0.05,drop=0.05" --seeds 5
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from _recording import bench_parser, recording_missing, tile

from asterai.config import load_settings
from asterai.data.collector import plan_pages
from asterai.exchange.replay import ReplayServer
from asterai.exchange.replay.recording import load_recording
from asterai.exchange.weights import DEFAULT_WEIGHT_LIMIT, OPTIMAL_KLINE_PAGE, klines_weight
from asterai.intervals import DAY_MS, INTERVAL_MS
from asterai.pipeline.runner import ExchangeUnreachable, PipelineOutcome, run_pipeline

#: the recording's clock (its order books' ``E``), kept for the tiled panel
RECORDING_NOW_MS = 1_760_502_565_855
INTERVALS = ("1h", "4h", "1d")
KEEP_NAMES = ("BTCUSDT", "ETHUSDT")
#: dead or too short in the recording: not worth tiling
SKIP = ("1INCHUSDT", "AIUSDT", "ALGOUSDT", "1000CHEEMSUSDT")


def floor_minutes(weight: float, limit: int = DEFAULT_WEIGHT_LIMIT) -> float:
    """The least time ``weight`` can be spent in under a limit per fixed one-minute window:
    the first window's ``limit`` goes at once, each further one waits for a window."""
    return max(0.0, weight / limit - 1.0)


def download_floor(symbols: int, months: int, intervals=INTERVALS) -> tuple[int, float]:
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
    return total, floor_minutes(total)


class Timer:
    """A display for ``run_pipeline`` that prints each stage's time as it ends."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def plan(self, run_id, names, estimates):
        pass

    def started(self, name, index, reason, eta_s):
        pass

    def finished(self, record):
        self.rows.append(record)
        print(
            f"  {record['name']:<30} {record.get('seconds', 0):7.1f} s  {record['status']}: "
            f"{(record.get('summary') or '')[:100]}",
            flush=True,
        )


def write_panel(data: Path, folder: Path, symbols: int, months: int) -> None:
    sources = sorted(
        p.name.removesuffix("_1h.parquet")
        for p in (data / "klines").glob("*_1h.parquet")
        if p.name.removesuffix("_1h.parquet") not in SKIP
    )
    (folder / "klines").mkdir(parents=True)
    frames = {
        (s, iv): pd.read_parquet(data / "klines" / f"{s}_{iv}.parquet")
        for s in sources
        for iv in INTERVALS
    }
    for i in range(symbols):
        src = sources[i % len(sources)]
        name = src if (i < len(sources) and src in KEEP_NAMES) else f"X{i:03d}{src}"
        for iv in INTERVALS:
            frame = frames[(src, iv)]
            end = int(frame.index.as_unit("ms").asi8[-1]) + INTERVAL_MS[iv]
            start = end - months * 30 * DAY_MS
            # the recording's layout: the open time is the index, named ``timestamp``
            tiled = tile(frame.rename_axis("open_time").reset_index(), iv, start)
            tiled.set_index("open_time").rename_axis("timestamp").to_parquet(
                folder / "klines" / f"{name}_{iv}.parquet"
            )


def _series(root: Path) -> dict[str, pd.DataFrame]:
    folder = root / "data" / "historical" / "real_aster_only"
    return {p.name: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}


def _metrics(root: Path) -> dict:
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "run_id"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads((root / "data/backtest_results/metrics.json").read_text()))


def fault_runs(args, clean_root: Path, clean_s: float) -> dict:
    """The pipeline on the recording once per seed against a faulty replay server."""
    clean_series, clean_metrics = _series(clean_root), _metrics(clean_root)
    print(f"\nthe same pipeline against a replay server with faults {args.faults!r}:")
    rows = []
    for seed in range(1, args.seeds + 1):
        root = clean_root.parent / f"faults-{seed}"
        with ReplayServer(load_recording(args.data), faults=args.faults, seed=seed) as server:
            settings = load_settings(root, base_url=server.base_url)
            started = time.perf_counter()
            try:
                outcome = run_pipeline(settings)
            except ExchangeUnreachable as err:  # the pre-check gave up: a failed seed
                outcome = PipelineOutcome(run_id="", ok=False, failure=str(err))
            seconds = time.perf_counter() - started
            served = server.stats.snapshot()
        report = root / "data/historical/real_aster_only/collection_report.json"
        client = json.loads(report.read_text()).get("totals", {}) if report.exists() else {}
        same_series = (
            outcome.ok
            and _series(root).keys() == clean_series.keys()
            and all(frame.equals(clean_series[name]) for name, frame in _series(root).items())
        )
        same_metrics = outcome.ok and _metrics(root) == clean_metrics
        row = {
            "seed": seed, "ok": outcome.ok, "failure": outcome.failure, "seconds": seconds,
            "lost_s": seconds - clean_s, "faults_served": sum(served["faults"].values()),
            "faults": served["faults"], "collector_retries": client.get("retries"),
            "collector_429": client.get("rate_limited_429"), "same_series": same_series,
            "same_metrics": same_metrics,
        }  # fmt: skip
        rows.append(row)
        print(
            f"  seed {seed}: {'ok' if outcome.ok else 'FAILED: ' + str(outcome.failure)}, "
            f"{seconds:.1f} s ({row['lost_s']:+.1f} s against the clean run), "
            f"{row['faults_served']} faults served {served['faults']}, collector retries "
            f"{row['collector_retries']}, 429s {row['collector_429']}; same series: "
            f"{'YES' if same_series else 'NO'}, same metrics: {'YES' if same_metrics else 'NO'}"
        )
    matched = sum(r["same_series"] and r["same_metrics"] for r in rows)
    print(f"  {matched} of {len(rows)} runs ended with the clean run's series and metrics")
    return {"spec": args.faults, "runs": rows, "matched": matched}


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--skip-panel", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    parser.add_argument("--faults", default=None, help="replay fault spec for the fault runs")
    parser.add_argument("--seeds", type=int, default=5, help="fault runs, seeds 1..N")
    args = parser.parse_args()
    if recording_missing(args):
        return 2
    out: dict = {}
    work = Path(tempfile.mkdtemp(prefix="asterai-bench-pipeline-"))
    print(f"the complete pipeline on the recording (replay, {DEFAULT_WEIGHT_LIMIT} weight/min):")
    with ReplayServer(load_recording(args.data)) as server:
        settings = load_settings(work / "recording", base_url=server.base_url)
        timer = Timer()
        started = time.perf_counter()
        outcome = run_pipeline(settings, display=timer)
        first = time.perf_counter() - started
        print(f"  {'whole run':<30} {first:7.1f} s  ({'ok' if outcome.ok else outcome.failure})")
        started = time.perf_counter()
        again = run_pipeline(settings)
        rerun = time.perf_counter() - started
        skipped = sum(s["status"] == "skipped" for s in again.stages)
        print(f"  {'the same command again':<30} {rerun:7.1f} s  ({skipped} of 8 stages current)")
    out["recording"] = {
        "stages": {r["name"]: r.get("seconds") for r in timer.rows},
        "whole_run_s": first,
        "rerun_s": rerun,
        "rerun_skipped": skipped,
    }
    if args.faults:
        out["faults"] = fault_runs(args, work / "recording", first)

    weight, minutes = download_floor(args.symbols, args.months)
    out["floor"] = {"weight": weight, "minutes": minutes}
    print(
        f"\n{args.symbols} symbols x {args.months} months of 1h/4h/1d: the collector's plan "
        f"costs about {weight:,} weight; at {DEFAULT_WEIGHT_LIMIT} a minute (the first "
        f"{DEFAULT_WEIGHT_LIMIT} at once) no client can download it in less than "
        f"{minutes:.1f} minutes"
    )
    if not args.skip_panel:
        folder = work / "panel-recording"
        started = time.perf_counter()
        write_panel(args.data, folder, args.symbols, args.months)
        print(f"  (tiled panel written in {time.perf_counter() - started:.0f} s, to {folder})")
        with ReplayServer(load_recording(folder, now_ms=RECORDING_NOW_MS)) as server:
            settings = load_settings(work / "panel", base_url=server.base_url)
            timer = Timer()
            started = time.perf_counter()
            outcome = run_pipeline(settings, stop_at="data_validation", display=timer)
            total = time.perf_counter() - started
            stats = server.stats.snapshot()
        stages = {r["name"]: r.get("seconds") for r in timer.rows}
        # the floor of what was really spent: the server's count, discovery's included
        spent_floor = floor_minutes(stats["weight"])
        print(
            f"  {'discovery to the gate':<30} {total:7.1f} s; the server counted "
            f"{stats['weight']:,} weight in {stats['requests']:,} requests "
            f"({stats['sent_429']} answered 429), which the limit lets through in no less "
            f"than {spent_floor:.1f} min; discovery to the gate took {total / 60:.1f} min"
            + (f" (x{total / 60 / spent_floor:.2f} the floor)" if spent_floor else "")
        )
        if not outcome.ok:
            print(f"  the gate: {outcome.failure[:300]}")
        out["panel"] = {
            "symbols": args.symbols, "months": args.months, "stages": stages,
            "through_gate_s": total, "spent_floor_min": spent_floor,
            "through_gate_vs_floor": total / 60 / spent_floor if spent_floor else None,
            "server": stats, "outcome": outcome.failure,
        }  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
