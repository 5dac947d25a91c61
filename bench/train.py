"""Benchmark: wall time and peak memory of both trainings with the default settings, on CPU.

Two panels:

* the real recording (every recorded symbol, about a month of 1h bars), collected
  through the replay server, gated and turned into features exactly as a user would;
* a 200-symbol x 6-month panel (864,000 rows), the features benchmark's: renamed copies
  of the recorded series tiled back in time. The gate rightly refuses such copies as
  duplicates, so this panel is handed to the trainer directly; its AUCs mean nothing
  (copies of one month repeat), its time and memory are what is measured.

Each training runs in its own process, so its peak resident memory (``ru_maxrss``) is
its own. Targets for the big panel: both models under 10 minutes on 2 cores and under
4 GB. Also printed for reference: one XGBoost fit and one LSTM epoch over the whole big
panel, measured in the same run.

    python bench/train.py                        # both panels
    python bench/train.py --symbols 40 --months 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _recording import bench_parser, recording_missing

BENCH = Path(__file__).resolve().parent


def child(name: str, root: Path, gate: bool) -> None:
    """One training, in this process; prints a JSON line with its measurements."""
    from asterai.config import load_settings
    from asterai.models.data import load_panel
    from asterai.models.train import walk_forward

    settings = load_settings(root)
    started = time.perf_counter()
    panel = None
    if not gate:
        native = name == "aster_native"
        panel = load_panel(
            settings,
            min_history_bars=(
                settings.aster_native.min_history_bars
                if native
                else settings.train.min_history_bars
            ),
            with_categories=native,
            listing_age_cap_h=settings.discovery.new_listing_days * 24 if native else None,
            check_gate=False,
        )
    result = walk_forward(name, settings, panel=panel)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    overall = result.overall["model"]
    print(
        "RESULT "
        + json.dumps(
            {
                "model": name,
                "seconds": seconds,
                "peak_bytes": peak,
                "folds": len(result.folds),
                "rows": sum(r.rows["fit"] for r in result.folds),
                "auc_long_per_fold": overall["long"]["mean_fold_auc"],
                "auc_short_per_fold": overall["short"]["mean_fold_auc"],
                "logistic_long_per_fold": result.overall["logistic"]["long"]["mean_fold_auc"],
                "logistic_short_per_fold": result.overall["logistic"]["short"]["mean_fold_auc"],
                "device": result.config["versions"]["device"],
                "per_fold_seconds": [round(r.seconds, 1) for r in result.folds],
            }
        ),
        flush=True,
    )


def run_child(name: str, root: Path, gate: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--root", str(root)]
    if not gate:
        cmd.append("--no-gate")
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{name} training failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def recorded_root(data: Path, work: Path) -> Path:
    from _recording import collect_recording

    from asterai.data.gate import validate
    from asterai.features.build import run_features

    settings = collect_recording(data, work / "recorded")
    report = validate(settings, environment=False)
    if not report.ok:
        raise SystemExit("the recording is not READY: " + "; ".join(report.reasons()))
    run_features(settings, plots=False)
    return settings.data_root


def panel_root(data: Path, work: Path, symbols: int, months: int) -> tuple[Path, int]:
    """The features benchmark's scaled panel, with its features and universe written."""
    sys.path.insert(0, str(BENCH))
    from features import recorded_inputs, scaled_inputs

    from asterai.config import load_settings
    from asterai.data.universe import BaseBars, build_universe, write_universe
    from asterai.features.build import build_features, write_features

    inputs, fs = recorded_inputs(data, work / "source")
    scaled = scaled_inputs(inputs, symbols, months, fs)
    settings = load_settings(work / "panel")
    result = build_features(scaled, fs)
    write_features(settings, result)
    bases = {i.symbol: BaseBars.from_frame(i.bars[fs.base_interval], i.listing_ms) for i in scaled}
    write_universe(settings, build_universe(bases, {}, settings))
    return settings.data_root, len(result.frame)


