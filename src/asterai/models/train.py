"""Training: walk-forward evaluation out of sample, then the final model trained like a fold.

Both models answer one question per row: if a trade were opened on this signal (at the
next bar's open, target and stop in ATR of the signal bar, the label horizon as a time
limit, a bar touching both counted as the stop), would it reach its target first? One
output per direction (``p_long``, ``p_short``), calibrated on validation rows only.

``train_confluence``: the XGBoost + LSTM ensemble, weighted by ``ensemble`` settings
(0.6 / 0.4; rows without a full LSTM window use XGBoost alone).
``train_aster_native``: one conservative XGBoost over every trainable symbol, short
histories included, with platform features (listing age, category, funding).

Every training window (``splits.Fold``) has three parts in time order, with no shared
bar: the fitting rows; then, after a purge gap (label horizon + 1 + embargo), the
validation window, split into an early-stopping part (XGBoost's tree count, the LSTM's
best epoch) and a calibration part (its last ``train.calibration_share``, where each
member's Platt calibration is fitted). For every fold the members are fitted, stopped
and calibrated that way and predict its test rows, with two baselines (the class prior
and a logistic regression) on the same rows. Only test rows are written to
``data/predictions/{model}.parquet``.

The final model (the one saved, served and paper traded) is trained exactly like a fold
whose test window is the future (``Layout.final``): fitted on every usable row up to a
gap before the most recent validation tail, stopped early and calibrated on that tail's
two parts. Its own windows, rows, tree count, epoch, calibration and validation figures
(on its calibration rows) are recorded in the config's ``final_model``; loading the saved
model and predicting those rows gives the same figures. When early stopping kept almost
nothing (median trees or LSTM epochs below ``train.min_median_trees`` /
``min_median_epochs``, or the final model below them),
the result's warnings and the config say so (``learning_check``), as they do when a
calibration reverses a member's ranking. The models' folder is replaced as a set, so a
failure leaves the previous models in place.
"""

from __future__ import annotations

import json
import logging
import platform
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from asterai import __version__, atomic
from asterai.config import Settings, XGBoostSettings
from asterai.entry import allowed_sides
from asterai.features.labels import MIN_CROSS_SECTION
from asterai.intervals import iso_ms
from asterai.models import baselines, metrics, money, scoring
from asterai.models.calibration import apply_platt, fit_platt, flattened
from asterai.models.charts import calibration_chart, importance_chart
from asterai.models.data import (
    DIRECTIONS,
    LABEL_LONG,
    LABEL_SHORT,
    Panel,
    load_panel,
    round_trip_cost,
    row_categories,
)
from asterai.models.device import choose_device
from asterai.models.errors import TrainingError
from asterai.models.inputs import blend
from asterai.models.lstm import LSTMMember
from asterai.models.money import TradeRule
from asterai.models.splits import FinalWindow, Fold, Layout, layout
from asterai.models.target import (
    check_objective,
    identity_calibration,
    is_regression,
    r_multiple_record,
)
from asterai.models.xgb import XGBMember
from asterai.paths import DataPaths

log = logging.getLogger(__name__)

MODELS = ("confluence", "aster_native")
#: What ``p_long`` / ``p_short`` answer, per ``train.target``.
QUESTIONS = {
    "triple_barrier": "if a trade were opened on this signal, would it reach its target "
    "before its stop?",
    "cross_sectional": "would this symbol's return over the label horizon, from the next "
    "open, beat the median of the symbols tradeable at this bar by the round-trip cost?",
    "r_multiple": "sigmoid of the expected net R-multiple of a trade opened on this signal "
    "(its outcome in units of its risk, after the round-trip cost): 0.5 is break-even",
}
SUSPICIOUS_AUC = 0.60
FINGERPRINT_ROWS = 64
PREDICTIONS_META_KEY = b"asterai.predictions"


class Progress:
    """What training reports while it runs; the default logs it. The CLI draws bars."""

    def start(self, name: str, folds: int, epochs: int | None, summary: str) -> None:
        log.info(summary)

    def fold(self, label: str) -> None:
        log.info("%s", label)

    def epoch(self, label: str, epoch: int, epochs: int, metric: str, score: float) -> None:
        log.info("%s: LSTM epoch %d/%d, valid %s %.4f", label, epoch + 1, epochs, metric, score)

    def note(self, message: str) -> None:
        log.info(message)


@dataclass(slots=True)
class FoldResult:
    fold: Fold
    rows: dict[str, int]
    metrics: dict[str, dict[str, Any]]  # model name -> direction -> metric
    seconds: float
    members: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TrainResult:
    name: str
    folder: Path | None  # None: evaluated only (``walk_forward(..., write=False)``)
    predictions_path: Path | None
    folds: list[FoldResult]
    overall: dict[str, dict[str, Any]]
    verdict: list[str]
    warnings: list[str]
    config: dict[str, Any]
    seconds: float
    predictions: pd.DataFrame | None = None  # the out-of-sample rows, as written
    layout: Layout | None = None


# -- helpers --------------------------------------------------------------------------


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _labels_ok(y: np.ndarray, what: str, where: str, fix: str) -> None:
    for j, direction in enumerate(DIRECTIONS):
        values = np.unique(y[:, j])
        if len(values) < 2:
            raise TrainingError(
                f"{where}: the {what} rows hold only one class for {direction} trades "
                f"({len(y)} rows): {fix} or collect more history"
            )


