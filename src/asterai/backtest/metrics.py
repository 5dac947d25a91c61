"""Performance metrics of an equity curve and its trades, each with its sample.

Hand-written because each is a line of numpy and the report must state exactly what it
computed; ``tests/test_backtest_metrics.py`` checks them against empyrical on the same
curve.

**Sampling.** A strategy that holds positions up to a day marks them every hour, so its
hourly returns are autocorrelated: a Sharpe ratio or a probabilistic Sharpe ratio over
~8,760 hourly returns a year counts each day's news many times and overstates
confidence. Every figure of risk-adjusted return and of significance is therefore
computed from **daily returns** (the equity at each UTC day's last bar; 365 a year,
crypto trades every day): the Sharpe and Sortino ratios, the Sharpe interval, the
probabilistic Sharpe ratio, the minimum track record length and the paired comparison
with the baselines. The per-bar figures are kept beside them, named ``*_per_bar``, to
show how much the naive sampling would overstate. Drawdowns use every bar (a drawdown
is a path).

- Sharpe and Sortino: mean over standard deviation (downside deviation) of the daily
  returns, times sqrt(365); no risk-free rate (a perp's cash earns none).
- Probabilistic Sharpe ratio (Bailey and Lopez de Prado, 2012): the probability that
  the true Sharpe ratio exceeds 0, given the sample's length, skew and kurtosis.
- Minimum track record length (Bailey and Lopez de Prado, 2012): the days of returns at
  the measured Sharpe, skew and kurtosis that would make the PSR reach 95%.
- 95% intervals from a moving-block bootstrap (seeded): the Sharpe ratio over blocks of
  daily returns (about the cube root of the sample's days), the maximum drawdown over
  blocks of a day of per-bar returns with the circuit breaker applied as in the run; a
  Wilson interval for the win rate.
- The paired comparison with a baseline: the same resampled blocks of days for the model
  and the baseline, the interval of the Sharpe difference and the share of samples in
  which the model's Sharpe is the higher.
- CAGR and the Calmar ratio only over a window of at least ``MIN_ANNUALISED_DAYS`` days:
  a few weeks compounded to a year is noise, not a rate.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

BARS_PER_YEAR = 24 * 365
DAYS_PER_YEAR = 365
BOOTSTRAP_SAMPLES = 1000
BLOCK_BARS = 24
CRITERIA = {"sharpe_ratio": 1.5, "win_rate": 0.55, "max_drawdown": 0.30}
#: the shortest window whose growth is annualised (CAGR, Calmar)
MIN_ANNUALISED_DAYS = 90
#: the confidence the probabilistic Sharpe ratio and the track record length ask for
CONFIDENCE = 0.95
SAMPLING = (
    "daily returns (the equity at each UTC day's last bar, 365 a year): hourly returns "
    "of positions held up to a day are autocorrelated and would overstate confidence; "
    "the *_per_bar figures show the naive sampling"
)


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def returns_of(equity: np.ndarray) -> np.ndarray:
    equity = np.asarray(equity, dtype=float)
    return equity[1:] / equity[:-1] - 1.0 if len(equity) > 1 else np.empty(0)


def sharpe(r: np.ndarray, bars_per_year: int = BARS_PER_YEAR) -> float | None:
    sd = r.std(ddof=1) if len(r) > 1 else 0.0
    return float(r.mean() / sd * math.sqrt(bars_per_year)) if sd > 0 else None


def sortino(r: np.ndarray, bars_per_year: int = BARS_PER_YEAR) -> float | None:
    downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)) if len(r) else 0.0
    return float(r.mean() / downside * math.sqrt(bars_per_year)) if downside > 0 else None


def drawdown(equity: np.ndarray) -> tuple[float, int]:
    """The deepest fall from a peak (a share) and the longest time under water, in bars."""
    equity = np.asarray(equity, dtype=float)
    peak = np.maximum.accumulate(equity)
    dd = 1.0 - equity / peak
    under = dd > 0
    longest = run = 0
    for u in under:
        run = run + 1 if u else 0
        longest = max(longest, run)
    return float(dd.max()) if len(dd) else 0.0, int(longest)


def probabilistic_sharpe(r: np.ndarray, benchmark: float = 0.0) -> float | None:
    """P(true per-bar Sharpe > benchmark), with the sample's skew and kurtosis."""
    n = len(r)
    sd = r.std(ddof=1) if n > 1 else 0.0
    if n < 3 or sd == 0:
        return None
    sr = r.mean() / sd
    z = (r - r.mean()) / r.std(ddof=0)
    skew = float(np.mean(z**3))
    kurt = float(np.mean(z**4))
    return psr_from_moments(sr, benchmark, n, skew, kurt)


