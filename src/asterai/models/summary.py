"""What a training says: the sentences and the summary ``asterai train`` prints and the
model config keeps (``models.train`` calls these; it owns the loop).

- ``verdict``: does the model beat the baselines, per direction and per fold?
- ``learning_check``: did early stopping keep almost nothing, did a calibration find no
  ranking?
- ``earnings_verdict``: does it earn what it ranks (``models.money``)?
- ``training_summary``: the per-fold and pooled figures, rank and money side by side.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from asterai.config import Settings
from asterai.models.calibration import flattened
from asterai.models.data import DIRECTIONS, round_trip_cost

if TYPE_CHECKING:
    from asterai.models.train import FoldResult, _Spec

log = logging.getLogger(__name__)

SUSPICIOUS_AUC = 0.60


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def verdict(overall: dict[str, dict[str, Any]], folds: list[FoldResult], main: str) -> list[str]:
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
            f"{fmt(m.get('ic'))} (t {fmt(m.get('ic_t'))}, overlap-adjusted) vs logistic {fmt(lg.get('ic'))}. "
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


def learning_check(
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
        f"{d} {t[d]['rows']:,} rows, mean {_pct(t[d]['mean'])} (t {fmt(t[d]['t'])})"
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
        f"(median {_pct(t['all']['median'])}, t {fmt(t['all']['t'])}; {sides}) {rule}"
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
        return {d: {k: m[d].get(k) for k in SUMMARY_FIGURES} for d in DIRECTIONS} | {
            "traded": m.get("traded")
        }

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
