"""What a trained model's folder records: its config (``model_config``), the leakage
checks, the per-category figures, the feature importance, the label's definition, the
predictions file's metadata and the rows whose outputs fingerprint the final model
(``models.train`` calls these; it owns the loop).
"""

from __future__ import annotations

import json
import platform
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from asterai import __version__
from asterai.config import Settings
from asterai.features.labels import MIN_CROSS_SECTION
from asterai.intervals import iso_ms
from asterai.models import money
from asterai.models.data import (
    DIRECTIONS,
    LABEL_LONG,
    LABEL_SHORT,
    Panel,
    round_trip_cost,
    row_categories,
)
from asterai.models.lstm import LSTMMember
from asterai.models.money import TradeRule
from asterai.models.splits import Layout
from asterai.models.target import r_multiple_record
from asterai.models.xgb import XGBMember
from asterai.paths import DataPaths

if TYPE_CHECKING:
    from asterai.models.train import FoldResult, _Spec

#: What ``p_long`` / ``p_short`` answer, per ``train.target``.
QUESTIONS = {
    "triple_barrier": "if a trade were opened on this signal, would it reach its target "
    "before its stop?",
    "cross_sectional": "would this symbol's return over the label horizon, from the next "
    "open, beat the median of the symbols tradeable at this bar by the round-trip cost?",
    "r_multiple": "sigmoid of the expected net R-multiple of a trade opened on this signal "
    "(its outcome in units of its risk, after the round-trip cost): 0.5 is break-even",
}
FINGERPRINT_ROWS = 64
PREDICTIONS_META_KEY = b"asterai.predictions"


def versions(device: dict[str, Any]) -> dict[str, Any]:
    import sklearn
    import torch
    import xgboost

    return {
        "asterai": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "xgboost": xgboost.__version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "device": device,
    }


