"""The validation score that stops training early and chooses the ensemble's members.

One score, higher is better, for every member: XGBoost's rounds (a custom metric), the
LSTM's epoch and the LSTM gate (does the LSTM beat XGBoost on the calibration rows?).

- ``auc``: the mean over both directions of the ROC AUC. A rank statistic: it does not
  move when the validation window's base rate differs from the fitting rows' (a
  market-wide move shifts the share of long targets for every symbol at once), which
  is what log loss stops on: the first trees fit the fitting rows' base rate, the
  validation loss rises, and training stops after a tree or two.
- ``ic``: the mean over both directions of the per-bar information coefficient (the
  Spearman correlation across symbols at a bar between the score and the forward
  return, +fwd for longs, -fwd for shorts), averaged over the bars with at least
  ``MIN_IC_SYMBOLS`` symbols (``PerBarIC``, the same figure the report shows); a bar
  where the score does not vary counts as 0 (a constant has no ranking). It reads only
  each bar's own cross-section.
- ``logloss``: minus the mean log loss (kept for comparison; it needs probabilities).
- ``mean_net``: what the trades are paid (``money``): for each side the strategy may
  trade, the mean forward return after the round-trip cost of the rows in that side's
  top score decile (the decile table's top row, ``money.top_decile_mean``: the rows the
  strategy trades first), averaged over the sides. A mean, so one pump moves it: it is what an account is paid, and it
  is threshold-free, so it scores a member's raw output before any calibration.

Hand-written (the AUC as a rank statistic on SciPy's ``rankdata``, the log loss
scikit-learn's) because XGBoost's built-in AUC does not take its multi-output boosters
and the per-bar IC is ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import log_loss

METRICS = ("auc", "ic", "logloss", "mean_net")
#: Bars with fewer symbols than this give no per-bar correlation.
MIN_IC_SYMBOLS = 3
_VARIED = 1e-9  # sum of squared rank deviations at a bar below this: no variation


class PerBarIC:
    """The per-bar Spearman correlation between scores and one fixed outcome.

    Built once per set of rows (the outcome's ranks, the bars); ``per_bar(score)`` then
    costs one grouped rank of the score. Rows with a non-finite outcome, and bars with
    fewer than ``MIN_IC_SYMBOLS`` of them, are left out.
    """

    def __init__(self, outcome: np.ndarray, times: np.ndarray) -> None:
        ok = np.isfinite(outcome)
        _, group, counts = np.unique(times[ok], return_inverse=True, return_counts=True)
        enough = counts[group] >= MIN_IC_SYMBOLS
        self.keep = np.flatnonzero(ok)[enough]
        _, self.group = np.unique(group[enough], return_inverse=True)
        self.bars = int(self.group.max()) + 1 if len(self.group) else 0
        self.n = np.bincount(self.group, minlength=self.bars).astype(float)
        o = pd.Series(outcome[self.keep]).groupby(self.group).rank().to_numpy()
        self._o = o
        self._so = np.bincount(self.group, o, self.bars)
        self._var_o = np.bincount(self.group, o * o, self.bars) - self._so**2 / np.maximum(
            self.n, 1
        )

    def per_bar(self, score: np.ndarray) -> np.ndarray:
        """One correlation per bar: 0 where the score does not vary across the bar's
        symbols (a constant ranks nothing), NaN where the outcome does not."""
        if self.bars == 0:
            return np.empty(0)
        s = pd.Series(np.asarray(score, dtype=float)[self.keep]).groupby(self.group).rank()
        r = s.to_numpy()
        sp = np.bincount(self.group, r, self.bars)
        var_p = np.bincount(self.group, r * r, self.bars) - sp**2 / self.n
        cov = np.bincount(self.group, r * self._o, self.bars) - sp * self._so / self.n
        varied = (var_p > _VARIED) & (self._var_o > _VARIED)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.where(varied, cov / np.sqrt(var_p * self._var_o), 0.0)
        return np.where(self._var_o > _VARIED, corr, np.nan)


@dataclass(slots=True)
class Scorer:
    """Scores (rows, 2) predictions (long, short) of fixed validation rows; higher is better."""

    metric: str
    y: np.ndarray  # (rows, k) 0/1: long, short (k = 2), or long alone
    fwd: np.ndarray  # (rows,) forward log return
    times: np.ndarray  # (rows,) bar open time
    cost: float = 0.0  # mean_net: the round trip's cost, share of notional
    sides: tuple[bool, bool] = (True, True)  # mean_net: (long, short) allowed
    _ic: tuple[PerBarIC, PerBarIC] | None = None
    _net: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown stopping metric {self.metric!r}; one of {METRICS}")
        if self.metric == "ic":
            self._ic = (PerBarIC(self.fwd, self.times), PerBarIC(-self.fwd, self.times))
        if self.metric == "mean_net":
            from asterai.models.money import net_returns  # money imports this module

            self._net = net_returns(self.fwd, self.cost)

    @property
    def rows(self) -> int:
        return len(self.y)

    def __call__(self, p: np.ndarray) -> float:
        """The score of ``p`` (rows, k): the mean over its k columns (long, then short;
        a single column is the long direction)."""
        p = np.asarray(p, dtype=float).reshape(len(self.y), -1)
        k = p.shape[1]
        if self.metric == "auc":
            return float(np.mean([_auc(self.y[:, j], p[:, j]) for j in range(k)]))
        if self.metric == "mean_net":
            from asterai.models.money import top_decile_mean

            return float(np.mean([top_decile_mean(p[:, j], self._net[:, j])
                                  for j in range(k) if self.sides[j]]))  # fmt: skip
        if self.metric == "ic":
            parts = [self._ic[j].per_bar(p[:, j]) for j in range(k)]
            parts = [x[np.isfinite(x)] for x in parts]
            return float(np.mean([x.mean() if len(x) else 0.0 for x in parts]))
        return -float(
            np.mean(
                [
                    log_loss(self.y[:, j], np.clip(p[:, j], 1e-7, 1 - 1e-7), labels=[0, 1])
                    for j in range(k)
                ]
            )
        )

    @property
    def name(self) -> str:
        return "neg_logloss" if self.metric == "logloss" else self.metric


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic on average ranks (ties count a half): the
    value scikit-learn's ``roc_auc_score`` gives (a test holds them equal), without its
    input checks, which cost more than the sort on every boosting round. 0.5 when ``y``
    holds one class."""
    positive = y == 1
    n1 = int(positive.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return 0.5
    ranks = rankdata(p)
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def for_rows(
    metric: str,
    y: np.ndarray,
    fwd: np.ndarray,
    times: np.ndarray,
    rows,
    cost: float = 0.0,
    sides: tuple[bool, bool] = (True, True),
) -> Scorer:
    """The scorer of ``rows`` of a panel's arrays (``cost``, ``sides``: ``mean_net``'s)."""
    return Scorer(metric, y[rows], fwd[rows], times[rows], cost, sides)
