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
import pandas as pd
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

MIN_IC_SYMBOLS = 3


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


def information_coefficient(
    p: np.ndarray, outcome: np.ndarray, times: np.ndarray
) -> dict[str, Any]:
    """Mean per-bar Spearman correlation across symbols, with its t-statistic."""
    frame = pd.DataFrame({"t": times, "p": p, "o": outcome}).dropna()
    counts = frame.groupby("t")["p"].transform("size")
    frame = frame[counts >= MIN_IC_SYMBOLS]
    if frame.empty:
        return {"ic": None, "ic_t": None, "bars": 0}
    g = frame.groupby("t")
    ranks = g[["p", "o"]].rank()
    # the Pearson correlation of the ranks per bar, from per-bar sums (vectorised: a
    # groupby-apply costs a Python call per bar)
    r = pd.DataFrame(
        {"t": frame["t"], "p": ranks["p"], "o": ranks["o"], "pp": ranks["p"] ** 2,
         "oo": ranks["o"] ** 2, "po": ranks["p"] * ranks["o"]}
    )  # fmt: skip
    sums = r.groupby("t").sum()
    n = g.size().reindex(sums.index).to_numpy(dtype=float)
    cov = sums["po"].to_numpy() - sums["p"].to_numpy() * sums["o"].to_numpy() / n
    var_p = sums["pp"].to_numpy() - sums["p"].to_numpy() ** 2 / n
    var_o = sums["oo"].to_numpy() - sums["o"].to_numpy() ** 2 / n
    varied = (g["p"].nunique() > 1).to_numpy() & (g["o"].nunique() > 1).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(varied, cov / np.sqrt(var_p * var_o), np.nan)
    per_bar = pd.Series(corr, index=sums.index).dropna()
    if per_bar.empty:
        return {"ic": None, "ic_t": None, "bars": 0}
    sd = per_bar.std(ddof=1)
    return {
        "ic": float(per_bar.mean()),
        "ic_t": float(per_bar.mean() / sd * np.sqrt(len(per_bar))) if sd > 0 else None,
        "bars": int(len(per_bar)),
    }


def evaluate(
    p: np.ndarray, y: np.ndarray, fwd: np.ndarray, times: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Both directions: ``p`` and ``y`` are (rows, 2), long then short."""
    out = {}
    for j, direction in enumerate(("long", "short")):
        sign = 1.0 if j == 0 else -1.0
        out[direction] = classification(p[:, j], y[:, j], threshold) | information_coefficient(
            p[:, j], sign * fwd, times
        )
    return out