def leakage_checks(
    panel: Panel, lay: Layout, predictions: pd.DataFrame, control_auc: dict[str, float | None]
) -> dict[str, Any]:
    """What was checked before any AUC is shown."""
    gaps = []
    for fold in lay.folds:
        gaps.append(int((fold.test_start - fold.valid_end) // panel.step_ms))
        gaps.append(int((fold.valid_start - fold.train_end) // panel.step_ms))
    gaps.append(int((lay.final.valid_start - lay.final.train_end) // panel.step_ms))
    windows = [*lay.folds, lay.final]
    return {
        "min_gap_bars": min(gaps),
        "required_gap_bars": lay.gap_bars,
        "purge_ok": min(gaps) >= lay.gap_bars,
        "purge_includes": "every fold's fit -> validation and validation -> test gaps, and "
        "the final model's fit -> validation gap",
        "validation_parts_disjoint": all(
            w.valid_start <= w.stop_end < w.calib_start <= w.valid_end for w in windows
        ),
        "label_columns_in_features": [f for f in panel.features if f.startswith("label_")],
        "predictions_only_in_test_windows": bool(
            all(
                (
                    (predictions["fold"] == f.fold)
                    <= (
                        (
                            predictions["open_time"]
                            >= pd.Timestamp(f.test_start, unit="ms", tz="UTC")
                        )
                        & (
                            predictions["open_time"]
                            <= pd.Timestamp(f.test_end, unit="ms", tz="UTC")
                        )
                    )
                ).all()
                for f in lay.folds
            )
        ),
        "shuffled_label_control_auc": control_auc,
        "feature_causality": "tests/test_features.py rebuilds the features on truncated "
        "history and requires every earlier value to be bit-identical",
    }


def by_category(
    panel: Panel, predictions: pd.DataFrame, paths: DataPaths, rule: TradeRule
) -> dict[str, Any]:
    """Out-of-sample metrics per category (new listings apart from majors), next to the
    confluence model's on the same rows where its predictions exist."""
    from asterai.data.store import to_epoch_ms

    index = pd.Series(
        np.arange(len(panel.times)),
        index=pd.MultiIndex.from_arrays([np.array(panel.symbols)[panel.code], panel.times]),
    )
    rows = index.reindex(
        pd.MultiIndex.from_arrays([predictions["symbol"], to_epoch_ms(predictions["open_time"])])
    ).to_numpy()
    own = predictions[["p_long", "p_short"]].to_numpy()
    other = None
    stale = None
    confluence_path = paths.predictions("confluence")
    if confluence_path.exists():
        meta = json.loads(
            (pq.read_schema(confluence_path).metadata or {}).get(PREDICTIONS_META_KEY, b"{}")
        )
        if meta.get("data_sha256") != panel.inputs_sha256:
            stale = (
                f"{confluence_path.name} was made from other features or another universe: "
                "train the confluence model again to compare on the same rows"
            )
            confluence_path = None
    if confluence_path is not None and confluence_path.exists():
        conf = pd.read_parquet(
            confluence_path, columns=["symbol", "open_time", "p_long", "p_short"]
        )
        joined = predictions[["symbol", "open_time"]].merge(
            conf, on=["symbol", "open_time"], how="left"
        )
        other = joined[["p_long", "p_short"]].to_numpy(dtype=float)
    # the category at each bar: a new listing while it is young, then what it is
    age = (
        panel.listing_age_h[rows] if panel.listing_age_h is not None else np.full(len(rows), np.nan)
    )
    cats = row_categories(
        predictions["symbol"].to_numpy(), panel.category, age, panel.new_listing_h
    )
    out: dict[str, Any] = {}
    for cat in sorted(set(cats)):
        sel = (cats == cat) & panel.labelled[rows]
        if other is not None:
            sel_both = sel & np.isfinite(other).all(axis=1)
        entry: dict[str, Any] = {
            "symbols": sorted(set(predictions["symbol"][cats == cat])),
            "rows": int(sel.sum()),
            "aster_native": money.evaluate(
                own[sel], panel.y[rows[sel]], panel.fwd[rows[sel]], panel.times[rows[sel]], rule
            ),
        }
        if other is not None:
            r = rows[sel_both]
            entry["same_rows"] = int(sel_both.sum())
            entry["aster_native_on_same_rows"] = money.evaluate(
                own[sel_both], panel.y[r], panel.fwd[r], panel.times[r], rule
            )
            entry["confluence_on_same_rows"] = money.evaluate(
                other[sel_both], panel.y[r], panel.fwd[r], panel.times[r], rule
            )
        else:
            entry["confluence_on_same_rows"] = stale or (
                "no confluence predictions yet: run `asterai train confluence` first"
            )
        out[cat] = entry
    return out


def importance(member: XGBMember, panel: Panel, rows: np.ndarray) -> dict[str, Any]:
    sample = rows[:: max(1, len(rows) // 5000)]
    contrib = member.contributions(panel.X[sample])  # (rows, 2, features + 1)
    mean_abs = np.abs(contrib[:, :, :-1]).mean(axis=0)
    return {
        "gain": member.gain(panel.features),
        "mean_abs_shap": {f: float(mean_abs[:, j].sum()) for j, f in enumerate(panel.features)},
        "mean_abs_shap_by_direction": {
            d: {f: float(mean_abs[k, j]) for j, f in enumerate(panel.features)}
            for k, d in enumerate(DIRECTIONS)
        },
        "rows": int(len(sample)),
        "note": "SHAP values from XGBoost's pred_contribs on the final model's validation rows",
    }


def model_config(
    spec: _Spec,
    settings: Settings,
    panel: Panel,
    lay: Layout,
    final: dict[str, Any],
    results: list[FoldResult],
    overall: dict[str, Any],
    verdict: list[str],
    leakage: dict[str, Any],
    members: dict[str, Any],
    device: dict[str, Any],
    tail: np.ndarray,
    tail_preds: np.ndarray,
) -> dict[str, Any]:
    fs = settings.features
    config: dict[str, Any] = {
        "model": spec.name,
        "run_id": uuid.uuid4().hex,
        "asterai_version": __version__,
        "created_at": iso_ms(int(time.time() * 1000)),
        "question": QUESTIONS[panel.target],
        # where the parameters came from: asterai.toml and the defaults, or a search's
        # best_params.json (`asterai train --params`)
        "params_from": settings.params_from,
        "outputs": ["p_long", "p_short"],
        "label": label_record(settings, panel),
        "features": panel.features,
        "categories": panel.category if spec.categories else None,
        "new_listing_hours": panel.new_listing_h if spec.categories else None,
        "majors": list(settings.discovery.majors) if spec.categories else None,
        "listing_age_cap_h": settings.discovery.new_listing_days * 24 if spec.categories else None,
        "members": {
            "xgboost": {
                "file": spec.xgb_file,
                "settings": spec.xgb.model_dump(mode="json"),
                "best_iteration": members["xgboost"].best_iteration,
                "calibration_platt": members["xgboost_calibration"],
            }
        },
        "ensemble": (
            {
                "xgboost_weight": settings.ensemble.xgboost_weight,
                # the weight the shipped ensemble applies: 0 when the final model's LSTM
                # did not beat its XGBoost on the calibration rows (train.lstm_gate)
                "lstm_weight": settings.ensemble.lstm_weight
                if members["lstm_gate"]["joined"]
                else 0.0,
                "configured_lstm_weight": settings.ensemble.lstm_weight,
                "lstm_in_ensemble": bool(members["lstm_gate"]["joined"]),
                "lstm_gate": members["lstm_gate"],
                "rows_without_lstm_window": "XGBoost alone",
            }
            if spec.with_lstm
            else {"xgboost_weight": 1.0}
        ),  # fmt: skip
        "threshold": settings.train.threshold,
        # the sides the strategy trades (strategy.sides): the service's decisions follow it
        "sides": settings.strategy.sides,
        "walk_forward": {
            "scheme": settings.train.scheme,
            "folds": [f.fold.to_json() for f in results],
            "gap_bars": lay.gap_bars,
            "embargo_bars": settings.train.embargo_bars,
            "valid_share": settings.train.valid_share,
            "calibration_share": settings.train.calibration_share,
            "validation_parts": "each validation window [valid_start, valid_end] is split "
            "by time: early stopping on [valid_start, stop_end], then Platt calibration on "
            "[calib_start, valid_end] (its last calibration_share), adjacent, no shared bar",
            "test_bars": lay.test_bars,
            "warnings": list(lay.warnings),
        },
        "final_model": final,
        "training_window": {
            "first": iso_ms(int(panel.times.min())),
            "last": iso_ms(int(panel.times.max())),
        },
        "symbols": panel.symbols,
        "data_sha256": panel.inputs_sha256,
        "metrics": {
            "out_of_sample": overall,
            "per_fold": [
                {
                    "fold": r.fold.fold,
                    "rows": r.rows,
                    "seconds": round(r.seconds, 3),
                    **r.members,
                    "metrics": r.metrics,
                }
                for r in results
            ],
        },
        "verdict": verdict,
        "leakage_checks": leakage,
        "versions": versions(device),
        "settings": {
            "train": settings.train.model_dump(mode="json"),
            "features": fs.model_dump(mode="json"),
        },
        "fingerprint": {
            "note": "the final model's output on rows of every symbol (some without an LSTM "
            "window); asterai.models.load(...).predict on the stored features reproduces it",
            "symbol": np.array(panel.symbols, dtype=object)[panel.code[tail]].tolist(),
            "open_time_ms": panel.times[tail].tolist(),
            "p_long": tail_preds[:, 0].tolist(),
            "p_short": tail_preds[:, 1].tolist(),
        },
    }
    if "lstm" in members:
        lstm: LSTMMember = members["lstm"]
        config["members"]["lstm"] = {
            "file": "lstm_predictor.pth",
            "settings": settings.train.lstm.model_dump(mode="json"),
            "best_epoch": lstm.best_epoch,
            "history": lstm.history,
            "input": lstm.prep.to_json(),
            "calibration_platt": members["lstm_calibration"],
        }
    return config


def label_record(settings: Settings, panel: Panel) -> dict[str, Any]:
    """What the outputs are the probability of (``train.target``)."""
    fs = settings.features
    common = {
        "target": panel.target,
        "entry": "the next bar's open",
        "horizon_bars": fs.label_horizon,
        # the barriers the trades are given (every target: the export carries them to
        # paper trading, which trades the strategy the model was trained for)
        "take_profit_atr": fs.tp_atr,
        "stop_atr": fs.sl_atr,
        "base_interval": fs.base_interval,
        "stopping_metric": settings.train.stopping_metric,
    }
    if panel.target == "r_multiple":
        return common | r_multiple_record(settings)
    if panel.target == "cross_sectional":
        return common | {
            "long": "label_fwd_ret - median over the bar's tradeable symbols > round-trip cost",
            "short": "median over the bar's tradeable symbols - label_fwd_ret > round-trip cost",
            "round_trip_cost": round_trip_cost(settings),
            "min_symbols": MIN_CROSS_SECTION,
            "positive": "1: the symbol beat the bar's median by more than the round-trip cost",
            "trades": "the backtest still trades each signal at the next open with ATR "
            "stops and targets and the horizon as a time limit",
        }
    return common | {
        "long": LABEL_LONG,
        "short": LABEL_SHORT,
        "positive": "+1: the target was reached first",
        "take_profit_atr": fs.tp_atr,
        "stop_atr": fs.sl_atr,
        "both_touched": "counted as the stop",
    }


def write_predictions(path: Path, name: str, frame: pd.DataFrame, config: dict[str, Any]) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"pandas"}
    meta[PREDICTIONS_META_KEY] = json.dumps(
        {
            "model": name,
            "run_id": config["run_id"],
            "created_at": config["created_at"],
            "out_of_sample_only": True,
            "folds": config["walk_forward"]["folds"],
            "threshold": config["threshold"],
            "target": config["label"]["target"],
            "data_sha256": config["data_sha256"],
            "columns": {
                "p_long, p_short": "the calibrated model (the ensemble for confluence)",
                "*_raw_long, *_raw_short": "each member's raw output, before calibration",
            },
        },
        sort_keys=True,
    ).encode()
    pq.write_table(table.replace_schema_metadata(meta), path, compression="zstd")


def fingerprint_rows(panel: Panel, runs: np.ndarray, window: int) -> np.ndarray:
    """Rows of every symbol: one before its first full LSTM window, and its last three."""
    rows = []
    for j in range(len(panel.symbols)):
        own = np.flatnonzero(panel.code == j)
        if len(own) == 0:
            continue
        rows.append(own[min(window - 2, len(own) - 1)])
        rows.extend(own[-3:])
    return np.unique(np.array(rows, dtype=np.int64))[: FINGERPRINT_ROWS * 4]
