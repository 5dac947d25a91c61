"""The batch's average pairwise correlation over every row (numba).

Apart from ``features.confluence`` so that the newest-bar path (the signal service)
never imports numba: it computes the one window it needs in numpy
(``confluence._avg_pairwise_corr_window``, the same additions in the same order).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def avg_pairwise_corr_nb(returns: np.ndarray, window: int, min_assets: int) -> np.ndarray:
    t_len, n_assets = returns.shape
    out = np.full(t_len, np.nan)
    total = np.empty(window)
    for t in range(window - 1, t_len):
        total[:] = 0.0
        n = 0
        for j in range(n_assets):
            s = 0.0
            ok = True
            for k in range(t - window + 1, t + 1):
                x = returns[k, j]
                if not np.isfinite(x):
                    ok = False
                    break
                s += x
            if not ok:
                continue
            mean = s / window
            ss = 0.0
            for k in range(t - window + 1, t + 1):
                d = returns[k, j] - mean
                ss += d * d
            std = np.sqrt(ss / window)
            if std <= 1e-12:
                continue
            for i in range(window):
                total[i] += (returns[t - window + 1 + i, j] - mean) / std
            n += 1
        if n >= min_assets:
            sq = 0.0
            for i in range(window):
                sq += total[i] * total[i]
            out[t] = (sq / window - n) / (n * (n - 1))
    return out
