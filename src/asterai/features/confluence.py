"""Cross-asset confluence on a panel (time x assets), computed at each timestamp
from the assets that have a bar there. Pure numpy; every value at row ``t`` uses
rows ``<= t`` only (the cross-sectional ranks use row ``t`` alone).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from asterai.features.rolling import last_rows, rolling_corr, rolling_std, rolling_sum

CORR_WINDOWS = (24, 168)
PAIRWISE_WINDOW = 24
ALIGN_HORIZONS = (1, 4, 24)
STRENGTH_HORIZONS = (24, 72)
DOMINANCE_WINDOW = 24
MIN_ASSETS = 2
#: Fewest assets with a value at a bar for a cross-sectional rank (``xs_rank_*``): with
#: two, a rank only says which is larger, and 0 or 1 would read as an extreme.
MIN_RANK_ASSETS = 3
#: Per-asset events whose share across assets is a market feature.
EVENT_FLAGS = (
    "rsi_oversold",
    "rsi_overbought",
    "macd_cross_up",
    "macd_cross_down",
    "bb_break_up",
    "bb_break_down",
)


@njit(cache=True)
def _row_sums_nb(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the sum of the finite values, added one by one in column order, and their count.

    Sequential on purpose: numpy's pairwise summation groups terms by the number of
    columns, so an asset that appears later (a new listing) would change the float
    rounding of earlier rows, and the look-ahead test demands bit-identical values.
    """
    t_len, n = x.shape
    total = np.zeros(t_len)
    count = np.zeros(t_len)
    for t in range(t_len):
        for j in range(n):
            v = x[t, j]
            if np.isfinite(v):
                total[t] += v
                count[t] += 1
    return total, count


def _nansum_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _row_sums_nb(np.ascontiguousarray(x, dtype=np.float64))


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    total, count = _nansum_rows(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count >= MIN_ASSETS, total / count, np.nan)


def share_of(flags: np.ndarray) -> np.ndarray:
    """Share of assets (with a defined flag) whose flag is set, per timestamp."""
    return _nanmean_rows(flags)


@njit(cache=True)
def _avg_pairwise_corr_nb(returns: np.ndarray, window: int, min_assets: int) -> np.ndarray:
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


def average_pairwise_correlation(returns: np.ndarray, window: int = PAIRWISE_WINDOW) -> np.ndarray:
    """Exact mean of the pairwise Pearson correlations over each full window.

    With z the returns standardised within the window (ddof 0), corr_ij = mean(z_i z_j),
    so the sum over all ordered pairs is mean_s (sum_i z_i(s))^2; removing the n
    diagonal terms and dividing by n(n - 1) gives the average. Assets without a full
    window, or without variation in it, are left out. Summed asset by asset in column
    order, so the value at ``t`` never depends on assets absent up to ``t``.
    """
    return _avg_pairwise_corr_nb(
        np.ascontiguousarray(returns, dtype=np.float64), window, MIN_ASSETS
    )


@njit(cache=True)
def _xs_rank_nb(
    keyed: np.ndarray, order: np.ndarray, count: np.ndarray, min_assets: int
) -> np.ndarray:
    """Scaled average ranks from each row's argsort (its ``count[t]`` values first)."""
    t_len, n = keyed.shape
    out = np.full((t_len, n), np.nan)
    for t in range(t_len):
        m = count[t]
        if m < min_assets:
            continue
        i = 0
        while i < m:
            v = keyed[t, order[t, i]]
            k = i  # the run of ties i..k shares the average of the 0-based ranks i..k
            while k + 1 < m and keyed[t, order[t, k + 1]] == v:
                k += 1
            r = (i + k) / 2 / (m - 1)
            for q in range(i, k + 1):
                out[t, order[t, q]] = r
            i = k + 1
    return out


