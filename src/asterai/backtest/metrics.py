"""Performance metrics of an equity curve and its trades, each with its sample.

Crypto trades around the clock, so returns are annualised with 24 x 365 hourly bars.
Hand-written because each is a line of numpy and the report must state exactly what it
computed; ``tests/test_backtest_metrics.py`` checks them against quantstats /
empyrical-style reference formulas on the same curve.

- Sharpe and Sortino: mean over standard deviation (downside deviation) of the per-bar
  returns, times sqrt(bars per year); no risk-free rate (a perp's cash earns none).
- Probabilistic Sharpe ratio (Bailey and Lopez de Prado, 2012): the probability that
  the true Sharpe ratio exceeds 0, given the sample's length, skew and kurtosis.
- A 95% interval for the Sharpe ratio and the maximum drawdown from a moving-block
  bootstrap of the per-bar returns (blocks of a day, seeded), and a Wilson interval for
  the win rate.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

BARS_PER_YEAR = 24 * 365
BOOTSTRAP_SAMPLES = 1000
BLOCK_BARS = 24
CRITERIA = {"sharpe_ratio": 1.5, "win_rate": 0.55, "max_drawdown": 0.30}


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
    denom = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    if denom <= 0:
        return None
    return _norm_cdf((sr - benchmark) * math.sqrt(n - 1) / math.sqrt(denom))


def block_bootstrap(
    r: np.ndarray,
    seed: int = 0,
    bars_per_year: int = BARS_PER_YEAR,
    block_bars: int = BLOCK_BARS,
) -> dict[str, list[float] | None]:
    """95% intervals of the annualised Sharpe and of the maximum drawdown."""
    n = len(r)
    if n < 2 * block_bars:
        return {"sharpe_ratio": None, "max_drawdown": None}
    rng = np.random.default_rng(seed)
    blocks = -(-n // block_bars)
    sharpes, dds = [], []
    for _ in range(BOOTSTRAP_SAMPLES):
        starts = rng.integers(0, n - block_bars + 1, blocks)
        sample = np.concatenate([r[s : s + block_bars] for s in starts])[:n]
        value = sharpe(sample, bars_per_year)
        if value is not None:
            sharpes.append(value)
        dds.append(drawdown(np.concatenate([[1.0], np.cumprod(1.0 + sample)]))[0])
    return {
        "sharpe_ratio": [float(np.percentile(sharpes, 2.5)), float(np.percentile(sharpes, 97.5))]
        if sharpes
        else None,
        "max_drawdown": [float(np.percentile(dds, 2.5)), float(np.percentile(dds, 97.5))],
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
) -> dict[str, Any]:
    """Every figure of ``metrics.json`` (criteria graded separately in ``grade``).

    ``bars_per_year`` and ``block_bars`` (a day) follow the base interval.
    """
    curve = equity["equity"].to_numpy(dtype=float)
    r = returns_of(np.concatenate([[capital], curve]))
    years = len(r) / bars_per_year
    final = float(curve[-1]) if len(curve) else capital
    total = final / capital - 1.0
    max_dd, dd_bars = drawdown(np.concatenate([[capital], curve]))
    wins = trades[trades["pnl"] > 0]
    losses = trades[trades["pnl"] <= 0]
    gross_win, gross_loss = float(wins["pnl"].sum()), float(-losses["pnl"].sum())
    cagr = (final / capital) ** (1 / years) - 1.0 if years > 0 and final > 0 else None
    out = {
        "window": {
            "first_bar": equity["time"].iloc[0].isoformat() if len(equity) else None,
            "last_bar": equity["time"].iloc[-1].isoformat() if len(equity) else None,
            "bars": int(len(equity)),
            "out_of_sample": True,
        },
        "initial_capital": capital,
        "final_equity": final,
        "total_return": total,
        "cagr": cagr,
        "sharpe_ratio": sharpe(r, bars_per_year),
        "sortino_ratio": sortino(r, bars_per_year),
        "max_drawdown": max_dd,
        "max_drawdown_bars": dd_bars,
        "calmar_ratio": cagr / max_dd if cagr is not None and max_dd > 0 else None,
        "trades": int(len(trades)),
        "win_rate": float(len(wins) / len(trades)) if len(trades) else None,
        "profit_factor": gross_win / gross_loss if gross_loss > 0 else None,
        "average_win": float(wins["pnl"].mean()) if len(wins) else None,
        "average_loss": float(losses["pnl"].mean()) if len(losses) else None,
        "exposure": float((equity["open_positions"] > 0).mean()) if len(equity) else 0.0,
        "turnover": float(
            (trades["quantity"] * (trades["entry_price"] + trades["exit_price"])).sum() / capital
        ),
        "fees_paid": float(trades["fees"].sum()),
        "funding_paid": float(trades["funding"].sum()),
        "exit_reasons": {str(k): int(v) for k, v in trades["exit_reason"].value_counts().items()},
        "rejected_orders": {str(k): int(v) for k, v in rejected["reason"].value_counts().items()},
        "probabilistic_sharpe_ratio": probabilistic_sharpe(r),
        "confidence_95": {
            **block_bootstrap(r, seed, bars_per_year, block_bars),
            "win_rate": wilson(len(wins), len(trades)),
        },
        "annualisation": f"{bars_per_year} bars a year (24/7 market)",
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
