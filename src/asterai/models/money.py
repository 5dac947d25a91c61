"""What the trades are paid: the figures that judge a model by means after costs.

A rank statistic (AUC, the per-bar Spearman IC) rewards getting the medians right; an
account is paid the means, and crypto's means sit in fat tails: the names a model likes
least can be the ones that pump, and shorting them is paid their mean, not their median
(DESIGN.md rule 7). So beside every rank figure the training reports, per fold and
pooled, on the same out-of-sample rows:

- **the decile table**: the rows pooled by their score's decile (``p_long`` for the long
  side, ``p_short`` for the short side), and in each decile the mean and the median of
  the side's forward return after the round-trip cost (``net_returns``);
- **the traded rows**: the rows the entry rule trades (``traded_sides``: the stronger
  side when it reaches ``train.threshold``, only the sides ``strategy.sides`` allows;
  the backtest's own rule, before its limits on positions and margin), their mean and
  median net return per side and over both, and the t-statistic of the mean allowing
  for overlapping outcomes and for several rows at one bar (``clustered_t``);
- **a Pearson IC on winsorised returns**: the per-bar linear correlation between the
  score and the forward return clipped at its 1st and 99th percentiles: it sees
  magnitudes, which the rank IC does not, without one print deciding it.

The forward return is the label's: log(close[t + horizon] / open[t + 1]), the exit at
the time limit; a trade's stop and target cut some of those paths short, which these
figures do not (the backtest does). Funding is not charged here (the backtest does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from asterai.entry import allowed_sides
from asterai.models import metrics
from asterai.models.metrics import MIN_OVERLAPS, _long_run_variance, overlap_t
from asterai.models.scoring import MIN_IC_SYMBOLS

DECILES = 10
#: The Pearson IC's outcome is clipped at these quantiles of the rows it is computed on.
WINSOR = (0.01, 0.99)


@dataclass(frozen=True, slots=True)
class TradeRule:
    """How scores become trades, and what a trade costs: the backtest's rule."""

    threshold: float
    cost: float  # round trip, share of notional (``data.round_trip_cost``)
    horizon: int  # the label horizon in bars: outcomes this close overlap
    allow_long: bool = True
    allow_short: bool = True

    @classmethod
    def of(cls, settings: Any, horizon: int) -> TradeRule:
        from asterai.models.data import round_trip_cost

        allow_long, allow_short = allowed_sides(settings.strategy.sides)
        return cls(
            settings.train.threshold, round_trip_cost(settings), horizon, allow_long, allow_short
        )


def net_returns(fwd: np.ndarray, cost: float) -> np.ndarray:
    """(rows, 2): what a long and a short from the next open to the label's end earn per
    unit of notional after the round-trip ``cost``: ``exp(fwd) - 1 - cost`` and
    ``1 - exp(fwd) - cost``."""
    gross = np.expm1(np.asarray(fwd, dtype=float))
    return np.column_stack([gross - cost, -gross - cost])


def traded_sides(p: np.ndarray, rule: TradeRule) -> np.ndarray:
    """The entry rule (``asterai.entry.entry_side``) on every row at once: +1 long, -1
    short, 0 none. A test holds the two equal row by row."""
    pl, ps = p[:, 0], p[:, 1]
    ok = np.isfinite(pl) & np.isfinite(ps) & (np.maximum(pl, ps) >= rule.threshold)
    side = np.where(ok, np.where(pl >= ps, 1, -1), 0).astype(np.int8)
    side[(side == 1) & (not rule.allow_long)] = 0
    side[(side == -1) & (not rule.allow_short)] = 0
    return side


