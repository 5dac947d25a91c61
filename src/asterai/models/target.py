"""The R-multiple target: a regression on the trade's outcome in units of its risk.

Rank metrics (AUC, rank IC) reward getting the median right; an account is paid the
mean, and the trades' outcomes have fat tails. With ``train.target = "r_multiple"``
the members fit each row's **net R-multiple** per direction, so their loss sees
magnitudes: the gross R of the trade the triple barrier describes (``label_r``,
``label_r_short``: ``features.labels.triple_barrier_r_nb``; entry at the next open,
exit at the stop, a gap's open, the target or the horizon's close) less the
round-trip cost in R, ``round_trip_cost(settings) / label_risk`` (the cost as a share
of notional over the risk as a share of the entry price). Costs are taken here, not
in the feature table, because the fees are strategy settings.

How the score becomes orders: each member's raw output per direction is
``sigmoid(predicted net R)``, and its calibration is the identity (never a fit to
``net R > 0``, which would turn the mean back into a probability of a positive
outcome). The entry rule (``asterai.entry``) then reads ``p >= threshold``: at the
default 0.5 that is "the model expects the trade to be paid after costs", and of the
two directions the one with the larger expected R is traded. The panel's binary ``y``
(``net R > 0``) stays for the figures that need one (AUC, the baselines).
"""

from __future__ import annotations

import numpy as np

from asterai.models.errors import TrainingError

R_MULTIPLE = "r_multiple"
#: ``XGBoostSettings.objective`` values that fit a regression (the R-multiple).
REGRESSION_OBJECTIVES = ("pseudohuber", "squared")
#: Gross R and risk columns of the feature table, long then short.
R_COLUMNS = (("label_r", "label_risk"), ("label_r_short", "label_risk_short"))
#: The pseudo-Huber loss's slope: quadratic within 1 R of the prediction, linear beyond.
HUBER_SLOPE = 1.0


def is_regression(objective: str) -> bool:
    return objective in REGRESSION_OBJECTIVES


def check_objective(target: str, objective: str, setting: str) -> None:
    """Refuse a target and an XGBoost objective that do not fit each other; ``setting``
    names the objective's setting (``train.xgboost.objective`` or
    ``aster_native.xgboost.objective``)."""
    if target == R_MULTIPLE and not is_regression(objective):
        raise TrainingError(
            f"train.target = 'r_multiple' is a regression on the trade's R-multiple, and "
            f"{setting} = {objective!r} fits a classification or a ranking: set {setting} "
            f"to one of {', '.join(repr(o) for o in REGRESSION_OBJECTIVES)}, or choose "
            "another train.target"
        )
    if target != R_MULTIPLE and is_regression(objective):
        raise TrainingError(
            f"{setting} = {objective!r} fits a regression on the R-multiple, and "
            f"train.target = {target!r} is a 0/1 label: set train.target = 'r_multiple', "
            f"or {setting} to 'binary' or 'rank_pairwise'"
        )


def net_r(gross: np.ndarray, risk: np.ndarray, cost: float) -> np.ndarray:
    """The R-multiple after a round trip costing ``cost`` (a share of notional): the
    cost in R is ``cost / risk`` (``risk``: the stop distance as a share of the entry).
    NaN where the gross R is."""
    gross = np.asarray(gross, dtype=float)
    risk = np.asarray(risk, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(gross) & (risk > 0), gross - cost / risk, np.nan)


def identity_calibration(columns: int = 2) -> list[list[float]]:
    """Platt parameters that change nothing (slope 1, intercept 0 on the logit): a
    regression member's sigmoid(E[net R]) passes through as it is."""
    return [[1.0, 0.0] for _ in range(columns)]


def r_multiple_record(settings) -> dict:
    """What the R-multiple outputs are, for the model's config (``_label_record``)."""
    from asterai.models.data import round_trip_cost

    fs = settings.features
    return {
        "long": "label_r - round_trip_cost / label_risk",
        "short": "label_r_short - round_trip_cost / label_risk_short",
        "gross_r": "(exit - entry) / (entry - stop) for a long (mirrored for a short): exit "
        "at the stop (a later bar's open when it gaps through it), at the target, or at "
        "the horizon's close; a bar reaching both counts as the stop",
        "round_trip_cost": round_trip_cost(settings),
        "take_profit_atr": fs.tp_atr,
        "stop_atr": fs.sl_atr,
        "outputs": "sigmoid(expected net R) per direction, calibrated by the identity: "
        "p >= 0.5 means a trade expected to be paid after costs",
        "y": "net R > 0 (for AUC and the baselines)",
    }