@dataclass(frozen=True, slots=True)
class _Rows:
    """Panel rows of one training window: fitted on, stopping early, calibrating."""

    fit: np.ndarray
    stop: np.ndarray
    calib: np.ndarray

    def counts(self) -> dict[str, int]:
        return {
            "fit": len(self.fit),
            "early_stopping": len(self.stop),
            "calibration": len(self.calib),
            "valid": len(self.stop) + len(self.calib),
        }


def _window_rows(panel: Panel, w: Fold | FinalWindow, where: str) -> _Rows:
    """The tradeable, labelled rows of each part of a training window, each with both
    classes in both directions, or a TrainingError naming the part and its window."""
    fix = (
        "lengthen the validation tail (train.valid_share, train.calibration_share)"
        if isinstance(w, FinalWindow)
        else "lengthen the windows (train.test_bars, train.valid_share, train.calibration_share)"
    )
    rows = _Rows(
        np.flatnonzero(panel.usable(w.train_start, w.train_end)),
        np.flatnonzero(panel.usable(w.valid_start, w.stop_end)),
        np.flatnonzero(panel.usable(w.calib_start, w.valid_end)),
    )
    for what, r, first, last in (
        ("fitting", rows.fit, w.train_start, w.train_end),
        ("early-stopping", rows.stop, w.valid_start, w.stop_end),
        ("calibration", rows.calib, w.calib_start, w.valid_end),
    ):
        if len(r) == 0:
            raise TrainingError(
                f"{where}: no {what} row ({iso_ms(first)} .. {iso_ms(last)}) is tradeable and "
                f"labelled: {fix} or collect more history"
            )
        _labels_ok(panel.y[r], f"{what} ({iso_ms(first)} .. {iso_ms(last)})", where, fix)
    return rows


def _versions(device: dict[str, Any]) -> dict[str, Any]:
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


def _verdict(overall: dict[str, dict[str, Any]], folds: list[FoldResult], main: str) -> list[str]:
    """Plain sentences: does the model beat the baselines, per direction and per fold?

    The per-fold AUC is the primary figure: each fold's probabilities are calibrated on
    its own validation rows, so pooling folds mixes levels (the pooled AUC is reported
    too, and the rank correlation across symbols at each bar, IC, which pooling spares).
    """
    lines = []
    for direction in DIRECTIONS:
        m = overall[main][direction]
        lg = overall["logistic"][direction]
        pr = overall["prior"][direction]
        if m.get("mean_fold_auc") is None:
            lines.append(f"{direction}: no out-of-sample AUC (a single class in the test rows)")
            continue
        beats_prior = m["log_loss"] < pr["log_loss"]
        won = sum(
            1
            for f in folds
            if (f.metrics[main][direction].get("auc") or 0)
            > (f.metrics["logistic"][direction].get("auc") or 0)
        )
        nan = float("nan")
        lines.append(
            f"{direction}: out-of-sample AUC {m['mean_fold_auc']:.3f} per fold (pooled "
            f"{m['auc']:.3f}) vs logistic {lg.get('mean_fold_auc') or nan:.3f}; log loss "
            f"{m['log_loss']:.4f} vs class prior {pr['log_loss']:.4f}; per-bar IC "
            f"{_f(m.get('ic'))} (t {_f(m.get('ic_t'))}, overlap-adjusted) vs logistic {_f(lg.get('ic'))}. "
            f"It {'beats' if beats_prior else 'does NOT beat'} the class prior and beats the "
            f"logistic regression in {won} of {len(folds)} folds"
        )
        high = [
            f.fold.fold + 1
            for f in folds
            if (f.metrics[main][direction].get("auc") or 0) > SUSPICIOUS_AUC
        ]
        if m["mean_fold_auc"] > SUSPICIOUS_AUC or high:
            lines.append(
                f"{direction}: an AUC above {SUSPICIOUS_AUC} (fold(s) {high or 'mean'}) on hourly "
                "crypto outcomes is more likely leakage or a small sample than skill; see "
                "leakage_checks before trusting it"
            )
    return lines


# -- the walk-forward loop --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str
    xgb: XGBoostSettings | None
    with_lstm: bool
    min_history_bars: int
    categories: bool
    folder: Callable[[DataPaths], Path]
    xgb_file: str
    config_file: str


SPECS = {
    "confluence": _Spec(
        "confluence", None, True, 0, False, lambda p: p.confluence_models,
        "xgboost_classifier.json", "ensemble_config.json",
    ),
    "aster_native": _Spec(
        "aster_native", None, False, 0, True, lambda p: p.aster_native_models,
        "xgboost_aster_native.json", "model_config.json",
    ),
}  # fmt: skip


def _spec(name: str, settings: Settings) -> _Spec:
    if name == "confluence":
        return replace(
            SPECS[name],
            xgb=settings.train.xgboost,
            min_history_bars=settings.train.min_history_bars,
        )
    return replace(
        SPECS[name],
        xgb=settings.aster_native.xgboost,
        min_history_bars=settings.aster_native.min_history_bars,
    )