def clustered_t(x: np.ndarray, times: np.ndarray, grid: np.ndarray, horizon: int) -> float | None:
    """The t-statistic of the mean of ``x`` (one value per traded row, at bar ``times``)
    when several rows share a bar and outcomes ``horizon`` bars apart overlap.

    The deviations from the mean are summed per bar of ``grid`` (the bars evaluated, in
    order; 0 where nothing traded), and the long-run variance of those sums is taken as
    ``metrics.overlap_t`` does (Hansen-Hodrick over ``horizon - 1`` lags, Bartlett's over
    twice the horizon where that is not positive): the variance of the mean is that
    over the squared row count. Rows at one bar move together (one market), so counting
    them as independent would overstate the t as much as ignoring the overlap does.
    None with fewer than two rows or ``MIN_OVERLAPS`` horizons of bars.
    """
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n < 2 or len(grid) < max(MIN_OVERLAPS * horizon, 2):
        return None
    d = np.zeros(len(grid))
    np.add.at(d, np.searchsorted(grid, times), x - x.mean())
    var = _long_run_variance(d, max(horizon - 1, 0), uniform=True)
    if var <= 0:
        var = _long_run_variance(d, 2 * horizon, uniform=False)
    if var <= 0:
        return None
    return float(x.mean() / np.sqrt(var * len(grid) / n**2))


def _summary(x: np.ndarray, times: np.ndarray, grid: np.ndarray, horizon: int) -> dict[str, Any]:
    if len(x) == 0:
        return {"rows": 0, "mean": None, "median": None, "t": None, "win_rate": None}
    return {
        "rows": int(len(x)),
        "mean": float(x.mean()),
        "median": float(np.median(x)),
        "t": clustered_t(x, times, grid, horizon),
        "win_rate": float((x > 0).mean()),
    }


def traded(
    p: np.ndarray, fwd: np.ndarray, times: np.ndarray, rule: TradeRule
) -> dict[str, dict[str, Any]]:
    """The rows the entry rule trades: per side and over both, their count, mean and
    median net return, its t (``clustered_t``) and the share that made money."""
    ok = np.isfinite(fwd)
    p, fwd, times = p[ok], fwd[ok], times[ok]
    side = traded_sides(p, rule)
    net = net_returns(fwd, rule.cost)
    grid = np.unique(times)
    out: dict[str, dict[str, Any]] = {}
    for j, (name, s) in enumerate((("long", 1), ("short", -1))):
        sel = side == s
        out[name] = _summary(net[sel, j], times[sel], grid, rule.horizon)
    both = side != 0
    paid = np.where(side == 1, net[:, 0], net[:, 1])
    out["all"] = _summary(paid[both], times[both], grid, rule.horizon)
    return out


