"""What the training choices cost or buy out of sample, on the recording, fold by fold.

Two sections (``--only targets`` or ``--only lstm``; both by default), each running the
confluence training on the real recording (gate, features, walk-forward) once per
configuration:

* ``targets``: the target (triple barrier vs cross-sectional), the early-stopping
  metric (log loss vs AUC vs the per-bar IC) and the XGBoost member (binary vs
  rank:pairwise grouped by bar). Per configuration and fold: XGBoost's trees, the LSTM's
  epochs and whether it joined, the per-bar IC (mean of long and short); then the pooled
  AUC, the pooled per-bar IC with its overlap-adjusted t (Hansen-Hodrick), the logistic baseline's per-bar IC
  on the same rows, and the backtest after costs (Sharpe, return, trades) of the
  predictions. The configuration with the highest mean per-fold IC is named: that is
  how the defaults are chosen (never by the backtest's return). AUCs of different
  targets answer different questions; the per-bar IC (against the same forward
  returns) and the backtest are comparable across all rows.
* ``lstm``: the LSTM's size, window and sampling (mean per-fold AUC of the LSTM and the
  ensemble).

A month of hourly bars is a small sample: differences of a few hundredths are noise,
and the table says how many folds each figure stands on.

    python bench/train_choices.py
    python bench/train_choices.py --only targets --json choices.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _recording import DEFAULT_DATA
from train import recorded_root

#: (label, train settings): the target, the stopping metric, the XGBoost member.
TARGETS: list[tuple[str, dict[str, Any]]] = [
    (f"{target} / {metric} / {objective}", {
        "target": target, "stopping_metric": metric, "xgboost": {"objective": objective},
    })
    for target, metric, objective in (
        ("triple_barrier", "logloss", "binary"),
        ("triple_barrier", "auc", "binary"),
        ("triple_barrier", "ic", "binary"),
        ("triple_barrier", "ic", "rank_pairwise"),
        ("cross_sectional", "logloss", "binary"),
        ("cross_sectional", "auc", "binary"),
        ("cross_sectional", "ic", "binary"),
        ("cross_sectional", "auc", "rank_pairwise"),
        ("cross_sectional", "ic", "rank_pairwise"),
    )
]  # fmt: skip
#: The ranker (the default member) with the issue's plain reference XGBoost's stopping
#: (patience 50, min_child_weight 20), and with 8 sampled pairs per row instead of all
#: pairs in the bar (the cheaper gradient on a wide cross-section).
TARGETS += [
    ("cross_sectional / auc / rank_pairwise, patience 50, mcw 20", {
        "target": "cross_sectional", "stopping_metric": "auc",
        "xgboost": {"objective": "rank_pairwise", "early_stopping_rounds": 50,
                    "min_child_weight": 20.0},
    }),
    ("cross_sectional / auc / rank_pairwise, 8 pairs per row", {
        "target": "cross_sectional", "stopping_metric": "auc",
        "xgboost": {"objective": "rank_pairwise", "ranking_pairs": 8},
    }),
]  # fmt: skip

LSTM_CHOICES = {
    "default: 1x32 units, 24 bars, every 2nd window": {},
    "every window (stride 1)": {"window_stride": 1},
    "every 4th window": {"window_stride": 4},
    "1x64 units": {"hidden_size": 64},
    "2x128 units": {"hidden_size": 128, "num_layers": 2},
    "48-bar windows": {"sequence_length": 48},
    "8 epochs": {"epochs": 8, "patience": 3},
}


def _ic(m: dict[str, Any]) -> float:
    """The mean of the long and short per-bar IC (a direction without one counts 0)."""
    return float(np.mean([m[d]["ic"] or 0.0 for d in ("long", "short")]))


def _fmt(x: float | None, digits: int = 3) -> str:
    return "  n/a" if x is None else f"{x:+.{digits}f}"


def run_targets(root: Path, work: Path) -> list[dict[str, Any]]:
    from asterai.backtest.engine import backtest_model
    from asterai.config import load_settings
    from asterai.models.train import walk_forward

    rows = []
    for i, (label, train) in enumerate(TARGETS):
        copy = work / f"target{i}"
        shutil.copytree(root / "data", copy / "data")
        settings = load_settings(copy, train=train)
        started = time.perf_counter()
        result = walk_forward("confluence", settings)
        seconds = time.perf_counter() - started
        bt = backtest_model(settings, "confluence").metrics
        s = result.config["training_summary"]
        pooled = result.overall["model"]
        row = {
            "choice": label,
            "settings": train,
            "seconds": seconds,
            "trees": [f["xgboost_trees"] for f in s["folds"]],
            "lstm_epochs": [f["lstm_epochs"] for f in s["folds"]],
            "lstm_joined": [bool(f["lstm_in_ensemble"]) for f in s["folds"]],
            "fold_ic": [_ic(r.metrics["model"]) for r in result.folds],
            "fold_logistic_ic": [_ic(r.metrics["logistic"]) for r in result.folds],
            "pooled_auc": float(np.mean([pooled[d]["auc"] for d in ("long", "short")])),
            "pooled_ic": _ic(pooled),
            "pooled_ic_t": {d: pooled[d]["ic_t"] for d in ("long", "short")},
            "pooled_logistic_ic": _ic(result.overall["logistic"]),
            "final_trees": result.config["final_model"]["xgboost_trees"],
            "sharpe": bt["sharpe_ratio"],
            "total_return": bt["total_return"],
            "trades": bt["trades"],
        }
        row["mean_fold_ic"] = float(np.mean(row["fold_ic"]))
        row["mean_fold_logistic_ic"] = float(np.mean(row["fold_logistic_ic"]))
        rows.append(row)
        t = row["pooled_ic_t"]
        print(
            f"{label:<58} trees {'/'.join(map(str, row['trees'])):<14} LSTM in "
            f"{sum(row['lstm_joined'])}/{len(row['lstm_joined'])}  per-fold IC "
            f"{' '.join(_fmt(x, 2) for x in row['fold_ic'])}  mean {_fmt(row['mean_fold_ic'])} "
            f"(logistic {_fmt(row['mean_fold_logistic_ic'])})  pooled AUC "
            f"{row['pooled_auc']:.3f} IC {_fmt(row['pooled_ic'])} (t {_fmt(t['long'], 1)} / "
            f"{_fmt(t['short'], 1)})  Sharpe {_fmt(row['sharpe'], 2)} return "
            f"{row['total_return']:+.1%} {row['trades']} trades  {seconds:.0f} s",
            flush=True,
        )
    best = max(rows, key=lambda r: r["mean_fold_ic"])
    print(f"\nhighest mean per-fold IC: {best['choice']} ({best['mean_fold_ic']:+.3f})")
    beat = [r["choice"] for r in rows if r["mean_fold_ic"] > r["mean_fold_logistic_ic"]]
    print(
        "beats the logistic baseline's per-fold IC on the same rows: "
        + (", ".join(beat) if beat else "none")
    )
    return rows


def run_lstm(root: Path, work: Path) -> list[dict[str, Any]]:
    from asterai.config import load_settings
    from asterai.models.train import walk_forward

    rows = []
    for label, lstm in LSTM_CHOICES.items():
        copy = work / f"lstm{len(rows)}"
        shutil.copytree(root / "data", copy / "data")
        settings = load_settings(copy, train={"lstm": lstm, "lstm_gate": False})
        started = time.perf_counter()
        result = walk_forward("confluence", settings)
        seconds = time.perf_counter() - started
        o = result.overall
        rows.append(
            {
                "choice": label,
                "seconds": seconds,
                "lstm_long": o["lstm"]["long"]["mean_fold_auc"],
                "lstm_short": o["lstm"]["short"]["mean_fold_auc"],
                "model_long": o["model"]["long"]["mean_fold_auc"],
                "model_short": o["model"]["short"]["mean_fold_auc"],
                "xgboost_long": o["xgboost"]["long"]["mean_fold_auc"],
                "xgboost_short": o["xgboost"]["short"]["mean_fold_auc"],
            }
        )
        r = rows[-1]
        print(
            f"{label:<48} {seconds:6.1f} s   LSTM AUC {r['lstm_long']:.3f} / {r['lstm_short']:.3f}   "
            f"ensemble {r['model_long']:.3f} / {r['model_short']:.3f}   (XGBoost alone "
            f"{r['xgboost_long']:.3f} / {r['xgboost_short']:.3f})",
            flush=True,
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("ASTERAI_REAL_DATA", DEFAULT_DATA))
    )
    parser.add_argument("--only", choices=("targets", "lstm"), default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the sample-size warning, once per run: quiet

    work = Path(tempfile.mkdtemp(prefix="asterai-bench-choices-"))
    root = recorded_root(args.data, work)
    out: dict[str, Any] = {}
    if args.only in (None, "targets"):
        print("target / early stopping / XGBoost member (confluence, on the recording)")
        out["targets"] = run_targets(root, work)
    if args.only in (None, "lstm"):
        print("\nLSTM size, window and sampling (the LSTM always in the ensemble)")
        out["lstm"] = run_lstm(root, work)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