def cross_sectional_rank(x: np.ndarray, min_assets: int = MIN_RANK_ASSETS) -> np.ndarray:
    """Each asset's percentile rank among the assets with a finite value in the same row.

    ``(average rank - 1) / (n - 1)`` over the row's n finite values: 0 for the lowest, 1
    for the highest, tied values sharing their average rank; NaN where the asset's own
    value is not finite or fewer than ``min_assets`` assets have one. A row's ranks read
    that row only, and exactly: a half-integer divided by n - 1, whatever the column
    order, so an asset absent at ``t`` (a later listing) cannot change them.
    """
    finite = np.isfinite(x)
    # missing values sort last as +inf (numpy's vectorised argsort is fast without NaN)
    keyed = np.where(finite, x, np.inf).astype(np.float64, copy=False)
    order = np.argsort(keyed, axis=1)
    return _xs_rank_nb(keyed, order, finite.sum(axis=1).astype(np.int64), min_assets)


def confluence(
    panel: dict[str, np.ndarray], symbols: list[str], tail: int | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Market-level ([T]) and per-asset ([T, N]) confluence features.

    ``panel`` holds [T, N] arrays named like the per-asset features (``ret_1``, ``ret_4``,
    ``ret_24``, ``ret_72``, the event flags, ``quote_volume``), NaN where an asset has no bar.
    ``tail``: only the last rows are wanted (the rolling statistics skip the others).
    """
    market: dict[str, np.ndarray] = {}
    asset: dict[str, np.ndarray] = {}
    ret1 = panel["ret_1"]
    t_len = ret1.shape[0]

    for ref in ("BTC", "ETH"):
        col = _column(symbols, f"{ref}USDT")
        for w in CORR_WINDOWS:
            name = f"corr_{ref.lower()}_{w}"
            asset[name] = (
                last_rows(rolling_corr, w, tail, ret1, ret1[:, col])
                if col is not None
                else np.full(ret1.shape, np.nan)
            )
    market["market_avg_corr_24"] = last_rows(
        average_pairwise_correlation, PAIRWISE_WINDOW, tail, ret1
    )

    for flag in EVENT_FLAGS:
        market[f"share_{flag}"] = share_of(panel[flag])
    spikes = panel["volume_spike"]
    n_spikes, defined = _nansum_rows(spikes)
    market["n_volume_spikes"] = np.where(defined >= MIN_ASSETS, n_spikes, np.nan)
    market["share_volume_spikes"] = share_of(spikes)

    for h in ALIGN_HORIZONS:
        r = panel[f"ret_{h}"]
        # a zero return (a closed stock market, an idle hour) says nothing about direction
        moved = np.isfinite(r) & (r != 0)
        positive = np.where(moved, (r > 0).astype(float), np.nan)
        share = share_of(positive)
        market[f"share_pos_ret_{h}"] = share
        majority = np.sign(share - 0.5)[:, None]
        agree = np.where(
            moved & np.isfinite(majority) & (majority != 0),
            (np.sign(r) == majority).astype(float),
            np.nan,
        )
        asset[f"agree_majority_{h}"] = agree

    for h in STRENGTH_HORIZONS:
        r = panel[f"ret_{h}"]
        asset[f"rel_strength_{h}"] = r - _nanmean_rows(r)[:, None]

    market_ret = _nanmean_rows(ret1)
    market["market_ret_1"] = market_ret
    market["market_rv_24"] = last_rows(rolling_std, 24, tail, market_ret)

    qv = panel["quote_volume"]
    total = last_rows(rolling_sum, DOMINANCE_WINDOW, tail, _nansum_rows(qv)[0])
    for ref in ("BTC", "ETH"):
        col = _column(symbols, f"{ref}USDT")
        if col is None:
            market[f"{ref.lower()}_dominance_24"] = np.full(t_len, np.nan)
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            dom = last_rows(rolling_sum, DOMINANCE_WINDOW, tail, qv[:, col]) / total
        market[f"{ref.lower()}_dominance_24"] = np.where(total > 0, dom, np.nan)
    return market, asset


def _column(symbols: list[str], name: str) -> int | None:
    return symbols.index(name) if name in symbols else None