def _fit_members(
    spec: _Spec,
    settings: Settings,
    panel: Panel,
    runs: np.ndarray,
    rows: _Rows,
    device: dict[str, Any],
    say: Progress,
    label: str,
) -> dict[str, Any]:
    """Fit XGBoost (and the LSTM) on the fitting rows, stop early on the early-stopping
    rows by ``train.stopping_metric``, fit each member's Platt calibration on the
    calibration rows alone, and decide there whether the LSTM joins the ensemble."""
    ts = settings.train
    fit, stop, calib = rows.fit, rows.stop, rows.calib
    regression = is_regression(spec.xgb.objective)
    if (spec.xgb.objective == "rank_pairwise" or regression) and ts.stopping_metric == "logloss":
        raise TrainingError(
            "train.stopping_metric = 'logloss' needs probabilities, and the "
            f"{spec.xgb.objective} XGBoost member gives a ranking score or an expected "
            "R-multiple: stop on 'auc', 'ic' or 'mean_net'"
        )
    # a regression member fits the net R and is calibrated by the identity (a fit to
    # R > 0 would turn the expected R back into a probability: ``models/target.py``)
    fitted = panel.value if regression else panel.y

    def calibrate(raw: np.ndarray, r: np.ndarray) -> list[list[float]]:
        return identity_calibration(raw.shape[1]) if regression else fit_platt(raw, panel.y[r])

    def scorer_for(r: np.ndarray) -> scoring.Scorer:
        return scoring.for_rows(
            ts.stopping_metric, panel.y, panel.fwd, panel.times, r, **_money_args(settings)
        )

    stopping = scorer_for(stop)
    xgb_member = XGBMember(spec.xgb, device["xgboost"], ts.seed, ts.threads).fit(
        panel.X[fit], fitted[fit], panel.times[fit], panel.X[stop], stopping
    )
    raw_x = xgb_member.predict(panel.X[calib])
    members: dict[str, Any] = {
        "xgboost": xgb_member,
        "xgboost_calibration": calibrate(raw_x, calib),
    }
    say.note(
        f"{label}: XGBoost {xgb_member.best_iteration + 1} trees in {xgb_member.seconds:.1f} s "
        f"(validation {stopping.name} {xgb_member.best_score:.4f})"
    )
    if spec.with_lstm:
        lstm = LSTMMember(ts.lstm, device["torch"], ts.seed)
        lstm.fit(
            panel.X, panel.features, runs, fitted, fit, stop, scorer_for,
            progress=lambda e, name, score: say.epoch(label, e, ts.lstm.epochs, name, score),
            regression=regression,
        )  # fmt: skip
        raw_l = lstm.predict(panel.X, runs, calib)
        members["lstm"] = lstm
        members["lstm_calibration"] = calibrate(raw_l, calib)
        members["lstm_gate"] = _lstm_gate(settings, panel, calib, raw_x, raw_l)
        gate = members["lstm_gate"]
        say.note(
            f"{label}: LSTM best epoch {lstm.best_epoch}; on the calibration rows "
            f"{gate['metric']} LSTM {_f(gate['lstm'])} vs XGBoost {_f(gate['xgboost'])}: "
            + ("it joins the ensemble" if gate["joined"] else "XGBoost alone")
        )
    return members


def _lstm_gate(
    settings: Settings, panel: Panel, calib: np.ndarray, raw_x: np.ndarray, raw_l: np.ndarray
) -> dict[str, Any]:
    """Does the LSTM beat the XGBoost member on the calibration rows where it has a window?

    Both members' raw outputs are scored by the stopping metric (AUC when that is log
    loss: a calibration-free comparison) on the same rows, which neither fitted on nor
    stopped on. Without ``train.lstm_gate`` the LSTM always joins (and the scores are
    still recorded).
    """
    ts = settings.train
    metric = ts.stopping_metric if ts.stopping_metric != "logloss" else "auc"
    both = np.isfinite(raw_l).all(axis=1)
    record: dict[str, Any] = {
        "metric": metric,
        "rows": int(both.sum()),
        "xgboost": None,
        "lstm": None,
        "rule": "the LSTM joins where it scores above XGBoost on the calibration rows "
        "that have an LSTM window"
        if ts.lstm_gate
        else "train.lstm_gate off: always joins",
    }
    if both.any():
        scorer = scoring.for_rows(
            metric, panel.y, panel.fwd, panel.times, calib[both], **_money_args(settings)
        )
        record["xgboost"] = scorer(raw_x[both])
        record["lstm"] = scorer(raw_l[both])
    record["joined"] = (not ts.lstm_gate) or (
        record["lstm"] is not None and record["lstm"] > record["xgboost"]
    )
    return record


def _money_args(settings: Settings) -> dict[str, Any]:
    """What the ``mean_net`` scorer needs: the round trip's cost and the sides traded."""
    return {"cost": round_trip_cost(settings), "sides": allowed_sides(settings.strategy.sides)}


def _evaluate(
    p: np.ndarray, y: np.ndarray, fwd: np.ndarray, times: np.ndarray, rule: TradeRule
) -> dict[str, Any]:
    """The rank and classification figures (``metrics.evaluate``) and, beside them, what
    the trades are paid (``money.judge``): per direction its decile table and Pearson
    IC, then the traded rows and whether they earn."""
    out = metrics.evaluate(p, y, fwd, times, rule.threshold, rule.horizon)
    paid = money.judge(p, fwd, times, rule)
    for d in DIRECTIONS:
        out[d].update(paid[d])
    out["traded"], out["earns"] = paid["traded"], paid["earns"]
    return out


