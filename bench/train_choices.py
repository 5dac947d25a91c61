"""What the LSTM's size, window and sampling cost in out-of-sample AUC, on the recording.

Runs the confluence training on the real recording (gate, features, walk-forward)
once per configuration and prints, per configuration, the wall time and the mean
per-fold out-of-sample AUC of the LSTM member and of the ensemble, long and short.
A month of hourly bars is a small sample: differences of a few hundredths are noise,
which is itself the finding that justifies the cheap defaults.

    python bench/train_choices.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _recording import DEFAULT_DATA
from train import recorded_root

CHOICES = {
    "default: 1x32 units, 24 bars, every 2nd window": {},
    "every window (stride 1)": {"window_stride": 1},
    "every 4th window": {"window_stride": 4},
    "1x64 units": {"hidden_size": 64},
    "2x128 units": {"hidden_size": 128, "num_layers": 2},
    "48-bar windows": {"sequence_length": 48},
    "8 epochs": {"epochs": 8, "patience": 3},
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("ASTERAI_REAL_DATA", DEFAULT_DATA))
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from asterai.config import load_settings
    from asterai.models.train import walk_forward

    work = Path(tempfile.mkdtemp(prefix="asterai-bench-choices-"))
    root = recorded_root(args.data, work)
    rows = []
    for label, lstm in CHOICES.items():
        copy = work / f"run{len(rows)}"
        shutil.copytree(root / "data", copy / "data")
        settings = load_settings(copy, train={"lstm": lstm})
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
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
