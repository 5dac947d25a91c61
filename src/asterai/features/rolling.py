"""Causal rolling statistics on numpy arrays (pure functions, no pandas).

Every function returns, at row ``t``, a value computed from rows ``t - window + 1 .. t``
only, and NaN until a full window of valid values exists. They work on 1-d arrays or
on 2-d panels (time x assets, column-wise). Sums are taken as differences of
cumulative sums, so a row's value depends only on the rows before it: truncating the
input never changes an earlier output.
"""

from __future__ import annotations

from collections.abc import Callable

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
    """Rolling standard deviation (``ddof`` 1 by default) over full windows.

    Two-pass within each window (mean first, then squared deviations), so a constant
    window is exactly 0 however long the history: running sums of squares would leave
    a rounding residue there, and a z-score would then turn noise into a number.
    """
    out = np.full(x.shape, np.nan)
    if len(x) < window:
        return out
    w = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)
    mean = w.mean(axis=-1, keepdims=True)
    var = ((w - mean) ** 2).sum(axis=-1) / (window - ddof)
    # a mean that is off by an ulp leaves ~(ulp)^2 of variance in a constant window
    residue = (8 * np.finfo(float).eps * np.abs(mean[..., 0])) ** 2
    var = np.where(var <= residue, 0.0, var)
    out[window - 1 :] = np.sqrt(var)  # NaN wherever the window holds a NaN
    return out


def rolling_zscore(x: np.ndarray, window: int) -> np.ndarray:
    """``(x - window mean) / window std``; NaN where the window is constant."""
    out = np.full(x.shape, np.nan)
    if len(x) < window:
        return out
    w = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)
    mean = w.mean(axis=-1)
    std = rolling_std(x, window)[window - 1 :]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x[window - 1 :] - mean) / std
    out[window - 1 :] = np.where(std > 0, z, np.nan)
    return out


def rolling_corr(x: np.ndarray, y: np.ndarray, window: int) -> np.ndarray:
    """Pearson correlation of ``x`` (T or T x N) with ``y`` (T) over full windows."""
    if x.ndim == 2 and y.ndim == 1:
        y = np.broadcast_to(y[:, None], x.shape)
    both = np.isfinite(x) & np.isfinite(y)
    xs = np.where(both, x, 0.0)
    ys = np.where(both, y, 0.0)
    one = len(x) == window
    if one:
        # one window (the newest row, ``last_rows``): plain sums down the rows add the same
        # terms in the same order as the running sums, without a running sum per row;
        # the arithmetic after them runs on that row alone
        def windowed(v: np.ndarray) -> np.ndarray:
            return v.sum(axis=0)[None]
    else:

        def windowed(v: np.ndarray) -> np.ndarray:
            return _windowed(np.cumsum(v, axis=0), window)

    n = windowed(both.astype(float))
    sx = windowed(xs)
    sy = windowed(ys)
    sxx = windowed(xs * xs)
    syy = windowed(ys * ys)
    sxy = windowed(xs * ys)
    cov = sxy - sx * sy / window
    vx = sxx - sx * sx / window
    vy = syy - sy * sy / window
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.sqrt(vx * vy)
    ok = (n == window) & (vx > 1e-18) & (vy > 1e-18)
    value = np.where(ok, np.clip(corr, -1.0, 1.0), np.nan)
    if not one:
        return value
    out = np.full(x.shape, np.nan)
    out[-1] = value[0]
    return out


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


def last_rows(
    fn: Callable[..., np.ndarray], window: int, tail: int | None, *arrays: np.ndarray, **kw
) -> np.ndarray:
    """``fn(*arrays, window)`` (a rolling function above) where only the last ``tail``
    rows are wanted: computed from the last ``window + tail - 1`` rows alone, the rows
    before NaN (``tail`` None: every row). The newest-bar features use it
    (``features.latest``); the values equal the full computation's up to the rounding
    of the running sums, which then start later."""
    n = len(arrays[0])
    span = window + (tail or 0) - 1
    if tail is None or n <= span:
        return fn(*arrays, window, **kw)
    part = fn(*(a[-span:] for a in arrays), window, **kw)[-tail:]
    out = np.full((n, *part.shape[1:]), np.nan)
    out[-tail:] = part
    return out