def psr_from_moments(sr: float, benchmark: float, n: int, skew: float, kurt: float) -> float | None:
    """P(true Sharpe > benchmark) from a per-period Sharpe ``sr`` over ``n`` returns with
    this skew and (raw, normal = 3) kurtosis (Bailey and López de Prado)."""
    denom = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    if denom <= 0:
        return None
    return _norm_cdf((sr - benchmark) * math.sqrt(n - 1) / math.sqrt(denom))


def daily_returns(equity: pd.DataFrame, capital: float) -> np.ndarray:
    """Returns of the equity at each UTC day's last bar, from ``capital`` before the first."""
    if equity.empty:
        return np.empty(0)
    day = equity["time"].dt.floor("D")
    last = equity["equity"].groupby(day.to_numpy()).last().to_numpy(dtype=float)
    return returns_of(np.concatenate([[capital], last]))


def _block(n: int) -> int:
    """Block length of a bootstrap over ``n`` daily returns: about n^(1/3), at least 1."""
    return max(1, round(n ** (1 / 3)))


def _starts(rng: np.random.Generator, n: int, block: int) -> np.ndarray:
    return rng.integers(0, n - block + 1, -(-n // block))


def _resample(r: np.ndarray, starts: np.ndarray, block: int) -> np.ndarray:
    return np.concatenate([r[s : s + block] for s in starts])[: len(r)]


def with_breaker(r: np.ndarray, max_drawdown: float | None) -> np.ndarray:
    """Per-bar returns as the run would have had them under the circuit breaker: flat
    from the bar after the first close ``max_drawdown`` below the peak (decided at that
    close, filled at the next open, flat after)."""
    if max_drawdown is None or len(r) == 0:
        return r
    equity = np.cumprod(1.0 + r)
    peak = np.maximum.accumulate(np.maximum(equity, 1.0))
    breach = np.flatnonzero(equity < peak * (1.0 - max_drawdown))
    if len(breach) == 0:
        return r
    out = r.copy()
    out[breach[0] + 2 :] = 0.0
    return out


def block_bootstrap(
    r: np.ndarray,
    seed: int = 0,
    bars_per_year: int = BARS_PER_YEAR,
    block_bars: int = BLOCK_BARS,
    daily: np.ndarray | None = None,
    max_drawdown: float | None = None,
) -> dict[str, list[float] | None]:
    """95% intervals of the annualised Sharpe (over ``daily`` returns when given, else
    over ``r``) and of the maximum drawdown (over per-bar ``r`` in blocks of a day, the
    circuit breaker at ``max_drawdown`` applied to each sample as in the run)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[float] | None] = {"sharpe_ratio": None, "max_drawdown": None}
    sr_r, sr_year, sr_block = (
        (daily, DAYS_PER_YEAR, _block(len(daily)))
        if daily is not None
        else (r, bars_per_year, block_bars)
    )
    if len(sr_r) >= max(3, 2 * sr_block):
        sharpes = [
            v
            for _ in range(BOOTSTRAP_SAMPLES)
            if (v := sharpe(_resample(sr_r, _starts(rng, len(sr_r), sr_block), sr_block), sr_year))
            is not None
        ]
        if sharpes:
            out["sharpe_ratio"] = [
                float(np.percentile(sharpes, 2.5)),
                float(np.percentile(sharpes, 97.5)),
            ]
    if len(r) >= 2 * block_bars:
        dds = []
        for _ in range(BOOTSTRAP_SAMPLES):
            sample = with_breaker(
                _resample(r, _starts(rng, len(r), block_bars), block_bars), max_drawdown
            )
            dds.append(drawdown(np.concatenate([[1.0], np.cumprod(1.0 + sample)]))[0])
        out["max_drawdown"] = [float(np.percentile(dds, 2.5)), float(np.percentile(dds, 97.5))]
    return out


def paired_sharpe_difference(
    model: np.ndarray, baseline: np.ndarray, seed: int = 0
) -> dict[str, Any] | None:
    """The model's Sharpe minus the baseline's over the same days, with a 95% interval and
    the probability that the model's is the higher, from a moving-block bootstrap that
    resamples the same blocks of days for both (their common swings cancel)."""
    n = min(len(model), len(baseline))
    block = _block(n)
    if n < max(3, 2 * block):
        return None
    a, b = model[-n:], baseline[-n:]
    observed_a, observed_b = sharpe(a, DAYS_PER_YEAR), sharpe(b, DAYS_PER_YEAR)
    if observed_a is None or observed_b is None:
        return None
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(BOOTSTRAP_SAMPLES):
        starts = _starts(rng, n, block)
        sa = sharpe(_resample(a, starts, block), DAYS_PER_YEAR)
        sb = sharpe(_resample(b, starts, block), DAYS_PER_YEAR)
        if sa is not None and sb is not None:
            diffs.append(sa - sb)
    if not diffs:
        return None
    d = np.asarray(diffs)
    return {
        "sharpe_difference": observed_a - observed_b,
        "interval_95": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))],
        "probability_model_better": float((d > 0).mean()),
        "days": int(n),
        "block_days": int(block),
    }


def min_track_record(r: np.ndarray, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Minimum track record length (Bailey and Lopez de Prado, 2012) of daily returns:
    the days at the measured Sharpe, skew and kurtosis after which the probabilistic
    Sharpe ratio against 0 reaches ``confidence``, and how many more that is."""
    n = len(r)
    sd = r.std(ddof=1) if n > 1 else 0.0
    out: dict[str, Any] = {"days_observed": int(n), "confidence": confidence}
    if n < 3 or sd == 0:
        return out | {"days_needed": None, "more_days": None, "note": "too few days"}
    sr = r.mean() / sd
    if sr <= 0:
        return out | {
            "days_needed": None,
            "more_days": None,
            "note": "never at this Sharpe: it is not positive, so no length of record at "
            "it would make it significant",
        }
    z = (r - r.mean()) / r.std(ddof=0)
    skew, kurt = float(np.mean(z**3)), float(np.mean(z**4))
    factor = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    zq = NormalDist().inv_cdf(confidence)  # one-sided
    needed = 1.0 + max(factor, 0.0) * (zq / sr) ** 2
    return out | {
        "days_needed": float(needed),
        "more_days": float(max(0.0, needed - n)),
        "note": "days of out-of-sample returns at the measured Sharpe for a 95% PSR",
    }


def wilson(wins: int, n: int, z: float = 1.96) -> list[float] | None:
    if n == 0:
        return None
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [centre - half, centre + half]


def compute(
    equity: pd.DataFrame,
    trades: pd.DataFrame,
    rejected: pd.DataFrame,
    capital: float,
    seed: int = 0,
    bars_per_year: int = BARS_PER_YEAR,
    block_bars: int = BLOCK_BARS,
    max_drawdown: float | None = None,
) -> dict[str, Any]:
    """Every figure of ``metrics.json`` (criteria graded separately in ``grade``).

    ``bars_per_year`` and ``block_bars`` (a day) follow the base interval;
    ``max_drawdown`` is the circuit breaker's level, applied in the drawdown's bootstrap.
    """
    curve = equity["equity"].to_numpy(dtype=float)
    r = returns_of(np.concatenate([[capital], curve]))
    daily = daily_returns(equity, capital)
    days = len(r) / (bars_per_year / DAYS_PER_YEAR)
    final = float(curve[-1]) if len(curve) else capital
    total = final / capital - 1.0
    max_dd, dd_bars = drawdown(np.concatenate([[capital], curve]))
    wins = trades[trades["pnl"] > 0]
    losses = trades[trades["pnl"] <= 0]
    gross_win, gross_loss = float(wins["pnl"].sum()), float(-losses["pnl"].sum())
    annualised = days >= MIN_ANNUALISED_DAYS
    cagr = (
        (final / capital) ** (DAYS_PER_YEAR / days) - 1.0
        if annualised and days > 0 and final > 0
        else None
    )
    out = {
        "window": {
            "first_bar": equity["time"].iloc[0].isoformat() if len(equity) else None,
            "last_bar": equity["time"].iloc[-1].isoformat() if len(equity) else None,
            "bars": int(len(equity)),
            "days": float(days),
            "out_of_sample": True,
        },
        "sampling": SAMPLING,
        "initial_capital": capital,
        "final_equity": final,
        "total_return": total,
        "cagr": cagr,
        "sharpe_ratio": sharpe(daily, DAYS_PER_YEAR),
        "sharpe_ratio_per_bar": sharpe(r, bars_per_year),
        "sortino_ratio": sortino(daily, DAYS_PER_YEAR),
        "max_drawdown": max_dd,
        "max_drawdown_bars": dd_bars,
        "calmar_ratio": cagr / max_dd if cagr is not None and max_dd > 0 else None,
        "annualised_growth": (
            f"over {days:.0f} days"
            if annualised
            else f"n/a (window too short: {days:.0f} days, CAGR and Calmar need "
            f"{MIN_ANNUALISED_DAYS})"
        ),
        "trades": int(len(trades)),
        "win_rate": float(len(wins) / len(trades)) if len(trades) else None,
        "profit_factor": gross_win / gross_loss if gross_loss > 0 else None,
        "average_win": float(wins["pnl"].mean()) if len(wins) else None,
        "average_loss": float(losses["pnl"].mean()) if len(losses) else None,
        "time_in_market": float((equity["open_positions"] > 0).mean()) if len(equity) else 0.0,
        "turnover": float(
            (trades["quantity"] * (trades["entry_price"] + trades["exit_price"])).sum() / capital
        ),
        "fees_paid": float(trades["fees"].sum()),
        "funding_paid": float(trades["funding"].sum()),
        "exit_reasons": {str(k): int(v) for k, v in trades["exit_reason"].value_counts().items()},
        "rejected_orders": {str(k): int(v) for k, v in rejected["reason"].value_counts().items()},
        "probabilistic_sharpe_ratio": probabilistic_sharpe(daily),
        "probabilistic_sharpe_ratio_per_bar": probabilistic_sharpe(r),
        "min_track_record": min_track_record(daily),
        "confidence_95": {
            **block_bootstrap(r, seed, bars_per_year, block_bars, daily, max_drawdown),
            "win_rate": wilson(len(wins), len(trades)),
        },
        "annualisation": f"{DAYS_PER_YEAR} days a year (24/7 market); per-bar figures "
        f"{bars_per_year} bars a year",
    }
    out["criteria"] = grade(out)
    return out


def grade(m: dict[str, Any]) -> dict[str, Any]:
    """The seed guide's success criteria, PASS or FAIL from the measured numbers."""
    ci = m["confidence_95"]
    out = {}
    for key, bound in CRITERIA.items():
        value = m.get(key)
        if value is None:
            verdict = "FAIL"
        elif key == "max_drawdown":
            verdict = "PASS" if value < bound else "FAIL"
        else:
            verdict = "PASS" if value > bound else "FAIL"
        out[key] = {
            "rule": f"{'<' if key == 'max_drawdown' else '>'} {bound:g}",
            "value": value,
            "interval_95": ci.get(key),
            "verdict": verdict,
        }
    psr = m.get("probabilistic_sharpe_ratio")
    out["significant"] = {
        "rule": "probabilistic Sharpe ratio against 0 at least 0.95",
        "value": psr,
        "verdict": "PASS" if psr is not None and psr >= 0.95 else "FAIL",
    }
    return out
