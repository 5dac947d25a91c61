"""Causal rolling statistics on numpy arrays (pure functions, no pandas).

Every function returns, at row ``t``, a value computed from rows ``t - window + 1 .. t``
only, and NaN until a full window of valid values exists. They work on 1-d arrays or
on 2-d panels (time x assets, column-wise). Sums are taken as differences of
cumulative sums, so a row's value depends only on the rows before it: truncating the
input never changes an earlier output.
"""

from __future__ import annotations

import numpy as np


def _windowed(cum: np.ndarray, window: int) -> np.ndarray:
    out = np.full_like(cum, np.nan, dtype=float)
    if len(cum) >= window:
        out[window - 1 :] = cum[window - 1 :] - np.concatenate(
            [np.zeros((1,) + cum.shape[1:]), cum[: len(cum) - window]]
        )
    return out


def _sums(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    valid = np.isfinite(x)
    filled = np.where(valid, x, 0.0)
    return _windowed(np.cumsum(filled, axis=0), window), _windowed(
        np.cumsum(valid, axis=0).astype(float), window
    )


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    total, count = _sums(x, window)
    return np.where(count == window, total / window, np.nan)


def rolling_std(x: np.ndarray, window: int, ddof: int = 1) -> np.ndarray:
    """Rolling standard deviation (``ddof`` 1 by default) over full windows."""
    total, count = _sums(x, window)
    sq, _ = _sums(np.where(np.isfinite(x), x * x, np.nan), window)
    var = (sq - total * total / window) / (window - ddof)
    var = np.where(count == window, np.maximum(var, 0.0), np.nan)
    return np.sqrt(var)


def rolling_zscore(x: np.ndarray, window: int) -> np.ndarray:
    mean = rolling_mean(x, window)
    std = rolling_std(x, window)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x - mean) / std
    return np.where(std > 0, z, np.nan)


def rolling_corr(x: np.ndarray, y: np.ndarray, window: int) -> np.ndarray:
    """Pearson correlation of ``x`` (T or T x N) with ``y`` (T) over full windows."""
    if x.ndim == 2 and y.ndim == 1:
        y = np.broadcast_to(y[:, None], x.shape)
    both = np.isfinite(x) & np.isfinite(y)
    xs = np.where(both, x, 0.0)
    ys = np.where(both, y, 0.0)
    n = _windowed(np.cumsum(both, axis=0).astype(float), window)
    sx = _windowed(np.cumsum(xs, axis=0), window)
    sy = _windowed(np.cumsum(ys, axis=0), window)
    sxx = _windowed(np.cumsum(xs * xs, axis=0), window)
    syy = _windowed(np.cumsum(ys * ys, axis=0), window)
    sxy = _windowed(np.cumsum(xs * ys, axis=0), window)
    cov = sxy - sx * sy / window
    vx = sxx - sx * sx / window
    vy = syy - sy * sy / window
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.sqrt(vx * vy)
    ok = (n == window) & (vx > 1e-18) & (vy > 1e-18)
    return np.where(ok, np.clip(corr, -1.0, 1.0), np.nan)


def rolling_max(x: np.ndarray, window: int) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    if len(x) >= window:
        out[window - 1 :] = np.lib.stride_tricks.sliding_window_view(x, window, axis=0).max(axis=-1)
    return out


def rolling_min(x: np.ndarray, window: int) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    if len(x) >= window:
        out[window - 1 :] = np.lib.stride_tricks.sliding_window_view(x, window, axis=0).min(axis=-1)
    return out


def lag_diff(x: np.ndarray, lag: int) -> np.ndarray:
    """``x[t] - x[t - lag]`` (NaN for the first ``lag`` rows)."""
    out = np.full(x.shape, np.nan)
    if len(x) > lag:
        out[lag:] = x[lag:] - x[:-lag]
    return out


def rolling_sum(x: np.ndarray, window: int) -> np.ndarray:
    total, count = _sums(x, window)
    return np.where(count == window, total, np.nan)
