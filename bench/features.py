"""Benchmark: the feature build against a straightforward per-symbol pandas version.

Collects the real recording through the replay server into a temp data root (with
discovery, so the gate knows which symbols are trainable) and loads the trainable
symbols through the gate with ``load_inputs``. Then, for two panels,

* the recorded panel (every trainable recorded symbol, about a month of 1h bars), and
* a scaled panel of ``--symbols`` symbols x ``--months`` months of 1h bars, made in
  memory by repeating the recorded inputs under new names (BTCUSDT and ETHUSDT keep
  their real names once, since the cross-asset features correlate with them), each
  copy's 1h, 4h and 1d bars tiled backwards in time, without funding,

it times ``asterai.features.build.build_features`` (cold first call, then the best of
``--repeat`` calls, so numba compilation is excluded) and the plain pandas
implementation of the same columns in ``bench/features_reference.py`` measured in the
same run, prints rows per second and the ratio reference / asterai, and checks that
the two frames agree on every shared column (rtol 1e-9, atol 1e-12, NaN equal to
NaN); every column that differs is listed with by how much. The target is a scaled
build under 10 seconds on 2 cores.

    python bench/features.py                        # 200 symbols x 6 months
    python bench/features.py --symbols 50 --months 1 --json out.json
    python bench/features.py --profile 10           # + cProfile of the scaled build
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _recording import bench_parser, collect_recording, recording_missing, tile
from features_reference import build_reference  # bench/ is the script's own folder

from asterai.config import FeatureSettings
from asterai.data.store import to_epoch_ms
from asterai.features.build import SymbolInput, build_features, load_inputs
from asterai.intervals import INTERVAL_MS

REAL_NAMES = ("BTCUSDT", "ETHUSDT")
RTOL, ATOL = 1e-9, 1e-12
TARGET_S = 10.0


def recorded_inputs(data: Path, work: Path) -> tuple[list[SymbolInput], FeatureSettings]:
    """Collect the recording through the replay server and load it through the gate."""
    settings = collect_recording(data, work)
    inputs, _ = load_inputs(settings)
    return inputs, settings.features


def scaled_inputs(
    inputs: list[SymbolInput], symbols: int, months: int, fs: FeatureSettings
) -> list[SymbolInput]:
    """``symbols`` renamed copies of ``inputs``, each tiled back to ``months`` months."""
    base_ms = INTERVAL_MS[fs.base_interval]
    length_ms = months * 30 * 86_400_000
    out = []
    for i in range(symbols):
        src = inputs[i % len(inputs)]
        keep = i < len(inputs) and src.symbol in REAL_NAMES
        name = src.symbol if keep else f"X{i:03d}{src.symbol}"
        end = int(to_epoch_ms(src.bars[fs.base_interval]["open_time"])[-1]) + base_ms
        start = end - length_ms
        bars = {iv: tile(frame, iv, start) for iv, frame in src.bars.items()}
        first = int(to_epoch_ms(bars[fs.base_interval]["open_time"])[0])
        out.append(SymbolInput(name, bars, None, first))
    return out


def compare(ours: pd.DataFrame, ref: pd.DataFrame) -> tuple[list[dict], list[str]]:
    """Columns that differ beyond the tolerance, and columns missing on either side."""
    missing = [c for c in ours.columns if c not in ref.columns] + [
        f"{c} (reference only)" for c in ref.columns if c not in ours.columns
    ]
    keys = ["symbol", "open_time"]
    if len(ours) != len(ref) or not (
        np.array_equal(ours["symbol"].to_numpy(), ref["symbol"].to_numpy())
        and np.array_equal(ours["open_time"].to_numpy(), ref["open_time"].to_numpy())
    ):
        both = ours.merge(ref, on=keys, how="outer", suffixes=("", "__ref"), indicator=True)
        lonely = int((both["_merge"] != "both").sum())
        missing.append(f"rows: {lonely} (symbol, open_time) keys in only one frame")
        both = both[both["_merge"] == "both"]
        ours = both[[c for c in ours.columns]].reset_index(drop=True)
        ref = both[keys + [f"{c}__ref" for c in ref.columns if c not in keys]]
        ref = ref.rename(columns=lambda c: c.removesuffix("__ref")).reset_index(drop=True)
    diffs = []
    for col in ours.columns:
        if col in keys or col not in ref.columns:
            continue
        a = ours[col].to_numpy(dtype=float)
        b = ref[col].to_numpy(dtype=float)
        close = np.isclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True)
        if close.all():
            continue
        bad = ~close
        finite = bad & np.isfinite(a) & np.isfinite(b)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.abs(a - b) / np.maximum(np.abs(b), ATOL)
        first = int(np.flatnonzero(bad)[0])
        diffs.append(
            {
                "column": col,
                "rows": int(bad.sum()),
                "of": len(a),
                "nan_pattern": int((np.isnan(a) != np.isnan(b)).sum()),
                "max_abs": float(np.abs(a - b)[finite].max()) if finite.any() else None,
                "max_rel": float(rel[finite].max()) if finite.any() else None,
                "example": {
                    "symbol": str(ours["symbol"].iloc[first]),
                    "open_time": str(ours["open_time"].iloc[first]),
                    "asterai": float(a[first]),
                    "reference": float(b[first]),
                },
            }
        )
    return diffs, missing


def measure(name: str, inputs: list[SymbolInput], fs: FeatureSettings, repeat: int) -> dict:
    started = time.perf_counter()
    result = build_features(inputs, fs)
    cold = time.perf_counter() - started
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = build_features(inputs, fs)
        runs.append(time.perf_counter() - started)
    started = time.perf_counter()
    ref = build_reference(inputs, fs)
    ref_s = time.perf_counter() - started
    diffs, missing = compare(result.frame, ref)
    rows = len(result.frame)
    best = min(runs)
    return {
        "panel": name,
        "symbols": len(result.symbols),
        "rows": rows,
        "columns": len(result.features) + len(result.labels),
        "asterai_cold_s": cold,
        "asterai_runs_s": runs,
        "asterai_best_s": best,
        "asterai_rows_per_s": rows / best,
        "reference_s": ref_s,
        "reference_rows_per_s": rows / ref_s,
        "reference_over_asterai": ref_s / best,
        "mismatched_columns": diffs,
        "missing": missing,
    }


def report(m: dict) -> None:
    print(
        f"\n{m['panel']}: {m['symbols']} symbols, {m['rows']:,} rows, "
        f"{m['columns']} feature + label columns"
    )
    runs = ", ".join(f"{s:.3f}" for s in m["asterai_runs_s"])
    print(f"  asterai   cold first run: {m['asterai_cold_s']:.3f} s")
    print(
        f"  asterai   best of {len(m['asterai_runs_s'])}:      {m['asterai_best_s']:.3f} s "
        f"({m['asterai_rows_per_s']:,.0f} rows/s)  [runs: {runs}]"
    )
    print(
        f"  reference (pandas):      {m['reference_s']:.3f} s "
        f"({m['reference_rows_per_s']:,.0f} rows/s)"
    )
    print(f"  ratio reference / asterai: x{m['reference_over_asterai']:.1f}")
    if not m["mismatched_columns"] and not m["missing"]:
        print(f"  outputs agree on every column (rtol {RTOL:g}, atol {ATOL:g})")
    for item in m["missing"]:
        print(f"  MISSING: {item}")
    for d in m["mismatched_columns"]:
        ex = d["example"]
        print(
            f"  DIFFERS: {d['column']}: {d['rows']} of {d['of']} rows "
            f"({d['nan_pattern']} NaN-pattern), max abs {d['max_abs']}, max rel {d['max_rel']}; "
            f"e.g. {ex['symbol']} {ex['open_time']}: asterai {ex['asterai']!r} "
            f"vs reference {ex['reference']!r}"
        )


def profile(inputs: list[SymbolInput], fs: FeatureSettings, top: int) -> str:
    prof = cProfile.Profile()
    prof.enable()
    build_features(inputs, fs)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="timed asterai runs (best kept)")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="cProfile the scaled build, print the top N by cumulative time",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if recording_missing(args):
        return 2
    if args.symbols < 1 or args.months < 1 or args.repeat < 1:
        print("--symbols, --months and --repeat must be at least 1", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="asterai-bench-features-"))
    inputs, fs = recorded_inputs(args.data, work)
    scaled = scaled_inputs(inputs, args.symbols, args.months, fs)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"recorded: {len(inputs)} trainable symbols; scaled: {args.symbols} symbols x "
        f"{args.months} months of {fs.base_interval} bars; {cores} cores available"
    )

    real = measure("recorded panel", inputs, fs, args.repeat)
    report(real)
    big = measure(f"scaled panel {args.symbols} x {args.months} months", scaled, fs, args.repeat)
    report(big)
    under = big["asterai_best_s"] < TARGET_S
    cold_under = big["asterai_cold_s"] < TARGET_S
    print(
        f"\nscaled build under {TARGET_S:g} s: {'YES' if under else 'NO'} "
        f"(best {big['asterai_best_s']:.2f} s on {cores} cores); first (cold) build: "
        f"{'YES' if cold_under else 'NO'} ({big['asterai_cold_s']:.2f} s)"
    )
    agree = not (real["mismatched_columns"] or big["mismatched_columns"])
    print(f"outputs agree on every shared column: {'YES' if agree else 'NO'}")

    if args.profile:
        print(f"\ncProfile of one scaled build (top {args.profile} by cumulative time):")
        print(profile(scaled, fs, args.profile))

    if args.json:
        result = {
            "cores": cores,
            "target_s": TARGET_S,
            "scaled_under_target": under,
            "scaled_cold_under_target": cold_under,
            "outputs_agree": agree,
            "rtol": RTOL,
            "atol": ATOL,
            "recorded": real,
            "scaled": dict(big, requested_symbols=args.symbols, months=args.months),
        }
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
