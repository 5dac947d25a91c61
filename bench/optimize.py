"""Benchmark: what the strategy search costs, on the real recording, on this machine.

Measured in one run, each against a reference from the same run:

* one plain training run (``asterai train confluence``'s ``walk_forward``, default
  settings) - the reference;
* one trial with the default parameters (labels unchanged): the walk-forward on the
  search part plus its backtest, as the study runs it. Target: at most 1.2x the plain
  training run;
* one trial whose label horizon and barriers differ (the label columns recomputed);
* trials per minute of a whole ``asterai optimize`` (the default space, ``--trials``
  trials) with 1 and with 2 worker processes, the final-window grading included.

    python bench/optimize.py                 # 10 trials per worker count
    python bench/optimize.py --trials 20 --json optimize.json
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _recording import bench_parser, recording_missing
from train import recorded_root


def _fresh(root: Path, work: Path, name: str) -> Path:
    copy = work / name
    shutil.copytree(root / "data", copy / "data")
    return copy


def _storage_figures(root: Path) -> dict:
    """What the study costs on disk: the journal's size, and one trial's per-bar returns
    packed (as stored) against the same numbers as a JSON list (as stored before)."""
    import numpy as np
    import optuna
    from optuna.storages.journal import JournalFileBackend

    from asterai.optimize.study import trial_returns
    from asterai.paths import DataPaths

    path = DataPaths.at(root).study("confluence") / "journal.log"
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    study = optuna.load_study(study_name="confluence", storage=storage)
    packed, plain, bars = [], [], []
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        series = trial_returns(t, "bar_returns")
        packed.append(len(t.user_attrs["bar_returns"]))
        plain.append(len(json.dumps(series.tolist())))
        bars.append(len(series))
    ratio = float(np.median(np.divide(packed, plain))) if packed else float("nan")
    return {
        "journal_bytes": path.stat().st_size,
        "packed_bytes": float(np.median(packed)) if packed else float("nan"),
        "list_bytes": float(np.median(plain)) if plain else float("nan"),
        "bars": float(np.median(bars)) if bars else float("nan"),
        "ratio": ratio,
    }


def main() -> int:
    parser = bench_parser(__doc__, panel=False)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if recording_missing(args):
        return 2
    logging.basicConfig(level=logging.ERROR)
    from asterai.config import load_settings
    from asterai.models.train import walk_forward
    from asterai.optimize.run import max_horizon, run_optimize
    from asterai.optimize.trial import evaluate
    from asterai.optimize.workspace import Workspace

    work = Path(tempfile.mkdtemp(prefix="asterai-bench-optimize-"))
    root = recorded_root(args.data, work)
    out: dict = {"cpu_count": os.cpu_count(), "trials": args.trials}

    settings = load_settings(_fresh(root, work, "train"))
    walk_forward("confluence", settings)  # warm: numba's kernels compiled, caches read
    started = time.perf_counter()
    walk_forward("confluence", settings)
    out["train_s"] = time.perf_counter() - started

    settings = load_settings(_fresh(root, work, "trial"))
    started = time.perf_counter()
    ws = Workspace(settings, "confluence", max_horizon(settings))
    out["workspace_s"] = time.perf_counter() - started
    evaluate(settings, ws)  # warm
    started = time.perf_counter()
    evaluate(settings, ws)
    out["trial_same_labels_s"] = time.perf_counter() - started
    moved = load_settings(settings.data_root, features={"label_horizon": 12, "tp_atr": 2.5})
    started = time.perf_counter()
    evaluate(moved, ws)
    out["trial_new_labels_s"] = time.perf_counter() - started
    ratio = out["trial_same_labels_s"] / out["train_s"]
    print(
        f"plain training run {out['train_s']:.1f} s; one trial (same labels) "
        f"{out['trial_same_labels_s']:.1f} s = {ratio:.2f}x (target <= 1.2x: "
        f"{'MET' if ratio <= 1.2 else 'NOT MET'}); one trial with new labels "
        f"{out['trial_new_labels_s']:.1f} s; the workspace (gate, features, market) "
        f"{out['workspace_s']:.1f} s once per worker"
    )
    for workers in (1, 2):
        copy = _fresh(root, work, f"study{workers}")
        s = load_settings(copy, optimize={"trials": args.trials, "workers": workers})
        started = time.perf_counter()
        result = run_optimize(s)
        seconds = time.perf_counter() - started
        t = result.summary["trials"]
        out[f"workers_{workers}"] = {
            "seconds": seconds,
            "trials_per_minute": t["total"] / seconds * 60,
            "complete": t["complete"],
            "pruned": t["pruned"],
            "failed": t["fail"],
        }
        print(
            f"{workers} worker(s): {t['total']} trials in {seconds:.0f} s = "
            f"{t['total'] / seconds * 60:.1f} trials/min ({t['complete']} complete, "
            f"{t['pruned']} pruned, {t['fail']} failed; the final-window grading included)"
        )
        if workers == 1:
            out["storage"] = _storage_figures(copy)
            st = out["storage"]
            print(
                f"storage: journal {st['journal_bytes'] / 1024:.0f} kB for {t['total']} trials; "
                f"a trial's per-bar returns packed {st['packed_bytes']:.0f} B vs "
                f"{st['list_bytes']:.0f} B as a JSON list = {st['ratio']:.2f}x "
                f"(median over complete trials, {st['bars']:.0f} bars each)"
            )
    speedup = out["workers_2"]["trials_per_minute"] / out["workers_1"]["trials_per_minute"]
    out["two_worker_speedup"] = speedup
    print(f"2 workers / 1 worker: {speedup:.2f}x trials per minute on {os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
