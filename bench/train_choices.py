"""What the training choices cost or buy out of sample, on the recording, fold by fold.

Two sections (``--only targets`` or ``--only lstm``; both by default), each running the
confluence training on the real recording (gate, features, walk-forward) once per
configuration:

* ``targets``: the target (triple barrier, cross-sectional, the R-multiple), the
  early-stopping metric (AUC, the per-bar IC, or ``mean_net``: what the top decile's
  trades are paid), the XGBoost member (binary, rank:pairwise grouped by bar, or a
  regression) and the sides traded (both, long only, short only; ``strategy.sides``,
  trained and traded with each). Per configuration: the traded rows' mean net return
  (the entry rule at the threshold, after the round-trip cost) fold by fold; pooled
  over every out-of-sample row, the rank IC, the Pearson IC on winsorised returns, the
  decile spread of means (top decile's mean net return minus the bottom's, mean of the
  sides), the traded rows' mean net return with its t (clustered by bar and
  overlap-adjusted), and the backtest of the predictions after every cost (Sharpe,
  return, trades). The configuration whose traded rows have the highest pooled mean net
  return is named: what the account is paid decides the defaults. If it does not earn
  (its mean is not above zero, or its backtest loses), the table says so.
* ``lstm``: the LSTM's size, window and sampling (mean per-fold AUC of the LSTM and the
  ensemble).

A month of hourly bars is a small sample: differences of a few tenths of a percent are
noise, the t says how far from it a figure is, and picking the best of many
configurations on the same folds biases the winner upward.

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

#: (label, train settings): the target, the stopping metric, the XGBoost member; each
#: is trained and traded once per ``SIDES``.
TARGETS: list[tuple[str, dict[str, Any]]] = [
    (f"{target} / {metric} / {objective}", {
        "target": target, "stopping_metric": metric, "xgboost": {"objective": objective},
    })
    for target, metric, objective in (
        ("triple_barrier", "auc", "binary"),
        ("triple_barrier", "mean_net", "binary"),
        ("cross_sectional", "auc", "binary"),
        ("cross_sectional", "auc", "rank_pairwise"),
        ("cross_sectional", "ic", "rank_pairwise"),
        ("cross_sectional", "mean_net", "rank_pairwise"),
        ("r_multiple", "ic", "pseudohuber"),
        ("r_multiple", "mean_net", "pseudohuber"),
        ("r_multiple", "mean_net", "squared"),
    )
]  # fmt: skip
SIDES = ("both", "long", "short")

LSTM_CHOICES = {
    "default: 1x32 units, 24 bars, every 2nd window": {},
    "every window (stride 1)": {"window_stride": 1},
    "every 4th window": {"window_stride": 4},
    "1x64 units": {"hidden_size": 64},
    "2x128 units": {"hidden_size": 128, "num_layers": 2},
    "48-bar windows": {"sequence_length": 48},
    "8 epochs": {"epochs": 8, "patience": 3},
}


def _mean2(m: dict[str, Any], key: str) -> float | None:
    """The mean of a figure over the long and short directions (None where one lacks it)."""
    values = [m[d].get(key) for d in ("long", "short")]
    return None if any(v is None for v in values) else float(np.mean(values))


def _fmt(x: float | None, digits: int = 3) -> str:
    return "  n/a" if x is None else f"{x:+.{digits}f}"


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{x:+.2%}"


def run_targets(root: Path, work: Path) -> list[dict[str, Any]]:
    from asterai.backtest.engine import backtest_model
    from asterai.config import load_settings
    from asterai.models.train import walk_forward

    rows = []
    for i, (label, train) in enumerate(TARGETS):
        for sides in SIDES:
            copy = work / f"target{i}-{sides}"
            shutil.copytree(root / "data", copy / "data")
            settings = load_settings(copy, train=train, strategy={"sides": sides})
            started = time.perf_counter()
            result = walk_forward("confluence", settings)
            seconds = time.perf_counter() - started
            bt = backtest_model(settings, "confluence").metrics
            pooled = result.overall["model"]
            paid = pooled["traded"]["all"]
            row = {
                "choice": label, "sides": sides, "settings": train, "seconds": seconds,
                "trees": [f.members["xgboost_trees"] for f in result.folds],
                "fold_rank_ic": [_mean2(f.metrics["model"], "ic") for f in result.folds],
                "fold_traded_mean": [f.metrics["model"]["traded"]["all"]["mean"]
                                     for f in result.folds],
                "rank_ic": _mean2(pooled, "ic"),
                "pearson_ic": _mean2(pooled, "pearson_ic"),
                "decile_spread": _mean2(pooled, "decile_spread"),
                "traded": pooled["traded"],
                "traded_rows": paid["rows"], "traded_mean": paid["mean"], "traded_t": paid["t"],
                "sharpe": bt["sharpe_ratio"], "total_return": bt["total_return"],
                "trades": bt["trades"],
            }  # fmt: skip
            rows.append(row)
            folds = " ".join(_pct(x) for x in row["fold_traded_mean"])
            print(
                f"{label:<40} {sides:<5}  traded mean per fold {folds}  pooled: rank IC "
                f"{_fmt(row['rank_ic'])} Pearson IC {_fmt(row['pearson_ic'])} decile spread "
                f"{_pct(row['decile_spread'])}  traded {paid['rows']} rows mean "
                f"{_pct(paid['mean'])} (t {_fmt(paid['t'], 1)})  backtest Sharpe "
                f"{_fmt(row['sharpe'], 2)} return {row['total_return']:+.1%} "
                f"{row['trades']} trades  {seconds:.0f} s",
                flush=True,
            )
    ranked = [r for r in rows if r["traded_mean"] is not None]
    best = max(ranked, key=lambda r: r["traded_mean"])
    print(
        f"\nhighest traded rows' mean net return: {best['choice']}, sides {best['sides']} "
        f"({_pct(best['traded_mean'])}, t {_fmt(best['traded_t'], 1)}; backtest "
        f"{best['total_return']:+.1%}, Sharpe {_fmt(best['sharpe'], 2)})"
    )
    earns = [
        f"{r['choice']} ({r['sides']})"
        for r in rows
        if (r["traded_mean"] or 0) > 0 and (r["traded_t"] or 0) > 2 and r["total_return"] > 0
    ]
    print(
        "traded mean above zero with t > 2 and a backtest that gains after every cost: "
        + (", ".join(earns) if earns else "none: nothing here earns after costs")
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
