"""Our accounting against vectorbt's on a configuration both express: one real asset,
a fixed size, the same fee, long only, entries and exits on signals, no stops, with and
without slippage (both charge it in full on every fill, never clipped to the bar)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from asterai.backtest import kernel

vbt = pytest.importorskip("vectorbt", reason="pip install -e .[dev] brings vectorbt")

FEE = 0.00075
SIZE = 0.0002  # BTC, about 23 USDT


@pytest.mark.parametrize("slippage", [0.0, 0.0005])
def test_same_trades_and_equity_as_vectorbt(real_data, slippage: float) -> None:
    bars = pd.read_parquet(real_data / "klines" / "BTCUSDT_1h.parquet").iloc[:-1]  # closed bars
    o, h, lo, c, v = (
        bars[k].to_numpy()[:, None] for k in ("open", "high", "low", "close", "volume")
    )
    T = len(bars)
    # signals from the real closes: long while above the 24-bar mean, out when below
    mean = pd.Series(c[:, 0]).rolling(24).mean().to_numpy()
    up = (c[:, 0] > mean).astype(float)
    p_long = np.where(np.isfinite(mean), up, np.nan)[:, None]
    p_short = np.where(np.isfinite(mean), 1.0 - up, np.nan)[:, None]
    params = kernel.Params(
        50.0, 0.01, 1, FEE, FEE, slippage, 0.5, 1e9, 1e9, 10**9, 1e9, 1.0,
        allow_short=False, fixed_quantity=SIZE,
    )  # fmt: skip
    trades, _, curve, cash = kernel.simulate_nb(
        o, h, lo, c, v, np.ones((T, 1), bool), p_long, p_short, np.ones((T, 1)),
        np.zeros((T, 1)), np.zeros(1), np.zeros(1), np.zeros(1), params,
    )  # fmt: skip

    # vectorbt: the signal at t's close acts at t+1's open
    entries = pd.Series(p_long[:, 0] >= 0.5).shift(1, fill_value=False)
    exits = pd.Series(p_short[:, 0] >= 0.5).shift(1, fill_value=False)
    pf = vbt.Portfolio.from_signals(
        close=pd.Series(c[:, 0]), entries=entries, exits=exits, price=pd.Series(o[:, 0]),
        size=SIZE, size_type="amount", fees=FEE, slippage=slippage, init_cash=50.0,
        direction="longonly",
        accumulate=False,
    )  # fmt: skip
    ours = pd.DataFrame(trades, columns=kernel.TRADE_FIELDS)
    theirs = pf.trades.records_readable
    closed = ours[ours["exit_reason"] != 7]  # vectorbt leaves the last one open
    assert len(ours) > 10
    assert len(theirs) == len(ours)
    np.testing.assert_array_equal(ours["entry_t"], theirs["Entry Timestamp"].to_numpy())
    np.testing.assert_allclose(ours["entry_price"], theirs["Avg Entry Price"], rtol=0, atol=1e-9)
    n = len(closed)
    np.testing.assert_array_equal(closed["exit_t"], theirs["Exit Timestamp"].to_numpy()[:n])
    np.testing.assert_allclose(
        closed["exit_price"], theirs["Avg Exit Price"][:n], rtol=0, atol=1e-9
    )
    np.testing.assert_allclose(closed["pnl"], theirs["PnL"][:n], rtol=0, atol=1e-9)
    # the equity at every close, to 1e-9 (the last bar: our end-of-data close pays a fee)
    np.testing.assert_allclose(curve[:-1, 0], pf.value().to_numpy()[:-1], rtol=0, atol=1e-9)