def score_deciles(score: np.ndarray) -> np.ndarray:
    """Each score's decile, 0 (lowest) to 9: average ranks, so tied scores share one,
    and decile ``floor((rank - 1) * 10 / rows)``. The one rule for the decile table,
    the ``mean_net`` stopping score and the backtest's trades by decile."""
    rank = pd.Series(np.asarray(score, dtype=float)).rank(method="average").to_numpy()
    return np.minimum(((rank - 1.0) * DECILES // max(len(rank), 1)).astype(int), DECILES - 1)


def top_decile_mean(score: np.ndarray, net: np.ndarray) -> float:
    """The mean of ``net`` over the rows of the highest decile of ``score`` (the decile
    table's last row); 0 without a finite pair."""
    ok = np.isfinite(score) & np.isfinite(net)
    if not ok.any():
        return 0.0
    decile = score_deciles(score[ok])
    return float(net[ok][decile == decile.max()].mean())


def deciles(score: np.ndarray, net: np.ndarray) -> list[dict[str, Any]]:
    """Rows pooled by their score's decile (``score_deciles``): per decile the rows, the
    score's range and the mean, median and standard deviation of ``net``. Lowest
    decile first."""
    ok = np.isfinite(score) & np.isfinite(net)
    score, net = score[ok], net[ok]
    if len(score) == 0:
        return []
    decile = score_deciles(score)
    out = []
    for d in range(DECILES):
        sel = decile == d
        if not sel.any():
            continue
        v = net[sel]
        out.append(
            {
                "decile": d + 1,
                "rows": int(sel.sum()),
                "score_min": float(score[sel].min()),
                "score_max": float(score[sel].max()),
                "mean": float(v.mean()),
                "median": float(np.median(v)),
                "sd": float(v.std(ddof=1)) if len(v) > 1 else None,
            }
        )
    return out


def decile_spread(table: list[dict[str, Any]]) -> float | None:
    """The top decile's mean net return minus the bottom decile's."""
    if len(table) < 2:
        return None
    return table[-1]["mean"] - table[0]["mean"]


def pearson_ic(
    score: np.ndarray, outcome: np.ndarray, times: np.ndarray, lags: int
) -> dict[str, Any]:
    """The mean over bars (with at least ``MIN_IC_SYMBOLS`` rows) of the Pearson
    correlation across symbols between ``score`` and ``outcome`` clipped at its
    ``WINSOR`` quantiles over these rows, with its overlap-adjusted t (``overlap_t``).
    A bar where the score does not vary counts 0, one where the outcome does not is
    left out, as for the rank IC."""
    ok = np.isfinite(score) & np.isfinite(outcome)
    none = {"pearson_ic": None, "pearson_ic_t": None, "winsor": None}
    if ok.sum() < MIN_IC_SYMBOLS:
        return none
    s, o, t = np.asarray(score, float)[ok], np.asarray(outcome, float)[ok], times[ok]
    lo, hi = np.quantile(o, WINSOR)
    o = np.clip(o, lo, hi)
    _, group, counts = np.unique(t, return_inverse=True, return_counts=True)
    keep = counts[group] >= MIN_IC_SYMBOLS
    s, o, group = s[keep], o[keep], group[keep]
    if len(s) == 0:
        return none
    _, group = np.unique(group, return_inverse=True)
    bars = int(group.max()) + 1
    n = np.bincount(group, minlength=bars).astype(float)
    varies = [(g.max() > g.min()).to_numpy() for g in (pd.Series(v).groupby(group) for v in (s, o))]
    s = s - (np.bincount(group, s, bars) / n)[group]
    o = o - (np.bincount(group, o, bars) / n)[group]
    ss, oo, so = (np.bincount(group, a * b, bars) for a, b in ((s, s), (o, o), (s, o)))
    s_varies, o_varies = varies
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(s_varies & o_varies, so / np.sqrt(ss * oo), 0.0)
    per_bar = corr[o_varies]
    if len(per_bar) == 0:
        return none
    return {
        "pearson_ic": float(per_bar.mean()),
        "pearson_ic_t": overlap_t(per_bar, lags),
        "winsor": [float(lo), float(hi)],
    }


def judge(p: np.ndarray, fwd: np.ndarray, times: np.ndarray, rule: TradeRule) -> dict[str, Any]:
    """Every money figure of (rows, 2) predictions ``p`` (long, short): per side its
    decile table, decile spread and Pearson IC; the traded rows; the verdict's flag."""
    fwd = np.asarray(fwd, dtype=float)
    net = net_returns(fwd, rule.cost)
    out: dict[str, Any] = {}
    for j, (name, sign) in enumerate((("long", 1.0), ("short", -1.0))):
        table = deciles(p[:, j], net[:, j])
        out[name] = {
            "deciles": table,
            "decile_spread": decile_spread(table),
            **pearson_ic(p[:, j], sign * fwd, times, rule.horizon),
        }
    out["traded"] = traded(p, fwd, times, rule)
    mean = out["traded"]["all"]["mean"]
    out["earns"] = mean is not None and mean > 0
    return out


def evaluate(
    p: np.ndarray, y: np.ndarray, fwd: np.ndarray, times: np.ndarray, rule: TradeRule
) -> dict[str, Any]:
    """The rank and classification figures (``metrics.evaluate``) and, beside them, what
    the trades are paid (``money.judge``): per direction its decile table and Pearson
    IC, then the traded rows and whether they earn."""
    out = metrics.evaluate(p, y, fwd, times, rule.threshold, rule.horizon)
    paid = judge(p, fwd, times, rule)
    for d in ("long", "short"):
        out[d].update(paid[d])
    out["traded"], out["earns"] = paid["traded"], paid["earns"]
    return out