def _member_record(members: dict[str, Any]) -> dict[str, Any]:
    """What a fold (or the final model) chose: trees, epoch, calibration, dropped columns,
    whether the LSTM joined the ensemble."""
    lstm = members.get("lstm")
    return {
        "xgboost_best_iteration": members["xgboost"].best_iteration,
        "xgboost_trees": members["xgboost"].best_iteration + 1,
        "xgboost_best_score": members["xgboost"].best_score,
        "xgboost_calibration_platt": members["xgboost_calibration"],
        "lstm_best_epoch": lstm.best_epoch if lstm is not None else None,
        "lstm_epochs": lstm.best_epoch + 1 if lstm is not None else None,
        "lstm_best_score": lstm.best_score if lstm is not None else None,
        "lstm_calibration_platt": members.get("lstm_calibration"),
        "lstm_dropped_columns": lstm.prep.dropped if lstm is not None else [],
        "lstm_gate": members.get("lstm_gate"),
        "lstm_in_ensemble": (
            bool(members["lstm_gate"]["joined"]) if "lstm_gate" in members else None
        ),
    }


def _listing(values: list[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _spread(values: np.ndarray) -> dict[str, dict[str, float | None]]:
    """5th and 95th percentile per direction (None without a finite value)."""
    out: dict[str, dict[str, float | None]] = {}
    for j, direction in enumerate(DIRECTIONS):
        v = values[:, j][np.isfinite(values[:, j])]
        lo, hi = np.percentile(v, [5, 95]) if len(v) else (None, None)
        out[direction] = {
            "p5": None if lo is None else float(lo),
            "p95": None if hi is None else float(hi),
        }
    return out


def _span(s: dict[str, dict[str, float | None]], direction: str) -> str:
    lo, hi = s[direction]["p5"], s[direction]["p95"]
    return "n/a" if lo is None else f"{lo:.3f}-{hi:.3f}"


def _learning_check(
    folds: list[FoldResult],
    final: dict[str, Any],
    final_preds: dict[str, np.ndarray],
    calib_bars: int,
    min_trees: int,
    min_epochs: int,
) -> tuple[dict[str, Any], list[str]]:
    """Did early stopping keep almost nothing? Did a calibration find no ranking?

    A near-constant model is easy to mistake for a cautious one. The warning fires when
    the median XGBoost tree count over the folds is below ``train.min_median_trees``, or
    the median LSTM epochs kept (best epoch + 1) below ``train.min_median_epochs``, or the
    final model is below either floor; it names every fold's count and the final model's,
    and the spread of the final model's raw and calibrated outputs on its calibration
    rows. A flattened calibration (slope 0, ``calibration.fit_platt``) means the
    calibration rows ranked the outcomes the other way round from the member's raw
    output: that member predicts their base rate, a constant.
    """
    trees = [int(f.members["xgboost_trees"]) for f in folds]
    epochs = [f.members["lstm_epochs"] for f in folds]
    with_lstm = final["lstm_best_epoch"] is not None
    median_trees = float(np.median(trees))
    median_epochs = float(np.median(epochs)) if with_lstm else None
    few_trees = median_trees < min_trees
    final_few_trees = final["xgboost_trees"] < min_trees
    early = with_lstm and median_epochs < min_epochs
    final_early = with_lstm and final["lstm_epochs"] < min_epochs
    raw, calibrated = _spread(final_preds["xgboost_raw"]), _spread(final_preds["model"])
    flat: list[str] = []
    final_platt = {f"{k}_calibration_platt": v for k, v in final["calibration_platt"].items()}
    owners = [(f"fold {f.fold.fold + 1}", f.members) for f in folds]
    owners.append(("the final model", final_platt))
    for owner, record in owners:
        for member in ("xgboost", "lstm"):
            params = record.get(f"{member}_calibration_platt")
            for is_flat, direction in zip(flattened(params or []), DIRECTIONS, strict=False):
                if is_flat:
                    flat.append(f"{owner} {member} {direction}")
    check: dict[str, Any] = {
        "min_median_trees": min_trees,
        "min_median_epochs": min_epochs,
        "xgboost_trees": {"folds": trees, "median": median_trees, "final": final["xgboost_trees"]},
        "lstm_epochs": {"folds": epochs, "median": median_epochs, "final": final["lstm_epochs"]},
        "xgboost_below_floor": {"median": few_trees, "final": final_few_trees},
        "lstm_below_floor": {"median": early, "final": final_early} if with_lstm else None,
        "final_calibration_rows_p5_p95": {"xgboost_raw": raw, "model": calibrated},
        "calibration_flattened": flat,
    }
    span = "fold 1" if len(folds) == 1 else f"folds 1-{len(folds)}"
    parts = []
    if few_trees or final_few_trees:
        parts.append(
            f"XGBoost early stopping kept {_listing(trees)} trees in {span} (median "
            f"{median_trees:g}) and {final['xgboost_trees']} in the final model, below the "
            f"floor of {min_trees} (train.min_median_trees) in "
            + " and ".join(
                ["the folds' median"] * few_trees + ["the final model"] * final_few_trees
            )
        )
    if early or final_early:
        parts.append(
            f"the LSTM kept {_listing(epochs)} epochs in {span} (median {median_epochs:g}) and "
            f"{final['lstm_epochs']} in the final model, below the floor of {min_epochs} "
            "(train.min_median_epochs) in "
            + " and ".join(["the folds' median"] * early + ["the final model"] * final_early)
        )
    warnings = []
    check["near_constant"] = bool(parts)
    if parts:
        rows = final["rows"]["calibration"]
        warnings.append(
            "the model learned almost nothing on validation: "
            + "; ".join(parts)
            + f". On the final model's calibration rows ({rows} rows, {calib_bars} bars) its "
            f"raw XGBoost output spans {_span(raw, 'long')} long and {_span(raw, 'short')} "
            f"short (5th-95th percentile), its calibrated p_long {_span(calibrated, 'long')} "
            f"and p_short {_span(calibrated, 'short')}: treat it as a near-constant model, "
            "not a signal"
        )
    if flat:
        warnings.append(
            "the calibration rows ranked the outcomes the other way round from the raw "
            "output for " + _listing(flat) + ": a calibration never reverses a ranking, so "
            "those members predict the calibration rows' base rate (a constant)"
        )
    return check, warnings


def _predict_members(
    members: dict[str, Any], panel: Panel, runs: np.ndarray, rows: np.ndarray, settings: Settings
) -> dict[str, np.ndarray]:
    raw_x = members["xgboost"].predict(panel.X[rows])
    px = apply_platt(raw_x, members["xgboost_calibration"])
    out = {"xgboost": px, "xgboost_raw": raw_x}
    pl = None
    if "lstm" in members:
        raw_l = members["lstm"].predict(panel.X, runs, rows)
        pl = apply_platt(raw_l, members["lstm_calibration"])
        out["lstm"], out["lstm_raw"] = pl, raw_l
    joined = "lstm_gate" in members and members["lstm_gate"]["joined"]
    out["model"] = blend(
        px, pl, settings.ensemble.xgboost_weight, settings.ensemble.lstm_weight if joined else 0.0
    )
    return out


#: ``walk_forward``'s ``on_fold``: called after each fold with its index and the
#: out-of-sample predictions of every fold so far; it may raise to stop the run.
FoldCallback = Callable[[int, pd.DataFrame], None]


def walk_forward(
    name: str,
    settings: Settings,
    *,
    progress: Progress | None = None,
    panel: Panel | None = None,
    write: bool = True,
    on_fold: FoldCallback | None = None,
) -> TrainResult:
    """Evaluate out of sample, fit the final model, write the artifacts and predictions.

    ``panel``: normally None, and the panel is loaded after the quality gate has said
    READY. A benchmark on tiled copies of real series (which the gate rightly refuses as
    duplicates) passes its own; the command line and the pipeline never do; the search
    (``asterai.optimize``) passes the panel it loaded once, cut before its final window.
    ``write=False``: the walk-forward alone, for the search's trials: no final model,
    nothing written; the out-of-sample rows come back in ``TrainResult.predictions``.
    """
    if name not in MODELS:
        raise TrainingError(f"unknown model {name!r}; one of {', '.join(MODELS)}")
    started = time.perf_counter()
    say = progress or Progress()
    spec = _spec(name, settings)
    ts = settings.train
    check_objective(
        panel.target if panel is not None else ts.target,
        spec.xgb.objective,
        "train.xgboost.objective" if name == "confluence" else "aster_native.xgboost.objective",
    )
    if panel is None:
        panel = load_panel(
            settings,
            min_history_bars=spec.min_history_bars,
            with_categories=spec.categories,
            listing_age_cap_h=settings.discovery.new_listing_days * 24 if spec.categories else None,
        )
    device = choose_device(ts.device)
    usable_any = panel.tradeable & panel.labelled
    if not usable_any.any():
        raise TrainingError(
            "no row is both tradeable (data/universe.parquet) and labelled: collect more "
            "history or lower universe.min_listing_days / universe.min_quote_volume_24h"
        )
    lay: Layout = layout(panel.times[usable_any], panel.step_ms, panel.horizon, ts)
    rule = TradeRule.of(settings, panel.horizon)
    runs = panel.runs()
    say.start(
        name,
        len(lay.folds) + 1,
        ts.lstm.epochs if spec.with_lstm else None,
        f"{name}: {len(panel.symbols)} symbols, {len(panel.times):,} rows, {len(lay.folds)} folds "
        f"of {lay.test_bars} test bars, XGBoost on {device['xgboost']}, PyTorch on {device['torch']}",
    )

    results: list[FoldResult] = []
    pieces: list[pd.DataFrame] = []
    oos: dict[str, list[np.ndarray]] = {
        k: []
        for k in (
            "model", "xgboost", "lstm", "prior", "logistic", "y",
            "fwd", "times", "rows",
        )
    }  # fmt: skip
    control_auc: dict[str, float | None] = {}
    for fold in lay.folds:
        t0 = time.perf_counter()
        label = f"fold {fold.fold + 1}/{len(lay.folds)}"
        rows = _window_rows(panel, fold, label)
        fit = rows.fit
        in_test = (
            (panel.times >= fold.test_start) & (panel.times <= fold.test_end) & panel.tradeable
        )
        test = np.flatnonzero(in_test)
        scored = test[panel.labelled[test]]
        if len(scored) == 0:
            raise TrainingError(
                f"{label}: no test row is tradeable and labelled; lower train.folds or collect "
                "more history"
            )
        say.fold(label)
        members = _fit_members(spec, settings, panel, runs, rows, device, say, label)
        preds = _predict_members(members, panel, runs, test, settings)
        preds["prior"] = baselines.prior(panel.y[fit], len(test))
        preds["logistic"] = baselines.logistic(panel.X[fit], panel.y[fit], panel.X[test], ts.seed)
        if "lstm" in members:
            members["lstm"].release()
        lab = panel.labelled[test]
        fold_metrics = {
            k: _evaluate(v[lab], panel.y[scored], panel.fwd[scored], panel.times[scored], rule)
            for k, v in preds.items()
            if not k.endswith("_raw")
        }
        if fold.fold == 0 and write:
            # a control: the same trees on shuffled labels must score a coin toss (the
            # search's trials leave it to the training run of the parameters they pick)
            rng = np.random.default_rng(ts.seed)
            fitted = panel.value if is_regression(spec.xgb.objective) else panel.y
            shuffled = fitted[fit][rng.permutation(len(fit))]
            control = XGBMember(spec.xgb, device["xgboost"], ts.seed, ts.threads).fit(
                panel.X[fit],
                shuffled,
                panel.times[fit],
                panel.X[rows.stop],
                scoring.for_rows(
                    ts.stopping_metric, panel.y, panel.fwd, panel.times, rows.stop,
                    **_money_args(settings),
                ),  # fmt: skip
            )
            pc = control.predict(panel.X[scored])
            control_auc = {
                d: metrics.classification(pc[:, j], panel.y[scored][:, j], ts.threshold)["auc"]
                for j, d in enumerate(DIRECTIONS)
            }
        frame = panel.frame(test)
        frame.insert(2, "fold", np.int16(fold.fold))
        frame["p_long"], frame["p_short"] = preds["model"][:, 0], preds["model"][:, 1]
        for member in ("xgboost", "lstm"):  # each member's raw output, before calibration
            if f"{member}_raw" in preds:
                frame[f"{member}_raw_long"], frame[f"{member}_raw_short"] = (
                    preds[f"{member}_raw"][:, 0],
                    preds[f"{member}_raw"][:, 1],
                )
        pieces.append(frame)
        for k in ("model", "xgboost", "lstm", "prior", "logistic"):
            if k in preds:
                oos[k].append(preds[k][lab])
        oos["rows"].append(scored)
        oos["y"].append(panel.y[scored])
        oos["fwd"].append(panel.fwd[scored])
        oos["times"].append(panel.times[scored])
        results.append(
            FoldResult(
                fold,
                rows.counts() | {"test": len(test), "scored": len(scored)},
                fold_metrics,
                time.perf_counter() - t0,
                _member_record(members),
            )
        )
        m = fold_metrics["model"]
        say.note(
            f"{label}: AUC long {_f(m['long']['auc'])} short {_f(m['short']['auc'])} (logistic "
            f"{_f(fold_metrics['logistic']['long']['auc'])} / "
            f"{_f(fold_metrics['logistic']['short']['auc'])}) in {results[-1].seconds:.1f} s"
        )
        if on_fold is not None:
            on_fold(fold.fold, pd.concat(pieces, ignore_index=True))

    y_all = np.concatenate(oos["y"])
    overall = {
        k: _evaluate(
            np.concatenate(v), y_all, np.concatenate(oos["fwd"]), np.concatenate(oos["times"]), rule
        )
        for k, v in oos.items()
        if k not in ("y", "fwd", "times", "rows") and not k.endswith("_raw") and v
    }
    for k in overall:
        for direction in DIRECTIONS:
            aucs = [
                r.metrics[k][direction]["auc"]
                for r in results
                if k in r.metrics and r.metrics[k][direction]["auc"] is not None
            ]
            overall[k][direction]["mean_fold_auc"] = float(np.mean(aucs)) if aucs else None
            # a fold whose output is constant across symbols has no ranking: IC 0
            ics = [r.metrics[k][direction]["ic"] or 0.0 for r in results if k in r.metrics]
            overall[k][direction]["mean_fold_ic"] = float(np.mean(ics)) if ics else None
    verdict = [*_verdict(overall, results, "model"), earnings_verdict(overall, settings)]
    predictions = pd.concat(pieces, ignore_index=True)
    by_category = (
        _by_category(panel, predictions, DataPaths.at(settings.data_root), rule)
        if spec.categories
        else None
    )
    leakage = _leakage_checks(panel, lay, predictions, control_auc)
    if not write:
        seconds = time.perf_counter() - started
        summary = training_summary(results, overall, settings, spec)
        config = {"training_summary": summary, "leakage": leakage, "warnings": list(lay.warnings)}
        return TrainResult(
            name, None, None, results, overall, verdict, list(lay.warnings), config, seconds,
            predictions, lay,
        )  # fmt: skip

    # The final model: trained like a fold whose test window is the future. Fitted on
    # every usable row up to a gap before the validation tail (the most recent bars),
    # stopped early on the tail's first part, calibrated on its last part, and measured
    # there: the figures recorded are this model's own.
    say.fold("final model")
    fw = lay.final
    final_rows = _window_rows(panel, fw, "the final model")
    members = _fit_members(spec, settings, panel, runs, final_rows, device, say, "final model")
    calib = final_rows.calib
    calib_preds = _predict_members(members, panel, runs, calib, settings)
    calib_preds["prior"] = baselines.prior(panel.y[final_rows.fit], len(calib))
    validation = {
        k: _evaluate(v, panel.y[calib], panel.fwd[calib], panel.times[calib], rule)
        for k, v in calib_preds.items()
    }
    tail = _fingerprint_rows(panel, runs, ts.lstm.sequence_length)
    tail_preds = _predict_members(members, panel, runs, tail, settings)["model"]
    if "lstm" in members:
        members["lstm"].release()
    record = _member_record(members)
    final = {
        "trained_on": "like a fold whose test window is the future: fitted on every "
        "tradeable, labelled row up to a purge gap before the validation tail (the most "
        "recent bars), stopped early on the tail's first part, calibrated on its last part",
        "windows": fw.to_json(),
        "gap_bars": lay.gap_bars,
        "calibration_share": ts.calibration_share,
        "rows": final_rows.counts(),
        "xgboost_trees": members["xgboost"].best_iteration + 1,
        "xgboost_best_iteration": members["xgboost"].best_iteration,
        "lstm_best_epoch": record["lstm_best_epoch"],
        "lstm_epochs": record["lstm_epochs"],
        "lstm_in_ensemble": record["lstm_in_ensemble"],
        "lstm_gate": record["lstm_gate"],
        "stopping_metric": ts.stopping_metric,
        "xgboost_best_score": record["xgboost_best_score"],
        "lstm_best_score": record["lstm_best_score"],
        "lstm_epochs_run": len(members["lstm"].history) if "lstm" in members else None,
        "calibration_platt": {
            k: members[f"{k}_calibration"] for k in ("xgboost", "lstm") if k in members
        },
        "validation": validation,
        "validation_rows": "the calibration rows [calib_start, valid_end]: never fitted on, "
        "never used to stop early. The Platt parameters are fitted on them, so log loss and "
        "Brier are in-sample for those two numbers per direction; a member's AUC does not "
        "depend on its calibration (a monotone map; never reversed, a member without a "
        "confirmed ranking is flattened to a constant), the ensemble's does (it averages calibrated members). '*_raw': each member's output "
        "before calibration; 'prior': the fitting rows' class rate",
    }
    learning, learning_warnings = _learning_check(
        results,
        final,
        calib_preds,
        len(np.unique(panel.times[calib])),
        ts.min_median_trees,
        ts.min_median_epochs,
    )
    for w in learning_warnings:  # the summary prints them once, with the layout's
        log.warning(w)
    warnings = [*lay.warnings, *learning_warnings]

    paths = DataPaths.at(settings.data_root)
    folder = spec.folder(paths)
    config = _config(
        spec, settings, panel, lay, final, results, overall, verdict, leakage, members, device,
        tail, tail_preds,
    )  # fmt: skip
    config["learning_check"] = learning
    config["training_summary"] = training_summary(results, overall, settings, spec)
    config["warnings"] = warnings
    if by_category is not None:
        config["metrics"]["by_category"] = by_category
    importance = _importance(
        members["xgboost"], panel, np.concatenate([final_rows.stop, final_rows.calib])
    )
    curves = {"model (out of sample)": (np.concatenate(oos["model"]), y_all)}
    if oos["xgboost"] and spec.with_lstm:
        curves["xgboost"] = (np.concatenate(oos["xgboost"]), y_all)
        curves["lstm"] = (np.concatenate(oos["lstm"]), y_all)
    curves["logistic"] = (np.concatenate(oos["logistic"]), y_all)

    def build(tmp: Path) -> None:
        members["xgboost"].save(tmp / spec.xgb_file)
        if "lstm" in members:
            import torch

            torch.save(members["lstm"].state_dict(), tmp / "lstm_predictor.pth")
        (tmp / spec.config_file).write_text(json.dumps(config, indent=2, sort_keys=False))
        (tmp / "feature_importance.json").write_text(json.dumps(importance, indent=2))
        importance_chart(
            tmp / "feature_importance.png",
            importance["gain"],
            importance["mean_abs_shap"],
            f"{name}: feature importance (final model)",
        )
        calibration_chart(tmp / "calibration.png", curves, f"{name}: calibration out of sample")

    # models and predictions are one set: the predictions are written to a temp file,
    # the models' folder is swapped in, then the predictions; both carry the run id
    predictions_path = paths.predictions(name)
    with atomic.atomic_path(predictions_path) as staged:
        _write_predictions(staged, name, predictions, config)
        atomic.replace_folder(folder, build)
    seconds = time.perf_counter() - started
    say.note(f"{name}: trained in {seconds:.1f} s; wrote {folder} and {predictions_path}")
    return TrainResult(
        name,
        folder,
        predictions_path,
        results,
        overall,
        verdict,
        warnings,
        config,
        seconds,
        predictions,
        lay,
    )


#: Per direction, the summary's figures (``metrics.evaluate`` and ``money.judge``).
SUMMARY_FIGURES = (
    "auc", "ic", "ic_t", "pearson_ic", "pearson_ic_t", "decile_spread", "log_loss", "rows",
)  # fmt: skip


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.3%}"


def earnings_verdict(overall: dict[str, Any], settings: Settings) -> str:
    """One plain sentence: does the model earn what it ranks? "ranks but does not earn"
    when its per-bar IC is positive and the traded rows' mean net return is not."""
    m = overall["model"]
    t = m["traded"]
    ic = float(np.mean([m[d]["ic"] or 0.0 for d in DIRECTIONS]))
    sides = "; ".join(
        f"{d} {t[d]['rows']:,} rows, mean {_pct(t[d]['mean'])} (t {_f(t[d]['t'])})"
        for d in DIRECTIONS
    )
    rule = (
        f"at threshold {settings.train.threshold:g}, sides {settings.strategy.sides}, after "
        f"the round-trip cost {round_trip_cost(settings):.3%}"
    )
    if t["all"]["rows"] == 0:
        return f"trades nothing: no out-of-sample row reaches the entry rule {rule}"
    paid = (
        f"the {t['all']['rows']:,} traded rows' mean net return is {_pct(t['all']['mean'])} "
        f"(median {_pct(t['all']['median'])}, t {_f(t['all']['t'])}; {sides}) {rule}"
    )
    if m["earns"]:
        return f"earns out of sample: {paid}; the backtest says what the account keeps"
    if ic > 0:
        return (
            f"ranks but does not earn: the per-bar IC is {ic:+.3f}, but {paid}. Do not trade "
            "it: see the decile table (mean and median by score decile, per side)"
        )
    return f"neither ranks nor earns: the per-bar IC is {ic:+.3f} and {paid}"


def training_summary(
    results: list[FoldResult], overall: dict[str, Any], settings: Settings, spec: _Spec
) -> dict[str, Any]:
    """Did the model learn, and does it earn? Per fold: trees, LSTM epochs kept and
    whether the LSTM joined, AUC, per-bar IC (with its overlap-adjusted t), Pearson IC on
    winsorised returns, the decile spread of means and the traded rows (``money``) of the
    model beside the logistic baseline, log loss beside the class prior; then the same
    pooled over every test row, the model's decile tables and ``earnings_verdict``."""

    def figures(m: dict[str, Any]) -> dict[str, Any]:
        return {
            d: {k: m[d].get(k) for k in SUMMARY_FIGURES} for d in DIRECTIONS
        } | {"traded": m.get("traded")}

    folds = []
    for r in results:
        entry: dict[str, Any] = {
            "fold": r.fold.fold,
            "test_start": r.fold.to_json()["test_start"],
            "test_end": r.fold.to_json()["test_end"],
            "xgboost_trees": r.members["xgboost_trees"],
            "lstm_epochs": r.members["lstm_epochs"],
            "lstm_in_ensemble": r.members["lstm_in_ensemble"],
        }
        for k in ("model", "xgboost", "lstm", "logistic", "prior"):
            if k in r.metrics:
                entry[k] = figures(r.metrics[k])
        folds.append(entry)
    trees = [f["xgboost_trees"] for f in folds]
    epochs = [f["lstm_epochs"] for f in folds if f["lstm_epochs"] is not None]
    return {
        "target": settings.train.target,
        "stopping_metric": settings.train.stopping_metric,
        "xgboost_objective": spec.xgb.objective,
        "median_trees": float(np.median(trees)),
        "median_lstm_epochs": float(np.median(epochs)) if epochs else None,
        "lstm_in_ensemble_folds": sum(bool(f["lstm_in_ensemble"]) for f in folds),
        "folds": folds,
        "pooled": {
            k: figures(overall[k])
            | {
                d: figures(overall[k])[d]
                | {m: overall[k][d].get(m) for m in ("mean_fold_auc", "mean_fold_ic")}
                for d in DIRECTIONS
            }
            for k in ("model", "xgboost", "lstm", "logistic", "prior")
            if k in overall
        },
        "deciles": {d: overall["model"][d]["deciles"] for d in DIRECTIONS},
        "earns": bool(overall["model"]["earns"]),
        "earnings": earnings_verdict(overall, settings),
        "sides": settings.strategy.sides,
        "round_trip_cost": round_trip_cost(settings),
        "ic_t": "Hansen-Hodrick over the label horizon (consecutive bars' outcomes overlap; metrics.overlap_t); ic_t_naive as if bars were independent",
        "money": "net returns: the label's forward return (next open to the label's end) "
        "after the round-trip cost, per side (asterai.models.money); deciles pool the rows "
        "by p_long (long) or p_short (short); traded rows: the entry rule at the threshold "
        "and sides, before position limits; t: clustered by bar and overlap-adjusted",
    }


def _leakage_checks(
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


def _by_category(
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
            "aster_native": _evaluate(
                own[sel], panel.y[rows[sel]], panel.fwd[rows[sel]], panel.times[rows[sel]], rule
            ),
        }
        if other is not None:
            r = rows[sel_both]
            entry["same_rows"] = int(sel_both.sum())
            entry["aster_native_on_same_rows"] = _evaluate(
                own[sel_both], panel.y[r], panel.fwd[r], panel.times[r], rule
            )
            entry["confluence_on_same_rows"] = _evaluate(
                other[sel_both], panel.y[r], panel.fwd[r], panel.times[r], rule
            )
        else:
            entry["confluence_on_same_rows"] = stale or (
                "no confluence predictions yet: run `asterai train confluence` first"
            )
        out[cat] = entry
    return out


def _importance(member: XGBMember, panel: Panel, rows: np.ndarray) -> dict[str, Any]:
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


def _config(
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
        "label": _label_record(settings, panel),
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
        "versions": _versions(device),
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


def _label_record(settings: Settings, panel: Panel) -> dict[str, Any]:
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


def _write_predictions(path: Path, name: str, frame: pd.DataFrame, config: dict[str, Any]) -> None:
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


def _fingerprint_rows(panel: Panel, runs: np.ndarray, window: int) -> np.ndarray:
    """Rows of every symbol: one before its first full LSTM window, and its last three."""
    rows = []
    for j in range(len(panel.symbols)):
        own = np.flatnonzero(panel.code == j)
        if len(own) == 0:
            continue
        rows.append(own[min(window - 2, len(own) - 1)])
        rows.extend(own[-3:])
    return np.unique(np.array(rows, dtype=np.int64))[: FINGERPRINT_ROWS * 4]
