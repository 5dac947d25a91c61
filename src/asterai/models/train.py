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
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asterai import atomic
from asterai.config import Settings, XGBoostSettings
from asterai.intervals import iso_ms
from asterai.models import baselines, metrics, money, scoring
from asterai.models import record as _record
from asterai.models import summary as _summary
from asterai.models.calibration import apply_platt, fit_platt
from asterai.models.charts import calibration_chart, importance_chart
from asterai.models.data import (
    DIRECTIONS,
    Panel,
    load_panel,
)
from asterai.models.device import choose_device
from asterai.models.errors import TrainingError
from asterai.models.inputs import blend
from asterai.models.lstm import LSTMMember
from asterai.models.money import TradeRule
from asterai.models.splits import FinalWindow, Fold, Layout, layout
from asterai.models.summary import fmt as _f
from asterai.models.target import check_objective, identity_calibration, is_regression
from asterai.models.xgb import XGBMember
from asterai.paths import DataPaths

log = logging.getLogger(__name__)

MODELS = ("confluence", "aster_native")


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
    rule = TradeRule.of(settings, horizon=0)
    return {"cost": rule.cost, "sides": (rule.allow_long, rule.allow_short)}


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
            k: money.evaluate(v[lab], panel.y[scored], panel.fwd[scored], panel.times[scored], rule)
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
                    ts.stopping_metric,
                    panel.y,
                    panel.fwd,
                    panel.times,
                    rows.stop,
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
        k: money.evaluate(
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
    verdict = [
        *_summary.verdict(overall, results, "model"),
        _summary.earnings_verdict(overall, settings),
    ]
    predictions = pd.concat(pieces, ignore_index=True)
    by_category = (
        _record.by_category(panel, predictions, DataPaths.at(settings.data_root), rule)
        if spec.categories
        else None
    )
    leakage = _record.leakage_checks(panel, lay, predictions, control_auc)
    if not write:
        seconds = time.perf_counter() - started
        summary = _summary.training_summary(results, overall, settings, spec)
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
        k: money.evaluate(v, panel.y[calib], panel.fwd[calib], panel.times[calib], rule)
        for k, v in calib_preds.items()
    }
    tail = _record.fingerprint_rows(panel, runs, ts.lstm.sequence_length)
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
    learning, learning_warnings = _summary.learning_check(
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
    config = _record.model_config(
        spec, settings, panel, lay, final, results, overall, verdict, leakage, members, device,
        tail, tail_preds,
    )  # fmt: skip
    config["learning_check"] = learning
    config["training_summary"] = _summary.training_summary(results, overall, settings, spec)
    config["warnings"] = warnings
    if by_category is not None:
        config["metrics"]["by_category"] = by_category
    importance = _record.importance(
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
        _record.write_predictions(staged, name, predictions, config)
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