def anchors(root: Path) -> dict:
    """One XGBoost fit (defaults, 400 rounds, no early stop) and one LSTM epoch, whole panel."""
    import numpy as np

    from asterai.config import load_settings
    from asterai.models.data import load_panel
    from asterai.models.lstm import LSTMMember
    from asterai.models.scoring import for_rows
    from asterai.models.xgb import XGBMember

    settings = load_settings(root)
    panel = load_panel(settings, min_history_bars=1, check_gate=False)
    rows = np.flatnonzero(panel.tradeable & panel.labelled)
    xs = settings.train.xgboost.model_copy(update={"early_stopping_rounds": 10_000})
    started = time.perf_counter()
    metric = settings.train.stopping_metric

    def scorer(r):
        return for_rows(metric, panel.y, panel.fwd, panel.times, r)

    XGBMember(xs, "cpu", 0).fit(
        panel.X[rows], panel.y[rows], panel.times[rows], panel.X[rows[:1000]], scorer(rows[:1000])
    )
    xgb_s = time.perf_counter() - started
    one_epoch = settings.train.lstm.model_copy(update={"epochs": 1})
    started = time.perf_counter()
    LSTMMember(one_epoch, "cpu", 0).fit(
        panel.X, panel.features, panel.runs(), panel.y, rows, rows[:2000], scorer
    )
    lstm_s = time.perf_counter() - started
    return {"xgboost_400_rounds_s": xgb_s, "lstm_one_epoch_s": lstm_s, "rows": int(len(rows))}


def report(title: str, results: list[dict]) -> None:
    print(f"\n{title}")
    for r in results:
        print(
            f"  {r['model']:<12} {r['seconds']:7.1f} s   peak {r['peak_bytes'] / 2**30:5.2f} GiB   "
            f"{r['folds']} folds, per fold {r['per_fold_seconds']} s   AUC per fold long "
            f"{r['auc_long_per_fold']:.3f} short {r['auc_short_per_fold']:.3f} (logistic "
            f"{r['logistic_long_per_fold']:.3f} / {r['logistic_short_per_fold']:.3f})   "
            f"on {r['device']['xgboost']}/{r['device']['torch']}"
        )


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--skip-recorded", action="store_true")
    parser.add_argument("--skip-anchors", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-gate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.root, not args.no_gate)
        return 0
    if recording_missing(args):
        return 2
    work = Path(tempfile.mkdtemp(prefix="asterai-bench-train-"))
    out: dict = {"cpu_count": os.cpu_count()}
    if not args.skip_recorded:
        root = recorded_root(args.data, work)
        out["recorded"] = [run_child(m, root, True) for m in ("confluence", "aster_native")]
        report("real recording (gate, features, defaults)", out["recorded"])
    root, rows = panel_root(args.data, work, args.symbols, args.months)
    out["panel_rows"] = rows
    out["panel"] = [run_child(m, root, False) for m in ("confluence", "aster_native")]
    title = f"{args.symbols} symbols x {args.months} months ({rows:,} rows, tiled copies)"
    report(title, out["panel"])
    total = sum(r["seconds"] for r in out["panel"])
    peak = max(r["peak_bytes"] for r in out["panel"])
    print(
        f"  both models: {total / 60:.1f} min (target < 10 min on 2 cores: "
        f"{'MET' if total < 600 else 'NOT MET'}), peak {peak / 2**30:.2f} GiB (target < 4 GB: "
        f"{'MET' if peak < 4e9 else 'NOT MET'})"
    )
    if not args.skip_anchors:
        out["anchors"] = anchors(root)
        a = out["anchors"]
        print(
            f"  anchors on {a['rows']:,} rows: one XGBoost fit of 400 rounds {a['xgboost_400_rounds_s']:.1f} s, "
            f"one LSTM epoch (every {2}nd window) {a['lstm_one_epoch_s']:.1f} s"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
