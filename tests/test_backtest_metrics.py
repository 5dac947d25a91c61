"""Metrics against empyrical on the same real equity curve, plus golden edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from asterai.backtest import metrics

empyrical = pytest.importorskip(
    "empyrical", reason="pip install -e .[dev] brings empyrical-reloaded"
)


@pytest.fixture(scope="module")
def curve(real_data) -> np.ndarray:
    """A real equity curve: 50 USDT riding BTCUSDT's hourly closes for a month."""
    bars = pd.read_parquet(real_data / "klines" / "BTCUSDT_1h.parquet")
    return 50.0 * bars["close"].to_numpy() / bars["close"].iloc[0]


def test_sharpe_sortino_and_drawdown_match_empyrical(curve) -> None:
    r = metrics.returns_of(curve)
    series = pd.Series(r)
    assert metrics.sharpe(r) == pytest.approx(
        empyrical.sharpe_ratio(series, annualization=metrics.BARS_PER_YEAR), rel=1e-9
    )
    assert metrics.sortino(r) == pytest.approx(
        empyrical.sortino_ratio(series, annualization=metrics.BARS_PER_YEAR), rel=1e-9
    )
    assert metrics.drawdown(curve)[0] == pytest.approx(-empyrical.max_drawdown(series), rel=1e-9)


def test_the_probabilistic_sharpe_ratio_and_intervals_behave(curve) -> None:
    r = metrics.returns_of(curve)
    psr = metrics.probabilistic_sharpe(r)
    assert 0.0 < psr < 1.0
    # more of the same sample makes the verdict more certain, either way
    longer = metrics.probabilistic_sharpe(np.tile(r, 8))
    assert abs(longer - 0.5) > abs(psr - 0.5)
    ci = metrics.block_bootstrap(r, seed=1)
    low, high = ci["sharpe_ratio"]
    assert low < metrics.sharpe(r) < high
    assert metrics.block_bootstrap(r, seed=1) == ci  # seeded
    assert metrics.wilson(55, 100)[0] < 0.55 < metrics.wilson(55, 100)[1]


def test_edge_cases_no_trade_and_one_trade() -> None:
    times = pd.date_range("2025-10-01", periods=48, freq="h", tz="UTC")
    flat = pd.DataFrame({"time": times, "equity": 50.0, "open_positions": 0})
    empty = pd.DataFrame(
        columns=["pnl", "quantity", "entry_price", "exit_price", "fees", "funding", "exit_reason"]
    )
    rejected = pd.DataFrame({"reason": []})
    m = metrics.compute(flat, empty, rejected, 50.0)
    assert m["trades"] == 0 and m["total_return"] == 0.0 and m["sharpe_ratio"] is None
    assert m["criteria"]["sharpe_ratio"]["verdict"] == "FAIL"  # nothing measured, nothing passes
    one = pd.DataFrame(
        {"pnl": [1.0], "quantity": [1.0], "entry_price": [10.0], "exit_price": [11.0],
         "fees": [0.0], "funding": [0.0], "exit_reason": ["target"]}
    )  # fmt: skip
    rising = flat.assign(equity=np.r_[np.full(24, 50.0), np.full(24, 51.0)])
    m = metrics.compute(rising, one, rejected, 50.0)
    assert m["win_rate"] == 1.0 and m["final_equity"] == 51.0 and m["max_drawdown"] == 0.0
    assert m["criteria"]["max_drawdown"]["verdict"] == "PASS"
