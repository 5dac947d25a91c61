"""How much of a search's best result is luck: the deflated Sharpe ratio and the
probability of backtest overfitting.

Both are Bailey and López de Prado's:

* **Deflated Sharpe ratio** ("The Deflated Sharpe Ratio: Correcting for Selection Bias,
  Backtest Overfitting and Non-Normality", 2014). After N trials, the best Sharpe is
  expected to be high even if every trial's true Sharpe is zero: under that null its
  expected maximum is ``SR0 = sqrt(V) * ((1 - g) * Z(1 - 1/N) + g * Z(1 - 1/(N e)))``,
  ``V`` the variance of the trials' Sharpes, ``g`` the Euler-Mascheroni constant and
  ``Z`` the standard normal quantile. The DSR is the probabilistic Sharpe ratio of the
  best trial's returns against ``SR0`` (skew and kurtosis of those returns included):
  ``Phi((SR - SR0) sqrt(T - 1) / sqrt(1 - skew SR + (kurt - 1) / 4 SR^2))``. Every
  Sharpe here is per period (not annualised), at one sampling (daily by default), the
  same as the backtest's PSR (``backtest.metrics.probabilistic_sharpe``).
* **Probability of backtest overfitting** by combinatorially symmetric cross-validation
  ("The Probability of Backtest Overfitting", 2015). The trials' returns (one column per
  trial, on the same periods) are cut into S blocks in time; for every way of choosing
  S/2 blocks as "in sample", the trial that is best there is ranked among all trials on
  the other S/2 blocks. PBO is the share of choices where that trial falls at or below
  the median out of sample (its relative rank's logit is not positive).

Written here rather than taken from a library: neither is in empyrical, quantstats or
Optuna, and both are a few lines of numpy over the formulas above (tests check them
against hand computations).
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

import numpy as np
from scipy.stats import norm

from asterai.backtest.metrics import probabilistic_sharpe

EULER_GAMMA = 0.5772156649015329
#: CSCV's default number of blocks (even; C(8, 4) = 70 splits).
PBO_BLOCKS = 8


def per_period_sharpe(r: np.ndarray) -> float | None:
    """Mean over sample standard deviation of one trial's returns (not annualised)."""
    r = np.asarray(r, dtype=float)
    if len(r) < 2:
        return None
    sd = r.std(ddof=1)
    return float(r.mean() / sd) if sd > 0 else None


def expected_max_sharpe(variance: float, trials: int) -> float:
    """The Sharpe the best of ``trials`` independent zero-skill trials is expected to
    reach, their Sharpes having this ``variance`` (Bailey & López de Prado 2014, eq. 2)."""
    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    if trials == 1 or variance <= 0:
        return 0.0
    z1 = norm.ppf(1.0 - 1.0 / trials)
    z2 = norm.ppf(1.0 - 1.0 / (trials * math.e))
    return float(math.sqrt(variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


def deflated_sharpe(
    best_returns: np.ndarray, trial_sharpes: list[float | None], trials: int | None = None
) -> dict[str, Any]:
    """The DSR of the best trial (its per-period ``best_returns``), deflated by the
    number of trials (``trials``: every trial tried; default, those with a Sharpe) and
    the variance of their per-period Sharpes ``trial_sharpes`` (the best included; a
    trial whose Sharpe is undefined, with no trade, adds to the count only)."""
    sharpes = np.asarray([s for s in trial_sharpes if s is not None and np.isfinite(s)])
    n = max(len(sharpes), trials or 0)
    variance = float(sharpes.var(ddof=1)) if len(sharpes) > 1 else 0.0
    sr0 = expected_max_sharpe(variance, max(n, 1))
    best = per_period_sharpe(best_returns)
    dsr = probabilistic_sharpe(np.asarray(best_returns, dtype=float), sr0) if n else None
    return {
        "trials": n,
        "sharpe_variance": variance,
        "expected_max_sharpe": sr0,
        "best_sharpe": best,
        "observations": int(len(best_returns)),
        "deflated_sharpe_ratio": dsr,
    }


def probability_of_overfitting(
    returns: np.ndarray, blocks: int = PBO_BLOCKS, score=per_period_sharpe
) -> dict[str, Any]:
    """PBO by CSCV over ``returns`` (periods x trials, the same periods for every
    trial); ``score`` turns one block set's returns of one trial into a number (the
    per-period Sharpe by default; None counts as the worst)."""
    m = np.asarray(returns, dtype=float)
    if m.ndim != 2:
        raise ValueError("returns must be a (periods, trials) matrix")
    periods, trials = m.shape
    if blocks < 2 or blocks % 2:
        raise ValueError(f"blocks must be an even number of at least 2, got {blocks}")
    if trials < 2 or periods < blocks:
        return {
            "pbo": None,
            "splits": 0,
            "blocks": blocks,
            "trials": trials,
            "periods": periods,
            "reason": f"needs at least 2 trials and {blocks} periods "
            f"(has {trials} trials, {periods} periods)",
        }
    parts = np.array_split(np.arange(periods), blocks)

    def scores(rows: np.ndarray) -> np.ndarray:
        out = np.array([score(m[rows, j]) for j in range(trials)], dtype=object)
        return np.array([-np.inf if v is None else float(v) for v in out])

    logits = []
    for chosen in combinations(range(blocks), blocks // 2):
        rest = [b for b in range(blocks) if b not in chosen]
        is_rows = np.concatenate([parts[b] for b in chosen])
        oos_rows = np.concatenate([parts[b] for b in rest])
        best = int(np.argmax(scores(is_rows)))
        oos = scores(oos_rows)
        # relative rank of the in-sample winner out of sample, in (0, 1): 1 = best
        rank = float((oos < oos[best]).sum() + 0.5 * ((oos == oos[best]).sum() - 1) + 1)
        omega = rank / (trials + 1)
        logits.append(math.log(omega / (1.0 - omega)))
    logits_a = np.asarray(logits)
    return {
        "pbo": float(np.mean(logits_a <= 0)),
        "splits": len(logits),
        "blocks": blocks,
        "trials": trials,
        "periods": periods,
        "median_logit": float(np.median(logits_a)),
    }


def luck_sentence(dsr: dict[str, Any], confidence: float = 0.95) -> str:
    """The report's plain sentence."""
    n, p = dsr["trials"], dsr["deflated_sharpe_ratio"]
    if p is None:
        return (
            f"after {n} trials, the best result is not distinguishable from luck (its "
            "deflated Sharpe ratio cannot be computed: fewer than 3 returns, no variation, "
            "or a skew and kurtosis that leave the Sharpe's variance undefined)"
        )
    verdict = "is" if p >= confidence else "is not"
    return (
        f"after {n} trials, the best result {verdict} distinguishable from luck "
        f"(deflated Sharpe ratio {p:.3f}; {confidence:.0%} needed)"
    )
