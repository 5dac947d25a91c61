"""Platt calibration: a logistic fit of the outcome on the model's logit, per direction.

Fitted on the calibration part of a fold's (or the final model's) validation window
only: never the rows the model was fitted on, never the rows that stopped it early,
never test rows. Stored as two numbers per direction in the model's JSON config.

A calibration maps a score to a probability and never reverses its ranking (an
isotonic fit could not either): when the calibration rows rank the outcomes the other
way round from the member's raw output (a fitted slope below zero), the member has no
ranking those rows confirm, and it is flattened to their base rate (slope 0) rather
than turned around on a few dozen bars. Training says so in its warnings.
Hand-written because it is two parameters and must round-trip through JSON; the fit is
scikit-learn's ``LogisticRegression``.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def fit_platt(raw: np.ndarray, y: np.ndarray) -> list[list[float]]:
    """``[[a, b], ...]`` per column: calibrated = sigmoid(a * logit(raw) + b)."""
    from sklearn.linear_model import LogisticRegression  # training only: serving applies

    out = []
    for j in range(raw.shape[1]):
        ok = np.isfinite(raw[:, j]) & np.isfinite(y[:, j])
        target = y[ok, j]
        if ok.sum() < 10 or len(np.unique(target)) < 2:
            out.append([1.0, 0.0])  # nothing to learn from: identity
            continue
        model = LogisticRegression(C=1e6, max_iter=1000)
        model.fit(logit(raw[ok, j]).reshape(-1, 1), target)
        slope = float(model.coef_[0, 0])
        if slope < 0:  # never reverse a ranking: no confirmed ranking, the base rate
            rate = float(np.clip(target.mean(), EPS, 1 - EPS))
            out.append([0.0, float(np.log(rate / (1 - rate)))])
            continue
        out.append([slope, float(model.intercept_[0])])
    return out


def flattened(params: list[list[float]]) -> list[bool]:
    """Which directions ``fit_platt`` flattened to the base rate (slope exactly 0)."""
    return [a == 0.0 for a, _ in params]


def apply_platt(raw: np.ndarray, params: list[list[float]]) -> np.ndarray:
    out = np.full(raw.shape, np.nan)
    for j, (a, b) in enumerate(params):
        z = a * logit(raw[:, j]) + b
        out[:, j] = 1.0 / (1.0 + np.exp(-z))
    out[~np.isfinite(raw)] = np.nan
    return out
