"""Benchmark: the quality gate's cost against simply reading the same files.

Collects the real recording through the replay server into a temp data root, then
scales it to a panel of ``--symbols`` symbols x ``--months`` months of 1h/4h/1d
bars by repeating the recorded series under new names (each copy's bars tiled
backwards in time). Prints the gate's wall time, bars checked per second, and the
ratio to the time it takes just to read every file with pyarrow, measured in the
same run. The copies are, rightly, refused as duplicates of each other; every rule
still runs on every file, which is what is timed.

    python bench/validate.py                      # 200 symbols x 6 months
    python bench/validate.py --symbols 19 --months 1
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from _recording import bench_parser, collect_recording, recording_missing, tile

from asterai.config import load_settings
from asterai.data.gate import validate
from asterai.data.gate.grids import decimal_unit
from asterai.data.store import read_series, to_epoch_ms, write_series
from asterai.data.universe import BaseBars, build_universe, write_universe
from asterai.intervals import INTERVAL_MS
from asterai.paths import DataPaths

INTERVALS = ("1h", "4h", "1d")


def scaled_panel(source: DataPaths, target: DataPaths, symbols: int, months: int) -> int:
    """Write ``symbols`` renamed copies of the collected series, tiled to ``months``."""
    live = sorted(
        {p.name.rsplit("_", 1)[0] for p in source.historical.glob("*_1h.parquet")}
        - {"1INCHUSDT", "AIUSDT", "ALGOUSDT"}
    )
    target.historical.mkdir(parents=True, exist_ok=True)
    bars = 0
    for i in range(symbols):
        base = live[i % len(live)]
        name = f"X{i:03d}{base}"
        for interval in INTERVALS:
            series = read_series(source.klines(base, interval), "klines")
            last = int(to_epoch_ms(series.frame["open_time"])[-1])
            tiled = tile(
                series.frame, interval, last - months * 30 * 86_400_000 + INTERVAL_MS[interval]
            )
            prov = dict(series.provenance, symbol=name, rows=len(tiled))
            write_series(target.klines(name, interval), tiled, prov, "klines")
            bars += len(tiled)
    return bars


def write_discovery(paths: DataPaths) -> None:
    """A discovery file with each panel symbol's tick and lot step, so the grid rules run.

    The units are the coarsest decimal grids of the symbol's own 1h prices and volumes,
    as the replay server advertises them.
    """
    entries = []
    for path in sorted(paths.historical.glob("*_1h.parquet")):
        frame = read_series(path, "klines").frame
        prices = frame[["open", "high", "low", "close"]].to_numpy(dtype=float)
        entries.append(
            {
                "symbol": path.name.removesuffix("_1h.parquet"),
                "trainable": True,
                "filters": {
                    "tick_size": decimal_unit(prices),
                    "step_size": decimal_unit(frame["volume"].to_numpy(dtype=float)),
                },
            }
        )
    paths.discovery.write_text(json.dumps({"symbols": entries}))


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if recording_missing(args):
        return 2

    work = Path(tempfile.mkdtemp(prefix="asterai-bench-gate-"))
    source = collect_recording(args.data, work / "source", discover=False)
    panel = load_settings(work / "panel")
    bars = scaled_panel(
        DataPaths.at(source.data_root), DataPaths.at(panel.data_root), args.symbols, args.months
    )

    write_discovery(DataPaths.at(panel.data_root))
    files = sorted(DataPaths.at(panel.data_root).historical.glob("*.parquet"))
    started = time.perf_counter()
    for path in files:
        pq.read_table(path).to_pandas()
    read_s = time.perf_counter() - started

    started = time.perf_counter()
    report = validate(panel, environment=False)
    gate_s = time.perf_counter() - started

    # the universe (the gate writes it only when nothing is contaminated, and the panel's
    # copies are refused as duplicates, so it is timed here on the same bars)
    paths = DataPaths.at(panel.data_root)
    bases = {
        p.name.removesuffix("_1h.parquet"): BaseBars.from_frame(read_series(p, "klines").frame)
        for p in sorted(paths.historical.glob("*_1h.parquet"))
    }
    started = time.perf_counter()
    universe = build_universe(bases, {}, panel)
    write_universe(panel, universe)
    universe_s = time.perf_counter() - started

    # the genuine collection, for the record: what the gate says about real data
    real = validate(source, environment=False, write=False)
    result = {
        "symbols": args.symbols,
        "months": args.months,
        "files": len(files),
        "bars": bars,
        "read_s": read_s,
        "gate_s": gate_s,
        "bars_per_s": bars / gate_s,
        "gate_over_read": gate_s / read_s,
        "refused_in_panel": len(report.symbols) - len(report.trainable),
        "universe_rows": len(universe),
        "universe_s": universe_s,
        "real_recording_trainable": real.trainable,
    }
    print(
        f"panel: {args.symbols} symbols x {args.months} months, {len(files)} files, {bars:,} bars"
    )
    print(f"read every file (pyarrow -> pandas): {read_s:.2f} s")
    print(f"quality gate, every rule:            {gate_s:.2f} s  ({bars / gate_s:,.0f} bars/s)")
    print(f"ratio gate / read: x{gate_s / read_s:.1f}")
    print(
        f"universe: {len(universe):,} rows built and written in {universe_s:.2f} s "
        f"(x{universe_s / read_s:.2f} the read)"
    )
    print(
        f"real recording: {len(real.trainable)} symbols trainable, excluded: {real.excluded}, "
        f"contaminated: {real.contaminated}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
