"""The two baselines every model is compared with, on the same rows.

``prior``: the class rate of the fitting rows, for every row (AUC 0.5 by construction;
the log loss and Brier a model must beat). ``logistic``: scikit-learn's logistic
regression on the same features, medians filled and standardised on the fitting rows (at most
``LOGISTIC_MAX_ROWS`` of them, evenly spaced).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def prior(y_fit: np.ndarray, rows: int) -> np.ndarray:
    return np.tile(np.nanmean(y_fit, axis=0), (rows, 1))


#: The logistic baseline is fitted on at most this many rows (evenly spaced in time):
#: a linear model gains nothing from more, and memory stays bounded on big panels.
LOGISTIC_MAX_ROWS = 200_000


def logistic(X_fit: np.ndarray, y_fit: np.ndarray, X: np.ndarray, seed: int) -> np.ndarray:
    if len(X_fit) > LOGISTIC_MAX_ROWS:
        keep = np.linspace(0, len(X_fit) - 1, LOGISTIC_MAX_ROWS).astype(np.int64)
        X_fit, y_fit = X_fit[keep], y_fit[keep]
    seen = np.isfinite(X_fit).any(axis=0)
    with np.errstate(all="ignore"):
        fill = np.nanmedian(X_fit[:, seen], axis=0)

    def prepared(A: np.ndarray) -> np.ndarray:
        A = A[:, seen].astype(np.float64)
        return np.where(np.isfinite(A), A, fill)

    out = np.empty((len(X), y_fit.shape[1]))
    fitted = prepared(X_fit)
    wanted = prepared(X)
    for j in range(y_fit.shape[1]):
        if len(np.unique(y_fit[:, j])) < 2:
            out[:, j] = float(np.mean(y_fit[:, j]))
            continue
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=0.1, max_iter=300, random_state=seed)
        )
        model.fit(fitted, y_fit[:, j])
        out[:, j] = model.predict_proba(wanted)[:, 1]
    return out
