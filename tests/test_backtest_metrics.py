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


def hourly_frame(real_data, symbol: str = "BTCUSDT") -> pd.DataFrame:
    bars = pd.read_parquet(real_data / "klines" / f"{symbol}_1h.parquet").iloc[:-1]
    return pd.DataFrame({"time": bars.index.tz_localize("UTC"), "close": bars["close"].to_numpy()})


def test_significance_from_daily_returns_is_lower_on_an_autocorrelated_curve(real_data) -> None:
    frame = hourly_frame(real_data)
    # a real curve with strongly autocorrelated hourly returns: 50 USDT following the
    # 24-hour moving average of BTCUSDT's closes (what a book of day-long positions,
    # entered one an hour, marks), from the recording's rising half
    smooth = frame["close"].rolling(24).mean()
    rising = frame.assign(equity=50.0 * smooth / smooth.iloc[23]).iloc[23:]
    rising = rising[rising["time"] <= frame.loc[frame["close"].idxmax(), "time"]]
    r = metrics.returns_of(np.concatenate([[50.0], rising["equity"].to_numpy()]))
    assert pd.Series(r).autocorr(1) > 0.9
    daily = metrics.daily_returns(rising, 50.0)
    naive, adjusted = metrics.probabilistic_sharpe(r), metrics.probabilistic_sharpe(daily)
    assert metrics.sharpe(r) > 0
    assert adjusted < naive  # the naive sampling overstates the confidence
    assert naive > 0.95  # naively "significant" ...
    assert adjusted < naive - 0.05  # ... and much less sure from the days it really holds
    # metrics.json carries both, named for what they are
    flat = rising.assign(open_positions=1)
    empty = pd.DataFrame(columns=["pnl", "quantity", "entry_price", "exit_price", "fees",
                                  "funding", "exit_reason"])  # fmt: skip
    m = metrics.compute(flat, empty, pd.DataFrame({"reason": []}), 50.0)
    assert m["probabilistic_sharpe_ratio"] == pytest.approx(adjusted)
    assert m["probabilistic_sharpe_ratio_per_bar"] == pytest.approx(naive)
    assert m["sharpe_ratio"] == pytest.approx(metrics.sharpe(daily, 365))
    assert "daily returns" in m["sampling"]


def test_daily_returns_are_the_equity_at_each_days_last_bar(real_data) -> None:
    frame = hourly_frame(real_data).assign(equity=lambda f: 50.0 * f["close"] / f["close"].iloc[0])
    daily = metrics.daily_returns(frame, 50.0)
    ends = frame.set_index("time")["equity"].resample("D").last().dropna()
    assert daily == pytest.approx(ends.pct_change().fillna(ends.iloc[0] / 50.0 - 1).to_numpy())


def test_the_minimum_track_record_is_where_the_psr_reaches_95_percent(real_data) -> None:
    frame = hourly_frame(real_data, "SOLUSDT")
    closes = frame.set_index("time")["close"].resample("D").last().dropna().to_numpy()
    r = metrics.returns_of(closes)
    r = r if r.mean() > 0 else -r  # a positive Sharpe (the mirror image of a real falling one)
    trl = metrics.min_track_record(r)
    needed = trl["days_needed"]
    assert trl["days_observed"] == len(r) and trl["more_days"] == pytest.approx(
        max(0.0, needed - len(r))
    )
    # tiling keeps the Sharpe, skew and kurtosis (up to the sample deviation's n - 1): a
    # tenth past the needed length the PSR passes 95%, a tenth short of it, it does not
    longer, shorter = int(np.ceil(1.1 * needed / len(r))), int(np.floor(0.9 * needed / len(r)))
    assert shorter >= 1
    assert metrics.probabilistic_sharpe(np.tile(r, longer)) >= 0.95
    assert metrics.probabilistic_sharpe(np.tile(r, shorter)) < 0.95
    assert metrics.min_track_record(-r)["days_needed"] is None  # never, at a negative Sharpe


def test_the_paired_difference_resamples_the_same_days_for_both(real_data) -> None:
    frame = hourly_frame(real_data)
    closes = frame.set_index("time")["close"].resample("D").last().dropna().to_numpy()
    btc = metrics.returns_of(closes)
    same = metrics.paired_sharpe_difference(btc, btc, seed=3)
    assert same["sharpe_difference"] == 0.0 and same["interval_95"] == [0.0, 0.0]
    # the same days less a fee every day: worse on every resample, so P(better) is 0
    worse = metrics.paired_sharpe_difference(btc - 0.002, btc, seed=3)
    assert worse["probability_model_better"] == 0.0 and worse["interval_95"][1] < 0
    # against an unrelated curve the interval is wide and straddles the observed value
    eth = metrics.returns_of(
        hourly_frame(real_data, "ETHUSDT")
        .set_index("time")["close"]
        .resample("D")
        .last()
        .dropna()
        .to_numpy()
    )
    d = metrics.paired_sharpe_difference(eth, btc, seed=3)
    assert d["interval_95"][0] < d["sharpe_difference"] < d["interval_95"][1]


def test_the_drawdown_interval_applies_the_circuit_breaker(real_data) -> None:
    frame = hourly_frame(real_data)
    r = 5.0 * metrics.returns_of(frame["close"].to_numpy())  # BTC at 5x
    free = metrics.block_bootstrap(r, seed=2)["max_drawdown"]
    braked = metrics.block_bootstrap(r, seed=2, max_drawdown=0.10)["max_drawdown"]
    assert braked[1] < free[1]
    # a sample stops a bar after the breach: its drawdown is the breach plus one bar's move
    assert braked[1] <= 0.10 + 2 * np.abs(r).max()
    flat = metrics.with_breaker(r, 0.10)
    breach = np.flatnonzero(
        np.cumprod(1 + r) < np.maximum.accumulate(np.maximum(np.cumprod(1 + r), 1)) * 0.9
    )[0]
    assert (flat[breach + 2 :] == 0).all() and (flat[: breach + 2] == r[: breach + 2]).all()


def test_growth_is_annualised_only_over_90_days_or_more(real_data) -> None:
    frame = hourly_frame(real_data).assign(equity=lambda f: 50.0 * f["close"] / f["close"].iloc[0])
    frame["open_positions"] = 1
    empty = pd.DataFrame(columns=["pnl", "quantity", "entry_price", "exit_price", "fees",
                                  "funding", "exit_reason"])  # fmt: skip
    m = metrics.compute(frame, empty, pd.DataFrame({"reason": []}), 50.0)
    assert m["cagr"] is None and m["calmar_ratio"] is None
    assert m["annualised_growth"].startswith("n/a (window too short")
    # four months of the same real bars end to end: long enough to annualise
    long = pd.concat([frame] * 4, ignore_index=True)
    long["time"] = pd.date_range(frame["time"].iloc[0], periods=len(long), freq="h")
    e = frame["equity"].to_numpy()
    long["equity"] = 50.0 * np.cumprod(np.tile(np.r_[1.0, e[1:] / e[:-1]], 4))
    m = metrics.compute(long, empty, pd.DataFrame({"reason": []}), 50.0)
    days = len(long) / 24
    assert days >= 90 and m["cagr"] == pytest.approx((m["final_equity"] / 50.0) ** (365 / days) - 1)
