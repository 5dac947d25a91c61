"""Out-of-sample metrics: ROC AUC, log loss, Brier, precision and recall at the trading
threshold, class balance, and the information coefficient.

The information coefficient (IC) is the mean, over bars with at least ``MIN_IC_SYMBOLS``
symbols, of the Spearman rank correlation across symbols between the prediction and the
outcome (the forward return for longs, its negative for shorts), as qlib reports it:
a pooled AUC over a panel is dominated by market-wide moves within each test window,
while a strategy picks the best symbols at each bar.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from asterai.models.scoring import MIN_IC_SYMBOLS, PerBarIC

__all__ = ["MIN_IC_SYMBOLS", "classification", "evaluate", "information_coefficient"]


def classification(p: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, Any]:
    ok = np.isfinite(p) & np.isfinite(y)
    p, y = p[ok], y[ok]
    out: dict[str, Any] = {
        "rows": int(len(y)),
        "positive_rate": float(y.mean()) if len(y) else None,
    }
    if len(y) == 0 or len(np.unique(y)) < 2:
        out.update(auc=None, log_loss=None, brier=None, precision=None, recall=None, signals=0)
        return out
    signal = p >= threshold
    hits = int((signal & (y == 1)).sum())
    out.update(
        auc=float(roc_auc_score(y, p)),
        log_loss=float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
        brier=float(brier_score_loss(y, p)),
        signals=int(signal.sum()),
        precision=float(hits / signal.sum()) if signal.any() else None,
        recall=float(hits / (y == 1).sum()),
    )
    return out


#: ``overlap_t`` needs at least this many horizons of values: with 23 autocovariances
#: estimated from fewer, a series without signal scores |t| > 2 far more often than 5%.
MIN_OVERLAPS = 10


def _long_run_variance(d: np.ndarray, lags: int, uniform: bool) -> float:
    n = len(d)
    var = float(d @ d) / n
    for lag in range(1, min(lags, n - 1) + 1):
        weight = 1.0 if uniform else 1.0 - lag / (lags + 1.0)
        var += 2.0 * weight * float(d[lag:] @ d[:-lag]) / n
    return var


def overlap_t(x: np.ndarray, horizon: int) -> float | None:
    """The t-statistic of the mean of ``x`` (in time order) when each value's outcome
    spans ``horizon`` bars, so that values closer than that overlap.

    Hansen-Hodrick: the autocovariances up to ``horizon - 1`` lags with equal weights,
    exact for the moving average that overlapping outcomes make; where that estimate is
    not positive (it can be in short samples), Newey-West's Bartlett weights over twice
    the horizon (positive by construction; on overlapping sums it still overstates the t
    by about a tenth). ``horizon`` 0 or 1: the plain t with ddof 0. The plain t would
    count one market move ``horizon`` times. None with fewer than ``MIN_OVERLAPS``
    horizons of values: on a few horizons the autocovariances are too noisy for any
    standard error (a single fold of a month of hourly bars is about 3.5 horizons). Hand-written (a dozen lines) rather than
    pulling in statsmodels.
    """
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n < 2 or n < MIN_OVERLAPS * horizon:
        return None
    d = x - x.mean()
    var = _long_run_variance(d, max(horizon - 1, 0), uniform=True)
    if var <= 0:
        var = _long_run_variance(d, 2 * horizon, uniform=False)
    if var <= 0:
        return None
    return float(x.mean() / np.sqrt(var / n))


def information_coefficient(
    p: np.ndarray, outcome: np.ndarray, times: np.ndarray, lags: int = 0
) -> dict[str, Any]:
    """Mean per-bar Spearman correlation across symbols (``scoring.PerBarIC``: the same
    computation that can stop training early: a bar where ``p`` does not vary counts 0,
    one where the outcome does not is left out), with two t-statistics across bars:
    ``ic_t`` allowing for outcomes that overlap over ``lags`` bars (the label horizon;
    ``overlap_t``), ``ic_t_naive`` as if bars were independent.
    """
    ok = np.isfinite(p) & np.isfinite(outcome)
    per_bar = PerBarIC(np.where(ok, outcome, np.nan), times).per_bar(p)
    per_bar = per_bar[np.isfinite(per_bar)]
    if len(per_bar) == 0:
        return {"ic": None, "ic_t": None, "ic_t_naive": None, "ic_t_lags": lags, "bars": 0}
    sd = per_bar.std(ddof=1) if len(per_bar) > 1 else 0.0
    return {
        "ic": float(per_bar.mean()),
        "ic_t": overlap_t(per_bar, lags),
        "ic_t_naive": float(per_bar.mean() / sd * np.sqrt(len(per_bar))) if sd > 0 else None,
        "ic_t_lags": lags,
        "bars": int(len(per_bar)),
    }


def evaluate(
    p: np.ndarray,
    y: np.ndarray,
    fwd: np.ndarray,
    times: np.ndarray,
    threshold: float,
    lags: int = 0,
) -> dict[str, Any]:
    """Both directions: ``p`` and ``y`` are (rows, 2), long then short; ``lags``: the
    label horizon in bars, for the IC's Newey-West t-statistic."""
    out = {}
    for j, direction in enumerate(("long", "short")):
        sign = 1.0 if j == 0 else -1.0
        out[direction] = classification(p[:, j], y[:, j], threshold) | information_coefficient(
            p[:, j], sign * fwd, times, lags
        )
    return out
