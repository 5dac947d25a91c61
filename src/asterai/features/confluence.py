"""Cross-asset confluence on a panel (time x assets), computed at each timestamp
from the assets that have a bar there. Pure numpy; every value at row ``t`` uses
rows ``<= t`` only (the cross-sectional ranks use row ``t`` alone).
"""

from __future__ import annotations

import numpy as np

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


def _row_sums(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the sum of the finite values, added one by one in column order, and their count.

    Sequential on purpose (a running sum along the row, which adds in column order):
    numpy's pairwise summation groups terms by the number of columns, so an asset that
    appears later (a new listing) would change the float rounding of earlier rows, and
    the look-ahead test demands bit-identical values.
    """
    finite = np.isfinite(x)
    if x.shape[1] == 0:
        return np.zeros(len(x)), np.zeros(len(x))
    total = np.cumsum(np.where(finite, x, 0.0), axis=1)[:, -1]
    return total, finite.sum(axis=1).astype(float)


def _nansum_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _row_sums(np.asarray(x, dtype=np.float64))


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    total, count = _nansum_rows(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count >= MIN_ASSETS, total / count, np.nan)


def share_of(flags: np.ndarray) -> np.ndarray:
    """Share of assets (with a defined flag) whose flag is set, per timestamp."""
    return _nanmean_rows(flags)


def _avg_pairwise_corr_window(returns: np.ndarray, min_assets: int) -> float:
    """``_pairwise_nb``'s value for one full window (window x assets), in numpy, with the
    same additions in the same order (running sums down the window, then across the
    assets in column order): the newest bar's value without numba."""
    window = len(returns)
    full = np.isfinite(returns).all(axis=0)
    x = returns[:, full]
    if x.shape[1] == 0:
        return np.nan
    mean = np.cumsum(x, axis=0)[-1] / window
    d = x - mean
    std = np.sqrt(np.cumsum(d * d, axis=0)[-1] / window)
    keep = ~(std <= 1e-12)
    z = d[:, keep] / std[keep]
    n = z.shape[1]
    if n < min_assets:
        return np.nan
    total = np.cumsum(z, axis=1)[:, -1]
    sq = np.cumsum(total * total)[-1]
    return (sq / window - n) / (n * (n - 1))


def average_pairwise_correlation(returns: np.ndarray, window: int = PAIRWISE_WINDOW) -> np.ndarray:
    """Exact mean of the pairwise Pearson correlations over each full window.

    With z the returns standardised within the window (ddof 0), corr_ij = mean(z_i z_j),
    so the sum over all ordered pairs is mean_s (sum_i z_i(s))^2; removing the n
    diagonal terms and dividing by n(n - 1) gives the average. Assets without a full
    window, or without variation in it, are left out. Summed asset by asset in column
    order, so the value at ``t`` never depends on assets absent up to ``t``.
    """
    returns = np.ascontiguousarray(returns, dtype=np.float64)
    if len(returns) == window:  # one window: the newest bar (``rolling.last_rows``)
        out = np.full(window, np.nan)
        out[-1] = _avg_pairwise_corr_window(returns, MIN_ASSETS)
        return out
    from asterai.features._pairwise_nb import avg_pairwise_corr_nb  # numba: the batch only

    return avg_pairwise_corr_nb(returns, window, MIN_ASSETS)


def cross_sectional_rank(x: np.ndarray, min_assets: int = MIN_RANK_ASSETS) -> np.ndarray:
    """Each asset's percentile rank among the assets with a finite value in the same row.

    ``(average rank - 1) / (n - 1)`` over the row's n finite values: 0 for the lowest, 1
    for the highest, tied values sharing their average rank; NaN where the asset's own
    value is not finite or fewer than ``min_assets`` assets have one. A row's ranks read
    that row only, and exactly: a half-integer divided by n - 1, whatever the column
    order, so an asset absent at ``t`` (a later listing) cannot change them.
    """
    finite = np.isfinite(x)
    t_len, n = x.shape
    out = np.full((t_len, n), np.nan)
    if n == 0 or t_len == 0:
        return out
    # missing values sort last as +inf (numpy's vectorised argsort is fast without NaN)
    keyed = np.where(finite, x, np.inf).astype(np.float64, copy=False)
    order = np.argsort(keyed, axis=1)
    ranked = np.take_along_axis(keyed, order, axis=1)
    count = finite.sum(axis=1)
    pos = np.broadcast_to(np.arange(n), (t_len, n))
    # each sorted position's tie run: its first (i) and last (k) position
    starts = np.ones((t_len, n), dtype=bool)
    starts[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    ends = np.ones((t_len, n), dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    last = np.minimum.accumulate(np.where(ends, pos, n - 1)[:, ::-1], axis=1)[:, ::-1]
    valid = (pos < count[:, None]) & (count[:, None] >= min_assets)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (first + last) / 2 / (count[:, None] - 1)
    rows = np.broadcast_to(np.arange(t_len)[:, None], (t_len, n))
    out[rows[valid], order[valid]] = r[valid]
    return out


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

    # the per-bar features read their own row only: with ``tail``, only the last rows
    last = slice(None) if tail is None else slice(-tail, None)

    def pad(v: np.ndarray) -> np.ndarray:
        if tail is None or len(v) == t_len:
            return v
        out = np.full((t_len, *v.shape[1:]), np.nan)
        out[t_len - len(v) :] = v
        return out

    for flag in EVENT_FLAGS:
        market[f"share_{flag}"] = pad(share_of(panel[flag][last]))
    spikes = panel["volume_spike"][last]
    n_spikes, defined = _nansum_rows(spikes)
    market["n_volume_spikes"] = pad(np.where(defined >= MIN_ASSETS, n_spikes, np.nan))
    market["share_volume_spikes"] = pad(share_of(spikes))

    for h in ALIGN_HORIZONS:
        r = panel[f"ret_{h}"][last]
        # a zero return (a closed stock market, an idle hour) says nothing about direction
        moved = np.isfinite(r) & (r != 0)
        positive = np.where(moved, (r > 0).astype(float), np.nan)
        share = share_of(positive)
        market[f"share_pos_ret_{h}"] = pad(share)
        majority = np.sign(share - 0.5)[:, None]
        agree = np.where(
            moved & np.isfinite(majority) & (majority != 0),
            (np.sign(r) == majority).astype(float),
            np.nan,
        )
        asset[f"agree_majority_{h}"] = pad(agree)

    for h in STRENGTH_HORIZONS:
        r = panel[f"ret_{h}"][last]
        asset[f"rel_strength_{h}"] = pad(r - _nanmean_rows(r)[:, None])

    # the 24-bar statistics of the market's return and volume: their last windows
    span = slice(None) if tail is None else slice(-(DOMINANCE_WINDOW + tail - 1), None)
    market_ret = pad(_nanmean_rows(ret1[span]))
    market["market_ret_1"] = market_ret
    market["market_rv_24"] = last_rows(rolling_std, 24, tail, market_ret)

    qv = panel["quote_volume"]
    total = last_rows(rolling_sum, DOMINANCE_WINDOW, tail, pad(_nansum_rows(qv[span])[0]))
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
